"""What every model-running subcommand shares: device and precision choice, and loading the weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from docsam_cli.weights import ResolvedWeights, WeightsEntry, resolve_weights
from model import DocSAM, DocSAMConfig, load_model
from model.inference import Geometry


def pick_device(name: str) -> torch.device:
    """`auto` = the first CUDA device if there is one, else the CPU. Raises ValueError if unavailable."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} requested but only {torch.cuda.device_count()} CUDA devices exist"
            )
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    return device


@dataclass
class LoadedModel:
    model: DocSAM
    weights: ResolvedWeights


def load_for_inference(
    weights: str, variant: str | None, model_config: Path | None, device: torch.device
) -> LoadedModel:
    """Resolve `--weights` (path or zoo name), build the architecture and load strictly.

    Errors are `docsam_cli.weights.WeightsError`, `model.CheckpointError` or ValueError, each one line.
    """
    resolved = resolve_weights(weights)
    config = DocSAMConfig.from_json(model_config) if model_config is not None else None
    model = load_model(resolved.path, variant=variant or resolved.variant, config=config, device=device)
    return LoadedModel(model, resolved)


def parse_size(text: str | None, option: str) -> tuple[int, int] | None:
    """`640` or `640,800` (height,width) → (h, w); None stays None. Raises ValueError naming the option."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (1, 2) or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(f"{option} takes a positive size N or H,W, got {text!r}")
    values = [int(part) for part in parts]
    return (values[0], values[-1])


def page_geometry(
    entry: WeightsEntry | None,
    short_side: str | None,
    window: str | None,
    stride: str | None,
    keep_size: bool | None,
) -> Geometry:
    """The sliding-window geometry: the reference's defaults, adjusted to what the registry knows of the
    checkpoint (keep-size model, fine-tuned models' 800-px windows), then to the command-line options."""
    short = parse_size(short_side, "--short-side")
    size, step = parse_size(window, "--window"), parse_size(stride, "--stride")
    use_keep_size = keep_size if keep_size is not None else bool(entry and entry.keep_size)
    default = Geometry.keep_size_default() if use_keep_size else Geometry()
    patch = (entry.patch_size, entry.patch_size) if entry and entry.patch_size else default.patch
    return Geometry(
        short_range=short or default.short_range, patch=size or patch, stride=step, keep_size=use_keep_size
    )
