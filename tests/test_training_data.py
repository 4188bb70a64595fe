"""Training data beyond the parity batch: the reference's annotation rules, augmentation edge cases, the
sample stream (sharding, accumulation, resume, curriculum) and loud failures."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import PROJECT_ROOT
from training_helpers import ScriptedRandom, write_layout

from docsam_cli.errors import InputError, UsageError
from docsam_cli.training.annotations import AnnotationError, Instance, rectify
from docsam_cli.training.augment import augment, crop_instances, rasterise
from docsam_cli.training.data import MixedTrainingData, collate, raise_failures, reference_weights
from docsam_cli.training.datasets import LayoutDataset
from docsam_cli.training.launch import explicit_weights
from docsam_cli.training.sampler import BatchLayout, TrainingSampler
from docsam_cli.training.settings import AugmentSettings, DatasetSpec


def coco(annotations: list[dict], categories: list[tuple[int, str]], size=(100, 80)) -> dict:
    height, width = size
    return {
        "images": [{"id": 1, "height": height, "width": width, "file_name": "p.png"}],
        "categories": [{"id": i, "name": name} for i, name in categories],
        "annotations": annotations,
    }


def test_dataset_spec_syntax() -> None:
    spec = DatasetSpec.parse("/data/set,name=My set,weight=2.5,start=400")
    assert spec == DatasetSpec(Path("/data/set"), "My set", 2.5, 400)
    assert DatasetSpec.parse("relative/dir") == DatasetSpec(Path("relative/dir"))
    # A folder named after a document's title may hold commas: the options are the trailing key=value parts.
    assert DatasetSpec.parse("gt/Letters, 1850,1851/train,weight=2") == DatasetSpec(
        Path("gt/Letters, 1850,1851/train"), weight=2.0
    )
    assert DatasetSpec.parse("a,b") == DatasetSpec(Path("a,b"))
    for bad in (
        "d,colour=red",
        "d,weight=0",
        "d,weight=inf",
        "d,weight=nan",
        "d,weight=abc",
        "d,start=-1",
        "d,name",
        "d,name=",
        "d,colour=red,weight=2",
        "d,weight=2,x",
    ):
        with pytest.raises(ValueError):
            DatasetSpec.parse(bad)


def test_dataset_weights_are_given_to_every_dataset_or_to_none() -> None:
    assert explicit_weights([DatasetSpec(Path("a")), DatasetSpec(Path("b"), start=4)]) is None
    weighted = DatasetSpec(Path("a"), weight=2.0)
    assert explicit_weights([weighted, DatasetSpec(Path("b"), weight=1.0)]) == [2, 1]
    with pytest.raises(UsageError, match="every dataset or to none"):
        explicit_weights([weighted, DatasetSpec(Path("b"), start=4)])


def test_readme_train_example_passes_the_weights_rule() -> None:
    """README's `docsam train` example: its DATASETs give a weight to all of them or to none."""
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    (command,) = re.findall(r"^docsam train (.*?) \\$", readme, re.MULTILINE)
    specs = [DatasetSpec.parse(argument) for argument in command.split()]
    assert len(specs) == 2
    explicit_weights(specs)


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        ([], r"no usable images\[0\]\.height/width"),
        ([{"id": 1, "file_name": "p.png"}], r"no usable images\[0\]\.height/width \('height'\)"),
        ([{"id": 1, "height": "tall", "width": 80}], r"no usable images\[0\]\.height/width"),
        ([{"id": 1, "height": 0, "width": 80}], r"image size 80x0 is empty"),
        ([{"id": 1, "height": float("inf"), "width": 80}], r"no usable images\[0\]\.height/width"),
    ],
)
def test_a_json_without_a_usable_page_size_is_an_annotation_error(images: list, expected: str) -> None:
    """A training json must state its page's size, which its annotations are drawn on: one that states
    none, or an empty one, is refused naming the field (no test read these refusals)."""
    with pytest.raises(AnnotationError, match=expected):
        rectify(coco([], [(1, "text")]) | {"images": images})


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        ({"id": 7, "category_id": 1, "bbox": [10, 10, "20px", 5]}, "annotation 7: bad bbox"),
        ({"id": 7, "category_id": 1, "bbox": [10, None, 20, 5]}, "annotation 7: bad bbox"),
        ({"id": 7, "category_id": [1], "bbox": [10, 10, 20, 5]}, "annotation 7: bad category_id"),
        ({"id": 7, "category_id": 1, "segmentation": [3]}, "annotation 7: bad polygon"),
        ({"id": 7, "category_id": 1, "bbox": [5, 5, float("nan"), 20]}, "annotation 7: bad bbox"),
        ({"id": 7, "category_id": 1, "bbox": [5, 5, 10**309, 20]}, "annotation 7: bad bbox"),
        (
            {"id": 7, "category_id": 1, "segmentation": [[0, 0, 9, 0, 10**309, 9]]},
            "annotation 7: bad polygon",
        ),
        (
            {"id": 7, "category_id": 1, "segmentation": [[0, 0, 9, 0, float("inf"), 9]]},
            "annotation 7: bad polygon",
        ),
        ({"id": 7, "category_id": 99, "bbox": [1, 1, 5, 5]}, "annotation 7: category_id 99 is none of the"),
        ({"id": 7, "category_id": "txt", "bbox": [1, 1, 5, 5]}, "annotation 7: category_id 'txt' is none of"),
    ],
)
def test_unusable_annotation_values_are_annotation_errors_naming_the_annotation(
    annotation: dict, expected: str
) -> None:
    with pytest.raises(AnnotationError, match=expected):
        rectify(coco([annotation], [(1, "text")]))
    with pytest.raises(AnnotationError, match="category without a usable id"):
        rectify(coco([], []) | {"categories": [{"name": "text"}]})


def test_rectification_follows_the_reference_loader() -> None:
    page = rectify(
        coco(
            [
                {"id": 1, "category_id": 3, "bbox": [10, 10, 20, 5]},  # box only → 4-corner polygon
                {"id": 2, "category_id": "title", "poly": [0, 0, 9, 0, 9, 4]},  # string id, `poly`
                {"id": 3, "category_id": 4, "segmentation": [[5, 50, 15, 50, 15, 60]]},  # no box
                {"id": 4, "category_id": 2, "bbox": [1, 1, 2, 2]},  # text word: dropped (table exists)
                {"id": 5, "category_id": 1, "bbox": [70, 90, 30, 30]},  # clamped into the image
                {"id": 6, "category_id": 4},  # neither box nor polygon: dropped
            ],
            [(0, "_background_"), (1, "text"), (2, "text word"), (3, "table"), (4, "figure"), (5, "title")],
        )
    )
    assert page.class_names == ("figure", "table", "text", "title")
    labels = [page.class_names[instance.label] for instance in page.instances]
    assert labels == ["table", "title", "figure", "text"]
    table, title, figure, text = page.instances
    assert table.box.tolist() == [10, 10, 30, 15]
    assert table.polygons[0].tolist() == [[10, 10], [30, 10], [30, 15], [10, 15]]
    assert title.box.tolist() == [0, 0, 10, 5]  # cv2.boundingRect of integer points: max − min + 1
    assert figure.box.tolist() == [5, 50, 16, 61]
    assert text.box.tolist() == [70, 90, 79, 99]  # corners clamped to [0, W−1] × [0, H−1]
    assert title.area == pytest.approx(9 * 4 / 2)
    by_area = page.scaled(200, 160)  # twice the json size
    assert [i.area for i in by_area.instances] == sorted((i.area * 4 for i in page.instances), reverse=True)
    assert by_area.instances[0].box.tolist() == [20, 20, 60, 30]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_a_json_written_with_a_byte_order_mark_is_read(encoding: str, tmp_path: Path) -> None:
    """A per-image json saved by a Windows tool (PowerShell's Out-File, Notepad) opens with a byte order
    mark: evaluate and --val read it, training stopped at it with 'cannot read the annotations (Unexpected
    UTF-8 BOM (decode using utf-8-sig): line 1 column 1 (char 0))', and a dataset.json so saved was
    passed over without a word, the background prompt taking the name the folder's path gives."""
    import json

    document = coco([{"id": 1, "category_id": 1, "bbox": [10, 10, 30, 20]}], [(1, "table")], (60, 80))
    root = write_layout(tmp_path / "split", {"a": (np.full((60, 80, 3), 200, np.uint8), document)})
    (root / "coco" / "a.json").write_text(json.dumps(document), encoding=encoding)
    (root / "dataset.json").write_text('{"name": "Mine", "class_names": ["table"]}', encoding=encoding)
    dataset = LayoutDataset(root)
    assert len(dataset.load(0)[1].instances) == 1 and dataset.category_count() == 1
    assert dataset.background_prompt == "Mine _background_"  # not the name the folder's path gives


def test_a_json_nested_too_deeply_is_an_error_naming_it(tmp_path: Path) -> None:
    """A page's json nested deeper than Python's reader goes (a stranger's dataset, or a file made to break
    readers) stopped training as an internal error, 'a bug' ('RecursionError: maximum recursion depth
    exceeded'); it is now the error naming the file that any other json that cannot be read gives."""
    from docsam_cli.training.datasets import DatasetError

    document = coco([{"id": 1, "category_id": 1, "bbox": [10, 10, 30, 20]}], [(1, "table")], (60, 80))
    root = write_layout(tmp_path / "split", {"a": (np.full((60, 80, 3), 200, np.uint8), document)})
    (root / "coco" / "a.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError, match=r"a\.json: cannot read the annotations \(maximum recursion"):
        LayoutDataset(root).load(0)


@pytest.mark.parametrize("explicit_name", [None, "Given"])
def test_a_dataset_json_that_is_no_valid_json_is_an_error_naming_it(
    explicit_name: str | None, tmp_path: Path
) -> None:
    """A dataset.json with a syntax error (a comma left over after editing the name by hand) was passed
    over without a word: the dataset took the name its path gives ('Mine', not 'Newspapers'), training
    and evaluate --weights prompted with another background, and its class list was read from the jsons.
    It is now an error naming the file and the JSON error, as any other file of a dataset that cannot be
    used is (evaluate turns it into its `error:` line, exit 1)."""
    from docsam_cli.datasets import layout

    document = coco([{"id": 1, "category_id": 1, "bbox": [10, 10, 30, 20]}], [(1, "table")], (60, 80))
    split = tmp_path / "Layout" / "Mine" / "val"
    write_layout(split, {"a": (np.full((60, 80, 3), 200, np.uint8), document)})
    (split.parent / "dataset.json").write_text('{"name": "Newspapers", "class_names": ["table"],}\n')
    with pytest.raises(InputError, match=r"Mine/dataset\.json: invalid JSON: .*line 1 column 49"):
        layout.dataset_name(split)
    with pytest.raises(InputError, match=r"dataset\.json: invalid JSON"):
        LayoutDataset(split, explicit_name)


_NAME = "name: expected a string (the dataset name of the background prompt),"


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ('{"name": 7}', f"{_NAME} got 7"),
        ('{"name": null}', f"{_NAME} got null"),
        ('{"name": ["News"]}', f"{_NAME} got a list of 1"),
        ('{"name": {"en": "News"}}', f"{_NAME} got an object"),
        ('{"name": "News", "class_names": "table"}', "class_names: expected a list, got 'table'"),
        ('{"name": "News", "class_names": ["table", 2]}', "class_names[1]: expected a string, got 2"),
        ('["News"]', "expected an object, got a list of 1"),
    ],
)
def test_a_dataset_json_field_of_the_wrong_type_is_an_error_naming_the_file(
    document: str, reason: str, tmp_path: Path
) -> None:
    """A dataset.json whose `name` is no string (a number, null, a list, an object) was passed over without
    a word: the dataset took the name its path gives ('val', with the category folder's name when there is
    one) and so another background prompt; a `class_names` that is no list of strings, or a document
    that is no object, likewise. Each is now an error naming the file and the field."""

    page = (np.full((60, 80, 3), 200, np.uint8), coco([], [(1, "table")], (60, 80)))
    split = write_layout(tmp_path / "val", {"a": page})
    (split / "dataset.json").write_text(document)
    with pytest.raises(InputError, match=re.escape(f"val/dataset.json: {reason}")):
        LayoutDataset(split)


