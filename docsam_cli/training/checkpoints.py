"""What a run leaves in its output folder, and reading it back for `--resume`.

```
<output>/checkpoints/step-00000200/model.safetensors   weights + config (`segment --weights` loads it)
<output>/checkpoints/step-00000200/trainer.pt          optimiser, grad scaler, RNG states, step, best metric
<output>/best/model.safetensors, best/metrics.json     the best validation result so far
<output>/model.safetensors                             the final weights
```

The reference saves only the weights (`last_model.pth`, `best_model.pth`), so a restart begins a new run.
Here a checkpoint folder, `best/` and the final weights are written under a temporary name and renamed
when complete (what a killed run left half-written goes with the next checkpoint, or when the run is
resumed), the newest `keep_last` are kept, and `trainer.pt` holds plain tensors and numbers only (read
with `weights_only`).
The data position needs no state of its own: samples are a function of (seed, step), see `sampler`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from docsam_cli.atomic import atomic_open, is_temporary, replace_folder
from docsam_cli.training.datasets import LayoutDataset
from docsam_cli.training.run_log import RUN_FILE, write_failure
from docsam_cli.training.settings import AugmentSettings
from model.checkpoint import save_model
from model.docsam import DocSAM

MODEL_FILE = "model.safetensors"
BEST_FOLDER = "best"
METRICS_FILE = "metrics.json"
STATE_FILE = "trainer.pt"
_STEP_FOLDER = re.compile(r"^step-(\d+)$")


@dataclass
class TrainerState:
    """Everything besides the weights that an uninterrupted run would still have in memory."""

    step: int  # completed optimiser steps
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    rng: dict[str, Any]
    best: dict[str, Any] | None  # {"metric", "value", "step"} of the best validation so far
    run: dict[str, Any]  # what must not change on resume (seed, batch size, datasets)


def capture_rng() -> dict[str, Any]:
    """Python, numpy and torch (CPU + CUDA) generator states, as tensors and plain numbers."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    saved = state["numpy"]
    np.random.set_state(
        (
            saved["kind"],
            saved["keys"].numpy().astype(np.uint32),
            saved["position"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # A run may resume on a machine with fewer GPUs than it was saved on (another --device, node or
        # CUDA_VISIBLE_DEVICES): the states of the GPUs that are there.
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def trained_prompts(datasets: Sequence[LayoutDataset]) -> dict[str, Any]:
    """What a weights file records of the prompts it was trained with (`model.save_model`'s `classes`,
    `dataset`), so that `docsam segment` without --classes uses them: the class list when every training
    set has the same one, the dataset name when they share it too; nothing when the sets differ."""
    class_lists = {dataset.categories() for dataset in datasets}
    if len(class_lists) != 1 or not (classes := next(iter(class_lists))):
        return {}
    names = {dataset.name for dataset in datasets}
    return {"classes": list(classes), "dataset": names.pop() if len(names) == 1 else None}


def trained_with(datasets: Sequence[LayoutDataset], augmentation: AugmentSettings) -> dict[str, Any]:
    """What a weights file records of its training (`model.save_model`'s keyword arguments): the prompts
    (`trained_prompts`), the training crop, whether it kept the page's size (`--keep-size`) and its
    short-side range, which `docsam segment` takes as its default window, resizing rule and short side."""
    return {
        **trained_prompts(datasets),
        "patch": augmentation.patch,
        "keep_size": augmentation.keep_size,
        "short_range": augmentation.short_range,
    }


def checkpoint_root(output: Path) -> Path:
    return output / "checkpoints"


def save_checkpoint(
    output: Path, model: DocSAM, state: TrainerState, keep_last: int, stored: Mapping[str, Any]
) -> Path:
    """Write `checkpoints/step-NNNNNNNN/` atomically, then drop all but the newest `keep_last` folders.
    `stored` (classes, dataset, patch, keep-size, short range) goes into the weights file, see
    `trained_with`. Raises InputError (naming the folder) when it cannot be written, leaving the earlier
    checkpoints as they were."""
    root = checkpoint_root(output)
    final = root / f"step-{state.step:08d}"
    staging = root / f".{final.name}.tmp"
    for leftover in root.glob(".step-*.tmp"):  # a killed run's, of this step or one never written again
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        save_model(model, staging / MODEL_FILE, **stored)
        save_trainer_state(state, staging / STATE_FILE)
    except OSError as error:  # a full disk: no half-written checkpoint takes up its space
        shutil.rmtree(staging, ignore_errors=True)
        raise write_failure(final, "the checkpoint", error) from None
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    for old in list_checkpoints(output)[:-keep_last]:
        shutil.rmtree(old)
    return final


def save_trainer_state(state: TrainerState, path: Path) -> None:
    """`torch.save` through a file object; its write error (a full disk), which torch reports as a
    RuntimeError, raised as the OSError it is."""
    with atomic_open(path, "wb") as handle:
        try:
            torch.save(state.__dict__, handle)
        except RuntimeError as error:
            if isinstance(error.__context__, OSError):
                raise error.__context__ from None
            raise


def list_checkpoints(output: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = checkpoint_root(output)
    if not root.is_dir():
        return []
    found = [(int(match[1]), path) for path in root.iterdir() if (match := _STEP_FOLDER.match(path.name))]
    return [path for _, path in sorted(found)]


def load_trainer_state(folder: Path) -> TrainerState:
    data = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    return TrainerState(**data)


def save_best(
    output: Path, model: DocSAM, metrics: dict[str, float], step: int, stored: Mapping[str, Any]
) -> None:
    """Replace `best/` with these weights (and what they `stored`, see `trained_with`) and their validation
    metrics, in one step: both are written into `.best.tmp/`, which then replaces `best/`, so that a run
    killed or failing meanwhile leaves the earlier weights with their own metrics."""
    with _staged(output, BEST_FOLDER, "the best weights") as staging:
        save_model(model, staging / MODEL_FILE, **stored)
        with atomic_open(staging / METRICS_FILE) as handle:
            json.dump({"step": step, **metrics}, handle, indent=1)
    try:
        replace_folder(staging, output / BEST_FOLDER)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise write_failure(output / BEST_FOLDER, "the best weights", error) from None


def resumed_best(output: Path, state: TrainerState, metric: str) -> dict[str, Any] | None:
    """The best validation a resumed run compares its own with: the checkpoint's record, or `best/`'s when
    better (the killed run published it after its last checkpoint), so that the run replaces `best/` only
    with better weights than those it holds."""
    published = None
    with contextlib.suppress(FileNotFoundError):
        value, step = _published_score(output / BEST_FOLDER / METRICS_FILE, metric)
        if value is not None:
            published = {"metric": metric, "value": value, "step": step}
    if published is None or (state.best is not None and state.best["value"] >= published["value"]):
        return state.best
    return published


def _published_score(path: Path, metric: str) -> tuple[float | None, int]:
    """The `metric` score and step `save_best` wrote in `path` (`best/metrics.json`). A file that is not
    such a record (damaged, edited by hand) is a ValueError naming it: without its score the run cannot
    tell whether its weights beat those in `best/`."""
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(_unusable_best(path, f"not valid JSON ({error})")) from None
    not_a_record = _unusable_best(path, f"not the step and {metric} score docsam writes there")
    if not isinstance(recorded, dict):
        raise ValueError(not_a_record)
    value, step = recorded.get(metric), recorded.get("step")
    if value is not None and not (_is_number(value) and _is_number(step)):
        raise ValueError(not_a_record)
    return value, step


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _unusable_best(path: Path, reason: str) -> str:
    return (
        f"{path}: {reason}, so the run cannot compare its validations with the weights beside it; put back "
        f"the file, or remove {path.parent} to let the run's next validation write it again"
    )


def discard_earlier_best(output: Path) -> None:
    """Remove the `best/` an earlier attempt of a run left in `output` (its `run.json` is there), as a new
    run starts there. Only a run that stopped before its first checkpoint leaves one (a folder with a
    checkpoint is resumed, not started again); the new run restarts the log and run.json, so its `best/`
    must be its own too: else it holds the other attempt's weights, and a resume of the new run compares
    its validations with that score (`resumed_best`). A `best/` of anything else is left alone."""
    best = output / BEST_FOLDER
    if (output / RUN_FILE).is_file() and (best / METRICS_FILE).is_file():
        shutil.rmtree(best, ignore_errors=True)


def save_final(output: Path, model: DocSAM, stored: Mapping[str, Any]) -> None:
    """Write the final weights, `<output>/model.safetensors`, through `.model.safetensors.tmp/`: what a run
    killed meanwhile leaves (safetensors' own temporary file, as large as the weights) is in that folder,
    which `remove_leftovers` removes."""
    with _staged(output, MODEL_FILE, "the final weights") as staging:
        save_model(model, staging / MODEL_FILE, **stored)
        os.replace(staging / MODEL_FILE, output / MODEL_FILE)
    shutil.rmtree(staging, ignore_errors=True)


def remove_leftovers(output: Path) -> None:
    """Remove what a run killed while writing into `output` left there (no other run writes into it): the
    staging folders of `best/` and of the final weights, `atomic_open`'s temporaries (run.json's); a kill
    between the two renames of `best/`'s swap (`replace_folder`) left its previous folder, which is put back
    when there is no `best/`."""
    for name in (BEST_FOLDER, MODEL_FILE):
        shutil.rmtree(output / f".{name}.tmp", ignore_errors=True)
    best = output / BEST_FOLDER
    for previous in output.glob(f".{BEST_FOLDER}.*.old"):
        if best.exists():
            shutil.rmtree(previous, ignore_errors=True)
        else:
            previous.rename(best)
    for path in filter(is_temporary, output.glob(".*.tmp")):
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _staged(output: Path, name: str, what: str) -> Iterator[Path]:
    """A new staging folder (`_staging`) to write `what` in before it is published as `output/name`. If the
    block fails the folder is removed, and a write error (a full disk) is raised as an InputError naming
    `output/name`, the path the user knows, rather than the hidden folder's file."""
    try:
        staging = _staging(output, name)
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    except OSError as error:
        raise write_failure(output / name, what, error) from None


def _staging(output: Path, name: str) -> Path:
    """A new, empty `.<name>.tmp/` in `output`, to write `name` in before it is published; one that a killed
    run left is removed first."""
    staging = output / f".{name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging
