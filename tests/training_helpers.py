"""Helpers shared by the training tests: a scripted random source and unified-layout folders on disk."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

_CALLS = {"np.random.choice": "choice", "random.randint": "randint", "random.uniform": "uniform"}


class ScriptedRandom:
    """Replays the reference dataset's recorded random answers (`tiny-loss.json` → `batch.scripted_rng`),
    checking that every draw is the same kind of call with the same arguments, in the same order."""

    def __init__(self, script: Sequence[Mapping[str, Any]]) -> None:
        self.script = list(script)
        self.used = 0

    def _next(self, kind: str, args: list) -> Any:
        assert self.used < len(self.script), f"unexpected extra draw {kind}{tuple(args)}"
        entry = self.script[self.used]
        self.used += 1
        assert _CALLS[entry["call"]] == kind, f"draw {self.used}: {kind}, reference made {entry['call']}"
        assert entry["args"] == args, f"draw {self.used}: {kind}{tuple(args)}, reference {entry['args']}"
        return entry["value"]

    def choice(self, probabilities: Sequence[float]) -> int:
        n, expected = self.script[self.used]["args"] if self.used < len(self.script) else (None, None)
        assert expected is not None and np.allclose(probabilities, expected, rtol=1e-12), probabilities
        return self._next("choice", [n, expected])

    def randint(self, low: int, high: int) -> int:
        return self._next("randint", [low, high])

    def uniform(self, low: float, high: float) -> float:
        return self._next("uniform", [low, high])


def write_layout(root: Path, pages: Mapping[str, tuple[np.ndarray, Mapping[str, Any]]]) -> Path:
    """A unified-layout split: `list.txt`, `image/<stem>.png` (lossless) and `coco/<stem>.json`."""
    (root / "image").mkdir(parents=True)
    (root / "coco").mkdir()
    for stem, (image, coco) in pages.items():
        cv2.imwrite(str(root / "image" / f"{stem}.png"), image)
        (root / "coco" / f"{stem}.json").write_text(json.dumps(coco), encoding="utf-8")
    (root / "list.txt").write_text("".join(f"{stem}.png\n" for stem in pages), encoding="utf-8")
    return root


def assert_close_to_reference(
    name: str, actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float
) -> None:
    """`torch.testing.assert_close` with the fixture README's tolerances: |actual − expected| ≤ atol +
    rtol·|expected|, plus one float16 ulp of the stored value where the fixture stored float16 (taken off the
    difference before the comparison)."""
    actual, reference = actual.float(), expected.float()
    if expected.dtype == torch.float16:
        magnitude = expected.abs()
        ulp = (torch.nextafter(magnitude, torch.full_like(magnitude, float("inf"))) - magnitude).float()
        difference = actual - reference
        actual = reference + difference.sign() * (difference.abs() - ulp).clamp(min=0)
    torch.testing.assert_close(
        actual, reference, atol=atol, rtol=rtol, msg=lambda message: f"{name}: {message}"
    )


def convert_publaynet(shared_data: Path, out: Path) -> Path:
    """The shared PubLayNet sample pages in the unified layout, written by `convert-dataset`'s code."""
    from docsam_cli.datasets.classes import ClassFilter
    from docsam_cli.datasets.convert import FORMATS
    from docsam_cli.datasets.pipeline import ConvertOptions, convert

    source = shared_data / "pages" / "publaynet"
    convert(
        ConvertOptions(
            fmt=FORMATS["coco"],
            sources=[source / "annotations.json"],
            out=out,
            levels=frozenset({"regions"}),
            classes=ClassFilter(),
            dataset_name="PubLayNet",
            images=source / "images",
        )
    )
    return out