def test_a_split_with_only_a_training_or_a_validation_list_is_read_by_its_stage(tmp_path: Path) -> None:
    """The reference reads `list_train.txt` when training and `list_val.txt` when testing, `list.txt`
    where they are not there; a split with only list_train.txt and/or list_val.txt was refused by every
    command ('not a dataset in the unified layout (needs list.txt and coco/)'). Each stage now reads its
    own list, else list.txt, and a split without either says which lists it looked for."""
    from docsam_cli.training.datasets import DatasetError

    page = (np.full((60, 80, 3), 200, np.uint8), coco([], [(1, "table")], (60, 80)))
    root = write_layout(tmp_path / "split", {"a": page, "b": page})
    (root / "list.txt").rename(root / "list_train.txt")
    assert LayoutDataset(root, stage="train").image_names == ["a.png", "b.png"]
    with pytest.raises(DatasetError, match=r"split: no list_val\.txt or list\.txt \(the lists"):
        LayoutDataset(root, stage="test")
    (root / "list_val.txt").write_text("b.png\n")
    assert LayoutDataset(root, stage="test").image_names == ["b.png"]
    (root / "list_train.txt").unlink()
    with pytest.raises(DatasetError, match=r"split: no list_train\.txt or list\.txt \(the lists"):
        LayoutDataset(root, stage="train")
    (root / "list_val.txt").unlink()
    with pytest.raises(DatasetError, match=r"layout \(needs coco/ and list_train\.txt or list\.txt\)"):
        LayoutDataset(root, stage="train")


def test_the_folder_of_a_split_dataset_names_its_splits(tmp_path: Path) -> None:
    """`convert-dataset --split train=0.9,val=0.1 --out data/mybooks` writes data/mybooks/{train,val}; a
    user giving data/mybooks to finetune (or as --val) was told it is 'not a dataset in the unified
    layout', about the folder convert-dataset had just made. The error now names the splits to give, as
    `evaluate` does."""
    from docsam_cli.training.datasets import DatasetError

    page = (np.full((60, 80, 3), 200, np.uint8), coco([], [(1, "table")], (60, 80)))
    for split in ("train", "val"):
        write_layout(tmp_path / "mybooks" / split, {"a": page})
    for stage, usual in (("train", "train"), ("test", "val")):
        expected = (
            f"mybooks holds split folders: give one of them, train, val (such as {tmp_path}/mybooks/{usual})"
        )
        with pytest.raises(DatasetError, match=re.escape(expected)):
            LayoutDataset(tmp_path / "mybooks", stage=stage)


