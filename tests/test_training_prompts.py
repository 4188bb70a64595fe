"""Weights written by `docsam finetune` carry the classes and dataset name they were trained with (the final
model, each checkpoint, `best/`), so that `docsam segment --weights` without --classes prompts with them;
and the schedule's own limit: a warm-up as long as the run is refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from training_helpers import write_layout
from typer.testing import CliRunner

from docsam_cli.app import app
from docsam_cli.training.checkpoints import list_checkpoints
from docsam_cli.training.datasets import LayoutDataset
from model.checkpoint import stored_classes, stored_keep_size, stored_patch, stored_short_range

RUN = [
    "--iters", "2", "--batch-size", "2", "--short-range", "48,56", "--patch-size", "40,40",
    "--log-every", "1", "--no-progress", "--device", "cpu", "--workers", "0", "--checkpoint-every", "1",
]  # fmt: skip


def page(index: int, names: tuple[str, str]) -> tuple[np.ndarray, dict]:
    image = np.random.default_rng(index).integers(0, 255, (64, 72, 3), dtype=np.uint8)
    coco = {
        "images": [{"id": index, "height": 64, "width": 72, "file_name": f"p{index}.png"}],
        "categories": [{"id": 1, "name": names[0]}, {"id": 2, "name": names[1]}],
        "annotations": [
            {"id": 1, "category_id": 1, "bbox": [8, 8, 40, 20]},
            {"id": 2, "category_id": 2, "bbox": [10, 34, 50, 20]},
        ],
    }
    return image, coco


def dataset(root: Path, names: tuple[str, str]) -> Path:
    """A split named after its folder (as `convert-dataset` names it in `dataset.json`)."""
    write_layout(root, {f"p{index}": page(index, names) for index in range(2)})
    (root / "dataset.json").write_text(json.dumps({"name": root.name}), encoding="utf-8")
    return root


def finetune(weights: Path, out: Path, *datasets: Path) -> None:
    arguments = ["finetune", *map(str, datasets), "--weights", str(weights), "-o", str(out), *RUN]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.stderr


def test_finetuned_weights_carry_the_training_classes(tmp_path: Path, tiny_weights: Path) -> None:
    data = dataset(tmp_path / "Newspapers", ("paragraph", "heading"))
    out = tmp_path / "run"
    finetune(tiny_weights, out, data)
    files = [out / "model.safetensors", *(folder / "model.safetensors" for folder in list_checkpoints(out))]
    assert len(files) == 3
    for path in files:
        stored = stored_classes(path)
        assert stored is not None, path
        assert (tuple(stored.classes), stored.dataset) == (("heading", "paragraph"), "Newspapers")
        assert stored_patch(path) == (40, 40), path  # segment's default window for these weights
        assert stored_keep_size(path) is False, path  # and its resizing rule
        assert stored_short_range(path) == (48, 56), path  # and its short side


def test_a_keep_size_run_stores_its_rule(tmp_path: Path, tiny_weights: Path) -> None:
    """`segment --weights RUN` resizes pages by the rule the run was trained with."""
    data = dataset(tmp_path / "Newspapers", ("paragraph", "heading"))
    out = tmp_path / "run"
    arguments = ["finetune", str(data), "--weights", str(tiny_weights), "-o", str(out), *RUN, "--keep-size"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.stderr
    assert stored_keep_size(out / "model.safetensors") is True


def test_sets_of_different_classes_store_none(tmp_path: Path, tiny_weights: Path) -> None:
    first = dataset(tmp_path / "A", ("paragraph", "heading"))
    second = dataset(tmp_path / "B", ("table", "figure"))
    out = tmp_path / "run"
    finetune(tiny_weights, out, first, second)
    assert stored_classes(out / "model.safetensors") is None


def test_a_warmup_as_long_as_the_run_is_a_usage_error(tmp_path: Path, tiny_weights: Path) -> None:
    data = dataset(tmp_path / "Newspapers", ("paragraph", "heading"))
    arguments = ["finetune", str(data), "--weights", str(tiny_weights), "-o", str(tmp_path / "run"), *RUN]
    result = CliRunner().invoke(app, [*arguments, "--warmup", "2"])
    assert result.exit_code == 2
    assert "--warmup 2: must be less than --iters (2)" in result.stderr
    assert not (tmp_path / "run" / "run.json").exists()


def test_the_stored_classes_are_those_of_every_page_not_the_first_ones(tmp_path: Path) -> None:
    """A split made by hand whose first json lists only `para` stored ["para"], though the second page
    trained `heading` too; `dataset.json`'s class list stands for the jsons when it has one."""
    first, second = page(0, ("para", "para")), page(1, ("heading", "para"))
    first[1]["categories"], first[1]["annotations"] = first[1]["categories"][:1], first[1]["annotations"][:1]
    root = write_layout(tmp_path / "hand", {"p0": first, "p1": second})
    assert LayoutDataset(root).categories() == ("heading", "para")
    (root / "dataset.json").write_text(json.dumps({"name": "Hand", "class_names": ["para", "heading", "x"]}))
    assert LayoutDataset(root).categories() == ("heading", "para", "x")


def test_the_stored_classes_leave_out_text_word_where_table_is_listed_as_every_page_does(
    tmp_path: Path,
) -> None:
    """Training prompts no page with `text word` where its json lists `table` too (the reference's loader
    drops it), yet a dataset.json listing both (convert-dataset of such classes) stored ["table", "text
    word"] in the weights: `segment --weights RUN` then prompted a class the run never trained."""
    root = write_layout(
        tmp_path / "tables", {f"p{index}": page(index, ("table", "text word")) for index in (0, 1)}
    )
    (root / "dataset.json").write_text(json.dumps({"name": "Tables", "class_names": ["table", "text word"]}))
    dataset = LayoutDataset(root)
    annotations = dataset.load(0)[1]
    assert dataset.categories() == dataset.page_classes(annotations) == ("table",)
