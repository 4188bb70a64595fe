"""Reading one dataset split of the unified layout for training and validation.

```
<root>/list.txt              image file names relative to image/, one per line
<root>/list_train.txt        read instead of list.txt for training (list_val.txt: for validation)
<root>/image/<name>          the images
<root>/image_resize/<name>   optional pre-resized copy, used instead of image/<name> when present
<root>/coco/<stem>.json      one COCO json per image
```

The dataset name prefixes the background prompt (`"<name> _background_"`, the last class name). It is
given explicitly or comes from `convert-dataset`'s `dataset.json` (else the reference's path rule), via
`docsam_cli.datasets.layout` — the same rules `evaluate` uses. Annotations are read with the reference's
own loader rules (`annotations.rectify`), not the converter's cleaning, so training sees what the
reference's training saw.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from docsam_cli.datasets import layout
from docsam_cli.datasets.classes import dropped_by_loader
from docsam_cli.errors import InputError
from docsam_cli.inputs.images import load_frame
from docsam_cli.training.annotations import (
    AnnotationError,
    PageAnnotations,
    category_count,
    rectify,
)

Stage = Literal["train", "test"]
_MISSING_SHOWN = 3  # missing files a DatasetError names


class DatasetError(ValueError):
    """A dataset folder or one of its files that cannot be used (the message names the path)."""


class LayoutDataset:
    """The images of one split, their rectified annotations and class names, loaded on demand."""

    def __init__(self, root: str | os.PathLike[str], name: str | None = None, stage: Stage = "train") -> None:
        """Raises DatasetError for a `root` that is no split `stage` can read (a usage error), InputError
        for a file of it that cannot be used (`dataset.json`, the list: a failed run, as for its images)."""
        self.root = Path(root)
        if not self.root.exists():
            raise DatasetError(f"{self.root}: no such dataset folder")
        if not layout.is_layout(self.root):
            splits = layout.split_folders(self.root)
            if splits:  # the dataset folder of `convert-dataset --split`, not one of its splits
                usual = "train" if stage == "train" else "val"
                example = usual if usual in splits else splits[0]
                raise DatasetError(
                    f"{self.root} holds split folders: give one of them, {', '.join(splits)} "
                    f"(such as {self.root / example})"
                )
            needs = " or ".join(layout.stage_lists(stage))
            raise DatasetError(f"{self.root}: not a dataset in the unified layout (needs coco/ and {needs})")
        self._categories: tuple[str, ...] | None = None
        try:
            self.list_path = layout.list_file(self.root, stage)
        except InputError as error:
            raise DatasetError(str(error)) from None
        self.name = name if name is not None else layout.dataset_name(self.root)
        self._stated_classes = layout.dataset_class_names(self.root)
        self.image_names = layout.list_names(self.root, stage)
        if not self.image_names:
            raise DatasetError(f"{self.list_path}: lists no images ({layout.EMPTY_SPLIT})")

    def __len__(self) -> int:
        return len(self.image_names)

    @property
    def background_prompt(self) -> str:
        return layout.background_prompt(self.name)

    def image_path(self, index: int) -> Path:
        return layout.image_path(self.root, self.image_names[index])

    def check_files(self) -> None:
        """Raise DatasetError naming the first listed images and jsons that are not there, and how many
        are not. Their existence only (no decoding: a 300k-page split takes a few seconds), so that a
        run does not stop at one hours in, when it first samples it."""
        missing = layout.missing_files(self.root, self.image_names)
        if missing:
            shown = ", ".join(missing[:_MISSING_SHOWN])
            more = f" and {len(missing) - _MISSING_SHOWN} more" if len(missing) > _MISSING_SHOWN else ""
            raise DatasetError(
                f"{self.list_path} names {len(missing)} files that are not there: {shown}{more}"
            )

    def json_path(self, index: int) -> Path:
        return layout.json_path(self.root, self.image_names[index])

    def read_json(self, index: int) -> Mapping[str, Any]:
        """The image's json; read as bytes, so that json finds its encoding (a byte order mark included, as
        Windows tools write one) as `evaluate` reads it."""
        path = self.json_path(index)
        try:
            return json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError) as error:  # RecursionError: nested too deeply
            raise DatasetError(f"{path}: cannot read the annotations ({error})") from None

    def category_count(self) -> int:
        """K_d of the sampling rule: the categories of the first image's json."""
        return category_count(self.read_json(0))

    def categories(self) -> tuple[str, ...]:
        """The sorted class names training prompts with (no background). A page is prompted with its own
        json's, so these are their union: as `dataset.json` lists them (convert-dataset lists every class
        of the dataset there and in each json), else read from every json (a dataset made by hand, whose
        jsons may list only their own page's classes). Read once. A stated list loses what the loader
        drops from a json listing it (`text word` beside `table`), as the pages do."""
        if self._categories is None:
            if self._stated_classes is not None:
                stated = set(self._stated_classes)
                self._categories = tuple(sorted(stated - dropped_by_loader(stated)))
            else:
                self._categories = tuple(
                    sorted({name for index in range(len(self)) for name in self._names(index)})
                )
        return self._categories

    def _names(self, index: int) -> tuple[str, ...]:
        try:
            return rectify(self.read_json(index)).class_names
        except AnnotationError as error:
            raise DatasetError(f"{self.json_path(index)}: {error}") from None

    def load(self, index: int) -> tuple[np.ndarray, PageAnnotations]:
        """The BGR uint8 image and its annotations in that image's pixel coordinates (area-sorted)."""
        image = load_frame(self.image_path(index))
        try:
            page = rectify(self.read_json(index))
        except AnnotationError as error:
            raise DatasetError(f"{self.json_path(index)}: {error}") from None
        return image, page.scaled(image.shape[0], image.shape[1])

    def page_classes(self, page: PageAnnotations) -> tuple[str, ...]:
        """The classes a page is prompted with: its json's, sorted (the reference's rule). A page whose
        json lists none (a blank page of a dataset made by hand, whose jsons list only their own page's
        classes) gets the dataset's: the network needs a class besides the background prompt, and a page
        without instances is all background whatever the classes. Raises DatasetError when no json of the
        dataset lists a class."""
        classes = page.class_names or self.categories()
        if not classes:
            raise DatasetError(
                f"{self.root}: no json of the dataset lists a category: there is no class to train"
            )
        return classes

    def class_names(self, page: PageAnnotations) -> list[str]:
        """The page's classes (`page_classes`) followed by this dataset's background prompt."""
        return [*self.page_classes(page), self.background_prompt]