def test_a_category_name_listed_under_two_ids_is_one_class() -> None:
    """A json listing `text` under ids 1 and 2 (a COCO export with supercategories) prompted the page with
    ['table', 'text', 'text', background]: two identical columns, the instances labelled the second, so
    that the class loss could not be met and the weights stored another class list than the one trained."""
    annotations = [
        {"id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
        {"id": 2, "category_id": 2, "bbox": [40, 40, 20, 20]},
        {"id": 3, "category_id": 3, "bbox": [0, 70, 20, 20]},
    ]
    page = rectify(coco(annotations, [(1, "text"), (2, "text"), (3, "table")]))
    assert page.class_names == ("table", "text")
    assert sorted(instance.label for instance in page.instances) == [0, 1, 1]


def test_a_poly_replaces_the_segmentation_as_in_the_reference_loader() -> None:
    """The reference's loader sets `segmentation = [poly]` wherever an annotation has a `poly`; an
    annotation holding both was trained on its `segmentation` instead."""
    both = {"id": 1, "category_id": 1, "segmentation": [[0, 0, 9, 0, 9, 9]], "poly": [20, 20, 40, 20, 40, 40]}
    (instance,) = rectify(coco([both], [(1, "text")])).instances
    assert [polygon.tolist() for polygon in instance.polygons] == [[[20, 20], [40, 20], [40, 40]]]
    assert instance.box.tolist() == [20, 20, 41, 41]


def test_an_rle_mask_trains_as_its_shape_not_as_its_box() -> None:
    """A per-image json whose segmentation is an RLE (as pycocotools writes it; `evaluate` and `--val` read
    it as the mask) was trained as its bbox's rectangle, and one without a bbox was dropped, both without a
    word; its outline is now traced as `convert-dataset --from coco` traces it, and an RLE that cannot be
    read is an AnnotationError naming the annotation."""
    from pycocotools import mask as mask_utils

    mask = np.zeros((100, 80), dtype=np.uint8)
    mask[10:40, 10:20] = 1
    mask[30:40, 10:50] = 1  # an L: its box is mostly background
    rle = mask_utils.encode(np.asfortranarray(mask))
    compressed = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    runs = [1000, 70, 30, 70, 30, 70]  # column-major: rows 0-69 of columns 10-12
    uncompressed = {"size": [100, 80], "counts": [*runs, 8000 - sum(runs)]}
    annotations = [
        {"id": 1, "category_id": 1, "bbox": [10, 10, 40, 30], "segmentation": compressed},
        {"id": 2, "category_id": 1, "segmentation": compressed},  # no bbox
        {"id": 3, "category_id": 1, "segmentation": uncompressed},
    ]
    page = rectify(coco(annotations, [(1, "table")]))
    targets = rasterise(page.instances, 2, (100, 80))
    assert np.array_equal(targets.instance_masks[0].numpy(), mask.astype(bool))
    assert np.array_equal(targets.instance_masks[1].numpy(), mask.astype(bool))
    assert page.instances[1].box.tolist() == [10, 10, 50, 40]
    assert targets.instance_masks[2].numpy()[:70, 10:13].all() and targets.instance_masks[2].sum() == 210

    smaller = {"size": [50, 80], "counts": compressed["counts"]}
    wrong_size = {"id": 4, "category_id": 1, "segmentation": smaller}
    with pytest.raises(AnnotationError, match=r"annotation 4: bad RLE \(segmentation.size: \[50, 80\]"):
        rectify(coco([wrong_size], [(1, "table")]))


def square(label: int, x1: float, y1: float, x2: float, y2: float) -> Instance:
    points = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)
    return Instance(label, np.array([x1, y1, x2, y2], dtype=np.float64), (points,), (x2 - x1) * (y2 - y1))


def test_crop_keeps_instances_reaching_four_pixels_in() -> None:
    window = (10, 20, 50, 60)
    kept = crop_instances(
        [
            square(0, 0, 30, 14, 40),  # reaches exactly 4 px into the crop: kept, clipped
            square(1, 0, 30, 13.9, 40),  # 3.9 px: dropped
            square(2, 30, 56, 40, 70),  # reaches 4 px in from the bottom edge: kept
            square(3, 30, 56.5, 40, 70),  # 3.5 px: dropped
        ],
        window,
        4.0,
    )
    assert [instance.label for instance in kept] == [0, 2]
    assert kept[0].box.tolist() == [0, 10, 4, 20]
    assert kept[1].box.tolist() == [20, 36, 30, 40]
    assert kept[1].polygons[0].max(0).tolist() == [30, 40]


def test_resize_branch_and_empty_pages() -> None:
    settings = AugmentSettings(short_range=(50, 60), patch=(32, 48))
    rng = ScriptedRandom(
        [
            {"call": "random.randint", "args": [50, 60], "value": 50},
            {"call": "random.uniform", "args": [0, 1], "value": 0.1},  # < 0.2: resize to the patch
        ]
    )
    pixels, instances = augment(torch.rand(3, 100, 200) * 255, [square(0, 0, 0, 100, 50)], rng, settings)
    assert pixels.shape == (3, 32, 48) and rng.used == 2
    assert instances[0].box.tolist() == pytest.approx([0, 0, 24, 16])  # 100x200 → 50x100 → 32x48

    empty = rasterise([], num_classes=3, size=(32, 48))  # no dummy instance, unlike the reference
    assert empty.instance_masks.shape == (0, 32, 48) and empty.instance_boxes.shape == (0, 4)
    assert empty.semantic_masks[-1].all() and not empty.semantic_masks[:-1].any()


