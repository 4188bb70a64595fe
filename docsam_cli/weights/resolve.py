"""`--weights NAME_OR_PATH` → a checked weights file; what `segment`, `evaluate` and `finetune` call.

Resolution never touches the network: a registered name must already be in the cache (`docsam
download-weights` puts it there), and its file is verified against the sha256 recorded when it was stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from docsam_cli.inputs.files import missing_file_reason
from docsam_cli.user_paths import expand_user
from docsam_cli.weights.cache import entry_dir, read_record, verify_record
from docsam_cli.weights.errors import NotCachedError, UnknownWeightsError
from docsam_cli.weights.registry import WeightsEntry, entry_names, find_entry, pretrained_entry
from model.checkpoint import (
    CheckpointError,
    stored_keep_size,
    stored_patch,
    stored_short_range,
    weights_in_folder,
)

_WEIGHT_SUFFIXES = {".safetensors", ".pth", ".pt", ".bin"}


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights file ready to load, with what the registry knows about it (nothing, for a plain path)."""

    path: Path
    entry: WeightsEntry | None = None
    sha256: str | None = None

    @property
    def known_entry(self) -> WeightsEntry | None:
        """The zoo entry of the weights: the one named, else the one a file is named as (its published file,
        one installed by `download-weights` or placed in OCR-D's resource locations under the zoo's name);
        `checkpoint_preset` finds its classes so."""
        return self.entry or find_entry(self.path.stem)

    @property
    def keep_size(self) -> bool:
        """Whether the weights are meant for the keep-size rule: the registry's for a zoo name (the keep-size
        checkpoint), else what the file stores (`docsam train --keep-size`, `download-weights`), else the
        registry's for a file named as a zoo entry (`known_entry`); None of these: no. Reads the file's
        header; raises `model.CheckpointError` when it cannot be read."""
        if self.entry is None:
            stored = stored_keep_size(self.path)
            if stored is not None:
                return stored
        entry = self.known_entry
        return bool(entry and entry.keep_size)

    @property
    def patch(self) -> tuple[int, int] | None:
        """The window the weights are meant for: the registry's for a zoo name (the fine-tuned checkpoints'
        800 px), else the training crop stored in the file (by `docsam train`/`finetune` or
        `download-weights`), else the registry's for a file named as a zoo entry (`known_entry`: one an
        older `download-weights` installed without it, or its published file); None: none of these. Reads
        the file's header; raises `model.CheckpointError` when it cannot be read."""
        if self.entry is None:
            stored = stored_patch(self.path)
            if stored is not None:
                return stored
        entry = self.known_entry
        side = entry.patch_size if entry is not None else None
        return (side, side) if side else None

    @property
    def short_range(self) -> tuple[int, int] | None:
        """The short-side range the weights were trained with, stored in the file by `docsam train`/`finetune`
        (`--short-range`); None for a zoo name and for files without it. Reads the file's header; raises
        `model.CheckpointError` when it cannot be read."""
        return stored_short_range(self.path) if self.entry is None else None


def resolve_weights(name_or_path: str, variant: str | None = None) -> ResolvedWeights:
    """Resolve an existing file path as is, a model folder to its weights file (a docsam run or checkpoint
    folder holds `model.safetensors`), or a registered name through the verified cache. `variant` (the
    command's `--variant`) only adds to the message for a name not downloaded yet, see `_variant_hint`.

    Raises `UnknownWeightsError`, `NotCachedError` (naming `docsam download-weights NAME`) or
    `CorruptCacheError`.
    """
    if not str(name_or_path).strip():  # an unset shell variable: not the current folder
        raise UnknownWeightsError("--weights: an empty name; give a weights file, folder or model-zoo name")
    path = Path(expand_user(name_or_path))
    if path.is_file():
        return ResolvedWeights(path)
    if path.is_dir():
        try:
            return ResolvedWeights(weights_in_folder(path))
        except CheckpointError as error:
            raise UnknownWeightsError(f"{error}{_unfinished_run_hint(path)}") from None
    if path.is_symlink():  # its target is gone, as page inputs say of theirs
        raise UnknownWeightsError(f"{name_or_path}: {missing_file_reason(path)}")
    entry = find_entry(name_or_path)
    if entry is None:
        if path.suffix in _WEIGHT_SUFFIXES or len(path.parts) > 1:
            raise UnknownWeightsError(f"{name_or_path}: no such weights file")
        raise UnknownWeightsError(
            f"{name_or_path}: not a weights file nor a known name ({', '.join(entry_names())}); "
            "see `docsam download-weights --list`"
        )
    record = read_record(entry.name)
    if record is None:
        raise NotCachedError(
            f"{entry.name}: not downloaded yet (looked in {entry_dir(entry.name)}); "
            f"fetch it with `docsam download-weights {entry.name}`{_variant_hint(entry, variant)}"
        )
    verify_record(record)
    return ResolvedWeights(record.path, entry, record.sha256)


def _variant_hint(entry: WeightsEntry, variant: str | None) -> str:
    """`segment --variant base` runs the default weights, docsam-large: when those are missing, the user most
    likely meant the zoo's weights of the variant asked for, which the message then names."""
    wanted = (
        pretrained_entry(variant) if variant is not None and entry.variant not in (None, variant) else None
    )
    if wanted is None:
        return ""
    return (
        f"; --variant {variant} asks for the {variant} model, whose weights are {wanted.name}: "
        f"`docsam download-weights {wanted.name}`, then --weights {wanted.name}"
    )


def _unfinished_run_hint(folder: Path) -> str:
    """What to give instead of a folder without weights: a training run's folder gets its final
    `model.safetensors` only when the run ends, so one still running or interrupted (exit 130, to be
    resumed) holds only its `best/` and `checkpoints/step-N/`, which hold weights."""
    from docsam_cli.training.checkpoints import BEST_FOLDER, MODEL_FILE, list_checkpoints

    usable = [
        path
        for path in (folder / BEST_FOLDER, *reversed(list_checkpoints(folder)))
        if (path / MODEL_FILE).is_file()
    ]
    if not usable:
        return " (a docsam run's or checkpoint's folder holds one)"
    return (
        f": a training run's folder without its final weights (still running, or interrupted); "
        f"give one of its weight folders instead, such as {', '.join(map(str, usable[:2]))}"
    )