def test_the_resize_branch_keeps_every_instance_as_the_reference_does() -> None:
    """The 4-px rule is the crop's (the reference resizes the whole page to the patch and keeps every
    annotation); in the resize branch it dropped the instances lying within 4 px of the page's edges (a
    page number, a separator along the margin), one sample in five."""
    settings = AugmentSettings(short_range=(50, 60), patch=(32, 48))
    rng = ScriptedRandom(
        [
            {"call": "random.randint", "args": [50, 60], "value": 50},
            {"call": "random.uniform", "args": [0, 1], "value": 0.1},  # < 0.2: resize to the patch
        ]
    )
    edges = [square(0, 196, 10, 199, 90), square(1, 20, 0, 180, 3)]  # the right and the top 4 px
    _, instances = augment(torch.rand(3, 100, 200) * 255, edges, rng, settings)
    assert [instance.label for instance in instances] == [0, 1]
    assert instances[0].box.tolist() == pytest.approx([47.04, 3.2, 47.76, 28.8])  # scaled by 0.24, 0.32


def test_rasterisation_truncates_like_int32_and_fills_inclusive() -> None:
    targets = rasterise([square(1, 2.9, 3.7, 6.2, 5.99)], num_classes=3, size=(10, 10))
    mask = targets.instance_masks[0]
    ys, xs = torch.nonzero(mask, as_tuple=True)
    assert (xs.min().item(), xs.max().item(), ys.min().item(), ys.max().item()) == (2, 6, 3, 5)
    assert torch.equal(targets.semantic_masks[1], mask) and torch.equal(targets.semantic_masks[2], ~mask)


@pytest.fixture
def two_sets(tmp_path: Path) -> list[LayoutDataset]:
    rng = np.random.default_rng(0)
    sets = []
    for name, count, classes in (("one", 3, ["a", "b"]), ("two", 5, ["c", "d", "e", "f"])):
        pages = {}
        for index in range(count):
            image = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
            annotation = {"id": 1, "category_id": 1, "bbox": [10, 10, 30, 20]}
            pages[f"{name}{index}"] = (image, coco([annotation], list(enumerate(classes, 1)), (60, 80)))
        sets.append(LayoutDataset(write_layout(tmp_path / name, pages), name=name))
    return sets


def test_mixture_sampling_and_curriculum(two_sets) -> None:
    settings = AugmentSettings(short_range=(40, 50), patch=(32, 32))
    data = MixedTrainingData(two_sets, settings, seed=3, starts=[0, 10])
    assert len(data) == 5 * 2  # largest set × number of sets
    assert data.probabilities(9) == [1.0, 0.0]
    weights = reference_weights([2, 4])
    assert data.probabilities(10) == [w / sum(weights) for w in weights]
    assert weights[1] / weights[0] == pytest.approx(2**0.5)
    # The same key gives the same sample, whoever loads it (workers, other processes, a resumed run).
    first, again = data[_key(7, 4, 10)], data[_key(7, 4, 10)]
    assert torch.equal(first.pixel_values, again.pixel_values) and first.class_names == again.class_names
    names = {tuple(data[_key(p, p % 10, 12)].class_names) for p in range(40)}
    assert names == {("a", "b", "one _background_"), ("c", "d", "e", "f", "two _background_")}
    with pytest.raises(ValueError):
        MixedTrainingData(two_sets, settings, seed=3, starts=[5, 10])


def _key(position: int, index: int, step: int):
    from docsam_cli.training.sampler import SampleKey

    return SampleKey(position, index, step)


def test_sample_stream_is_the_same_for_processes_accumulation_and_resume() -> None:
    def chunks(layout: BatchLayout, rank: int, start: int, steps: int) -> list[list]:
        keys = iter(TrainingSampler(7, layout, rank, seed=5, start_step=start))
        per_chunk = [
            list(itertools.islice(keys, layout.micro_batch)) for _ in range(steps * layout.accumulation)
        ]
        return per_chunk

    single = chunks(BatchLayout(4, world_size=1, accumulation=2), 0, 0, 6)  # 2 chunks of 2 per step
    ranks = [chunks(BatchLayout(4, world_size=2, accumulation=1), rank, 0, 6) for rank in (0, 1)]
    for step in range(6):  # DDP rank r at step k runs what one process runs at micro-step r of step k
        assert ranks[0][step] == single[2 * step] and ranks[1][step] == single[2 * step + 1]
    resumed = chunks(BatchLayout(4, world_size=1, accumulation=2), 0, 3, 3)
    assert resumed == single[6:]
    positions = [key.position for chunk in single for key in chunk]
    assert positions == list(range(24))
    epochs = [
        sorted(key.index for chunk in single for key in chunk if key.position // 7 == e) for e in (0, 1)
    ]
    assert epochs == [list(range(7))] * 2  # every index once per epoch
    with pytest.raises(ValueError):
        BatchLayout(6, world_size=4)


def test_unreadable_samples_fail_loudly(two_sets) -> None:
    """The reference silently substitutes a random other sample; here the error names the file."""
    broken = two_sets[0]
    (broken.root / "image" / "one1.png").unlink()
    data = MixedTrainingData([broken], AugmentSettings((40, 50), (32, 32)), seed=0)
    with pytest.raises(Exception, match=r"one1\.png"):
        _load(data, _key(0, 1, 0))
    (broken.root / "coco" / "one2.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"one2\.json"):
        _load(data, _key(0, 2, 0))


def _load(data: MixedTrainingData, key):
    """One sample as the training loop gets it: collated, a failure raised in this process."""
    return next(raise_failures([collate([data[key]])]))


def test_a_failed_sample_is_the_same_error_out_of_a_worker_process(two_sets) -> None:
    """A data-loader worker's error reaches the training process as the same type and one-line message
    (the DataLoader itself would raise a RuntimeError holding the worker's traceback)."""
    broken = two_sets[0]
    (broken.root / "image" / "one1.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    data = MixedTrainingData([broken], AugmentSettings((40, 50), (32, 32)), seed=0)
    with pytest.raises(InputError) as alone:
        _load(data, _key(0, 1, 0))
    loader = torch.utils.data.DataLoader(data, sampler=[_key(0, 1, 0)], num_workers=1, collate_fn=collate)
    with pytest.raises(InputError) as in_worker:
        next(raise_failures(loader))
    assert str(in_worker.value) == str(alone.value)
    assert "one1.png" in str(alone.value) and "\n" not in str(alone.value)


def test_a_page_whose_json_lists_no_category_is_prompted_with_the_datasets_classes(tmp_path: Path) -> None:
    """A blank page of a dataset made by hand, whose jsons list only their own page's classes, lists none:
    prompted with the background alone, which the network refuses, it stopped the run at its first batch
    ('every image needs at least one class name plus the background prompt', naming no file), and a
    `--val` split holding one stopped the run at its first validation."""
    from docsam_cli.training.datasets import DatasetError
    from docsam_cli.training.validation import LayoutValidator
    from model.inference import Geometry

    def page(stem: str, annotations: list[dict], categories: list[tuple[int, str]]) -> tuple:
        document = coco(annotations, categories, (60, 80))
        document["images"][0]["file_name"] = f"{stem}.png"
        return np.full((60, 80, 3), 200, dtype=np.uint8), document

    table = {"id": 1, "category_id": 1, "bbox": [10, 10, 30, 20]}
    blank = page("blank", [], [])
    root = write_layout(tmp_path / "hand", {"page": page("page", [table], [(1, "table")]), "blank": blank})
    data = MixedTrainingData([LayoutDataset(root, name="hand")], AugmentSettings((40, 50), (32, 32)), seed=0)
    batch = _load(data, _key(0, 1, 0))  # list.txt's second page: the blank one
    assert batch.sources[0].endswith("blank.png")
    assert batch.class_names == [["table", "hand _background_"]]
    assert batch.targets[0].semantic_masks[-1].all() and not batch.targets[0].semantic_masks[0].any()

    validator = LayoutValidator([LayoutDataset(root, stage="test")], Geometry((40, 40), (32, 32)), 2)
    assert [names for _, _, names in validator.sets[0][1]] == [["table"], ["table"]]

    nothing = write_layout(tmp_path / "nothing", {"blank": blank})
    data = MixedTrainingData([LayoutDataset(nothing)], AugmentSettings((40, 50), (32, 32)), seed=0)
    with pytest.raises(DatasetError, match=r"nothing: no json of the dataset lists a category"):
        _load(data, _key(0, 0, 0))
