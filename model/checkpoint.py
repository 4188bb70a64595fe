"""Reading and writing DocSAM weights: the official `.pth` files and safetensors.

Official checkpoints are plain state dicts saved with `torch.save(model.state_dict())`; they are read with
`weights_only=True`, so no arbitrary object is ever unpickled.

Importing this module does not import torch (the functions that need it import it): `docsam segment` reads
the classes a checkpoint carries (`stored_classes`) before it knows whether any page needs the model.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import secrets
import stat
import struct
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from safetensors import SafetensorError, safe_open

from model.config import DocSAMConfig, variant_config, variant_with_width

if TYPE_CHECKING:
    import torch
    from torch import nn

    from model.docsam import DocSAM as DocSAMModel


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model (message names the file)."""


def read_state_dict(
    path: str | os.PathLike[str], *, archive_checked: bool = False
) -> dict[str, torch.Tensor]:
    """Read a state dict from `.safetensors` or a torch `.pth`/`.pt`/`.bin` file, on the CPU. A zip-format
    `.pth` is first checked against its CRC-32s (`archive_damage`), unless the caller has just done so
    (`archive_checked`: download-weights, whose message says how to fetch the file again), which would
    otherwise read a 1.3 GB file through once more."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        path.open("rb").close()  # safetensors says "No such file or directory" of any file it cannot open
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read: {error.strerror or error}") from None
    _refuse_cut_off(path)
    try:
        if is_safetensors(path):
            return load_file(str(path), device="cpu")
        damage = None if archive_checked else archive_damage(path)
        if damage is not None:
            raise CheckpointError(f"{path}: damaged ({damage}); copy the file again from its source")
        foreign = _foreign_archive(path) or _not_weights(path)
        if foreign is not None:
            raise CheckpointError(f"{path}: not a readable checkpoint ({foreign})")
        _silence_torchscript_warning()
        with path.open("rb") as handle:  # by path, torch reads a `.safetensors` name as safetensors
            loaded = torch.load(handle, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as error:  # torch and safetensors raise many types for corrupt files
        raise _unreadable(path, error) from error
    state = _unwrapped(loaded)
    if state is None:
        raise CheckpointError(f"{path}: not a state dict of tensors ({_describe_content(loaded)})")
    return state


def _refuse_cut_off(path: Path) -> None:
    """Raise CheckpointError naming the file when `_cut_off` finds it shorter than its own format says."""
    cut = _cut_off(path)
    if cut is not None:
        raise CheckpointError(f"{path}: damaged ({cut}); copy the file again from its source")


def _cut_off(path: Path) -> str | None:
    """How a weights file falls short of the length its own format gives, as a copy or download stopped
    half-way leaves it (None: it does not). torch and safetensors say so in their internal terms ("failed
    finding central directory. This is an internal miniz error...", "incomplete metadata, file not fully
    covered"), or take a file cut inside its safetensors header for no checkpoint at all. A file that cannot
    be read is left to its reader to report."""
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return "empty: 0 bytes"
            head = handle.read(_SAFETENSORS_HEAD)
            if head.startswith(_ZIP_SIGNATURE) and not zipfile.is_zipfile(handle):
                return f"cut off: {size} bytes, a zip archive without its end"
            return _safetensors_cut_off(head, size, handle)
    except OSError:
        return None


_ZIP_SIGNATURE = b"PK\x03\x04"  # a `.pth` since torch 1.6 is a zip archive
_SAFETENSORS_HEAD = 9  # the header's length (8 bytes, little-endian), then the "{" opening its JSON
_MAX_SAFETENSORS_HEADER = 100_000_000  # safetensors refuses longer headers


def _safetensors_cut_off(head: bytes, size: int, handle: BinaryIO) -> str | None:
    """For a file that starts as safetensors do: whether it is shorter than its header, or than the tensors
    the header lists."""
    length = _safetensors_header_length(head)
    if length is None:
        return None
    if 8 + length > size:
        return f"cut off: {size} bytes, less than its safetensors header's {8 + length}"
    expected = _safetensors_described_size(length, handle)
    if expected is not None and size < expected:
        return f"cut off: {size} bytes of the {expected} its safetensors header describes"
    return None


def _safetensors_header_length(head: bytes) -> int | None:
    """The header length a file's first bytes give, where they start as safetensors do (None: they do not,
    or give a length safetensors refuses)."""
    if len(head) < _SAFETENSORS_HEAD or head[8:9] != b"{":
        return None
    length = int.from_bytes(head[:8], "little")
    return length if length <= _MAX_SAFETENSORS_HEADER else None


def _safetensors_described_size(length: int, handle: BinaryIO) -> int | None:
    """The file size the safetensors header of `length` bytes in `handle` describes: the header, then the
    data of the tensors it lists (None: a header that is no JSON object, for safetensors to describe)."""
    handle.seek(8)
    try:
        header = json.loads(handle.read(length))
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's reader goes
        return None
    if not isinstance(header, dict):
        return None
    ends = [
        entry["data_offsets"][1]
        for entry in header.values()
        if isinstance(entry, dict)
        and isinstance(entry.get("data_offsets"), list)
        and len(entry["data_offsets"]) == 2
        and isinstance(entry["data_offsets"][1], int)
    ]
    return 8 + length + max(ends, default=0)


def _unreadable(path: Path, error: Exception) -> CheckpointError:
    """The error for a weights file torch or safetensors refused to read, one line naming it. safetensors'
    "incomplete metadata, file not fully covered" is said of a file longer than its header describes too
    (one shorter `_cut_off` finds first): bytes appended, as a download resumed from the start into the
    same file leaves them, which is said plainly."""
    appended = _appended_bytes(path) if "incomplete metadata" in str(error) else None
    if appended is not None:
        return CheckpointError(f"{path}: damaged ({appended}); copy the file again from its source")
    return CheckpointError(f"{path}: not a readable checkpoint ({_load_failure(error)})")


def _appended_bytes(path: Path) -> str | None:
    """How much longer the safetensors file `path` is than its header describes (None: it is not)."""
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            length = _safetensors_header_length(handle.read(_SAFETENSORS_HEAD))
            expected = None if length is None else _safetensors_described_size(length, handle)
    except OSError:
        return None
    if expected is None or size <= expected:
        return None
    return f"{size - expected} bytes more than the {expected} its safetensors header describes"


_READ_BLOCK = 1 << 24


def archive_damage(path: Path) -> str | None:
    """Why a zip-format `.pth` fails the CRC-32 check of one of its members, which `torch.load` does not make
    (it would load the damaged tensors); None when every member passes, or the file is no zip archive (for
    `torch.load` to judge). Members written without a CRC (`torch.serialization.set_crc32_options(False)`
    stores 0) cannot be checked. A file `_cut_off` finds short is damaged too, and so is one whose members
    overlap (their data add up to more than the file holds: a zip bomb, whose members, each read through here,
    would take hours)."""
    if not zipfile.is_zipfile(path):
        return _cut_off(path)
    try:
        with zipfile.ZipFile(path) as archive:
            claimed, size = sum(member.compress_size for member in archive.infolist()), path.stat().st_size
            if claimed > size:
                return f"its members overlap: their data add up to {claimed} bytes, the file holds {size}"
            for member in archive.infolist():
                if member.CRC == 0:
                    continue
                with archive.open(member) as data:  # zipfile compares the CRC once a member is read whole
                    while data.read(_READ_BLOCK):
                        pass
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        return str(error)
    return None


def _foreign_archive(path: Path) -> str | None:
    """What a zip or tar archive that `torch.save` did not write holds (weights zipped for download, as Google
    Drive zips what it serves together, or tarred to be copied), for the message: torch says of a zip only
    'Expected hasRecord("version") to be true, but got false. (Could this error message be improved? ...)',
    and takes any tar for its legacy tar format, advising a load that can run arbitrary code. None for any
    other file. A tar is looked for first: one ending in a `.pth` passes for that zip archive."""
    members = _tar_members(path)
    if members is not None:
        if set(members) >= _LEGACY_TAR_MEMBERS:
            return (
                "PyTorch's legacy tar format, which a safe weights-only load cannot read; save its "
                "state_dict() again with a current PyTorch"
            )
        names, kind, unpack = members, "tar", "unpack"
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names, kind, unpack = archive.namelist(), "zip", "unzip"
        if any(name == _TORCH_PICKLE or name.endswith("/" + _TORCH_PICKLE) for name in names):
            return None
    else:
        return None
    held = f"a {kind} archive of {_listed(names)}" if names else f"an empty {kind} archive"
    return f"{held}, not a PyTorch checkpoint; {unpack} it and give the weights file it holds"


def _not_weights(path: Path) -> str | None:
    """What a file no torch checkpoint can be holds, recognised by its start, for the message (torch's
    unpickler says of most such files only 'pop from empty list' or '101'): a web page saved in the weights'
    place (`wget` or `curl` of a Google Drive link fetches Drive's page warning that it cannot scan the file,
    not the file), a Git LFS pointer (a model repository cloned without git-lfs), anything else that is
    neither a zip archive nor a pickle (a legacy `.pth`, protocol 2 and up, starts with 0x80). None for a
    file torch may read."""
    with path.open("rb") as handle:
        head = handle.read(_HEAD)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return (
            "an HTML page, not weights: a web page saved in their place, as wget or curl of a Google Drive "
            "link saves Drive's warning page; download the file itself (the model zoo's with `docsam "
            "download-weights NAME`)"
        )
    if text.startswith(_LFS_POINTER):
        return (
            "a Git LFS pointer, not the weights it stands for: a repository cloned without git-lfs; run "
            "`git lfs pull` in it, or download the file itself"
        )
    if head.startswith(b"\x80") or zipfile.is_zipfile(path):
        return None
    return "not a PyTorch or safetensors checkpoint"


_HEAD = 1024
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


_TORCH_PICKLE = "data.pkl"  # the object pickle of every `torch.save` (and TorchScript) archive
_LEGACY_TAR_MEMBERS = {"pickle", "storages", "tensors"}  # what `torch.load` reads of its legacy tar format


def _tar_members(path: Path) -> list[str] | None:
    """The member names of an uncompressed tar archive (which torch takes for its legacy tar format), as far
    as one cut off goes; None for any other file, and for one without members (a file of zeros reads as
    such)."""
    names: list[str] = []
    with contextlib.suppress(tarfile.TarError), tarfile.open(path, "r:") as archive:
        names.extend(member.name for member in archive)
    return names or None


def _silence_torchscript_warning() -> None:
    """Keep torch's warning that it is "dispatching to 'torch.jit.load'" a TorchScript file (which it then
    refuses to load weights-only) off the console: two raw lines before the one error line.

    Installed on every load, as `docsam_cli.inputs.images` installs Pillow's: `warnings.catch_warnings` is
    not thread-safe, and whoever restores the warning filters (a test runner does) would drop a filter
    installed once. Re-adding an existing filter replaces it.
    """
    warnings.filterwarnings("ignore", "'torch.load' received a zip file that looks like a TorchScript")


_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
"""Where training scripts commonly keep the weights in a saved dict (beside the optimizer, the epoch...)."""


def _unwrapped(loaded: object) -> dict[str, torch.Tensor] | None:
    """The state dict in what `torch.load` returned: the object itself, or the one under a wrapper key."""
    import torch

    def state_dict(value: object) -> bool:
        return isinstance(value, Mapping) and all(
            isinstance(key, str) and isinstance(tensor, torch.Tensor) for key, tensor in value.items()
        )

    if state_dict(loaded):
        return dict(loaded)
    if isinstance(loaded, Mapping):
        for key in _WRAPPER_KEYS:
            if state_dict(loaded.get(key)):
                return dict(loaded[key])
    return None


def _describe_content(loaded: object) -> str:
    """What a loaded object that is no state dict holds, for the error message."""
    if not isinstance(loaded, Mapping):
        return f"it holds a {type(loaded).__name__}"
    keys = [str(key) for key in loaded]
    return f"a dict whose entries are not all tensors: {_listed(keys)}" if keys else "an empty dict"


def _listed(keys: Sequence[str]) -> str:
    """The first few of `keys` for a message, with their count when there are more."""
    return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")


FOLDER_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""The weights file a model folder holds: a docsam run or checkpoint folder, a transformers download."""


def weights_in_folder(folder: Path) -> Path:
    """The weights file of a model folder: the first of `FOLDER_WEIGHT_FILES` there (else CheckpointError)."""
    found = next((folder / name for name in FOLDER_WEIGHT_FILES if (folder / name).is_file()), None)
    if found is None:
        raise CheckpointError(f"{folder}: a folder without {' or '.join(FOLDER_WEIGHT_FILES)}")
    return found


def is_safetensors(path: Path) -> bool:
    """Whether the file starts as safetensors do (a little-endian header length, then a JSON object), so that
    one is read as such whatever its suffix (`.bin` and `.pth` are common for both formats, and a `.pth`
    renamed `.safetensors` is still a `.pth`)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(9)
    except OSError:
        return False
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return int.from_bytes(head[:8], "little") < path.stat().st_size


def _load_failure(error: Exception) -> str:
    """The reason to show for a file torch cannot load safely. Its weights-only messages (and the one for a
    TorchScript archive, whose loading runs the model's code) advise a load that would run arbitrary code,
    which docsam never does; the useful part is what the file holds."""
    text = str(error)
    if "TorchScript archives" in text:
        return "a TorchScript model, which holds code; save its state_dict() instead"
    if text.startswith("Weights only load failed"):
        needed = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if needed:
            return f"it holds Python objects ({needed.group(1)}), which a safe weights-only load refuses"
        return "not a PyTorch or safetensors checkpoint"
    return text.splitlines()[0] if text else type(error).__name__


def write_safetensors(
    state: Mapping[str, torch.Tensor], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """Write `state` as safetensors atomically (temporary file, fsync, rename); tensors are made contiguous.

    The file gets the permissions of any new file (0666 less the umask), as the CLI's outputs do."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in state.items()}
    temporary = _new_temporary(path)
    try:
        mode = stat.S_IMODE(temporary.stat().st_mode)
        # safetensors (0.8) writes a 0600 file of its own and renames it over the temporary: restore the mode.
        try:
            save_file(tensors, str(temporary), metadata=metadata)
        except SafetensorError as error:  # the Rust writer's I/O error (a full disk) as Python's would be
            raise _os_error(error, path) from None
        _sort_metadata(temporary)
        os.chmod(temporary, mode)
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


_METADATA_OPENING = b'{"__metadata__":'  # how safetensors opens a header with metadata


def _sort_metadata(path: Path) -> None:
    """Put the metadata of the safetensors file at `path` in the order of its keys, in place.

    safetensors (0.8) writes the metadata from a Rust hash map, in an order drawn at random for each write:
    the same weights written twice (a run and its resumed rerun, one download stored on two machines) gave
    files that differ in bytes and sha256. Sorted, the metadata takes the same bytes as before (compact JSON,
    each string escaped alike); a header where it would not is left as written."""
    with open(path, "r+b") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = file.read(length)
        if not header.startswith(_METADATA_OPENING):
            return
        text = header.decode("utf-8")
        metadata, end = json.JSONDecoder().raw_decode(text, len(_METADATA_OPENING))
        written = text[len(_METADATA_OPENING) : end].encode("utf-8")
        ordered = json.dumps(dict(sorted(metadata.items())), separators=(",", ":"), ensure_ascii=False)
        if len(ordered.encode("utf-8")) == len(written):
            file.seek(8 + len(_METADATA_OPENING))
            file.write(ordered.encode("utf-8"))


_SAFETENSORS_TEMPORARY = re.compile(r"\.tmp[0-9A-Za-z]{6}")


def is_safetensors_temporary(path: Path) -> bool:
    """Whether `path` is named as the file safetensors (0.8) writes the tensors into, beside the target,
    before renaming it there (`.tmp` and six letters or digits): what a `write_safetensors` killed meanwhile
    (the OOM killer, kill -9) leaves behind, as large as the weights."""
    return _SAFETENSORS_TEMPORARY.fullmatch(path.name) is not None


_RUST_IO_ERROR = re.compile(r"I/O error: (.*) \(os error (\d+)\)")


def _os_error(error: SafetensorError, path: Path) -> OSError:
    """safetensors' "Error while serializing: I/O error: No space left on device (os error 28)" as the
    OSError it stands for, about `path`."""
    found = _RUST_IO_ERROR.search(str(error))
    if found is None:
        return OSError(errno.EIO, str(error), str(path))
    return OSError(int(found[2]), found[1], str(path))


# The rule of `docsam_cli.atomic` (which the model core may not import): created with mode 0666, the
# kernel applies the umask and a directory's default ACL; `tempfile.mkstemp` would give 0600.
_NEW_FILE_MODE = 0o666
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def _new_temporary(target: Path) -> Path:
    """A new, empty `.<name>.<random>.tmp` beside `target`, with a new file's permissions."""
    while True:
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(temporary, _CREATE_FLAGS, _NEW_FILE_MODE))
            return temporary
        except FileExistsError:
            continue


def _fsync(path: Path) -> None:
    """Flush the file's data to disk, so that the rename never publishes an empty or partial file."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# Reference (official checkpoint) name prefixes → this package's module names, most specific first.
REFERENCE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("mask2former.model.pixel_level_module.encoder.", "backbone."),
    ("mask2former.model.pixel_level_module.decoder.", "pixel_decoder."),
    ("mask2former.model.pixel_level_module.fpn.", "unused_fpn."),
    ("mask2former.model.pixel_level_module.feat_merge.", "mask_feature_fusion."),
    ("mask2former.model.transformer_module.textual_encoder.", "text_encoder.bert."),
    ("mask2former.model.transformer_module.decoder.", "decoder."),
    ("mask2former.model.transformer_module.", ""),
)

# Entries that some checkpoints carry and that have no effect, dropped on load: BERT's position ids (always
# arange) and Swin's relative-position indices (fixed by the window size), which old transformers releases
# stored and current ones compute.
_IGNORED = re.compile(r"(^|\.)embeddings\.position_ids$|\.attention\.self\.relative_position_index$")
# torchvision < 0.13 named the FPN convs without the Sequential index.
_OLD_FPN = re.compile(r"^(unused_fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$")
# A decoder layer's instance and semantic branches: the reference (and files written by earlier versions of
# this package) name them `instance_fc1`, `instance_decoder.<level>`, ...; the modules are `instance.fc1`,
# `instance.layers.<level>`.
_LAYER = r"^(decoder\.decoder_layers\.\d+\.)(instance|semantic)"
_FLAT_BRANCH = re.compile(_LAYER + r"_(fc1|pos_fc1|fc2|pos_fc2|decoder)\.")
_BRANCH_MODULE = re.compile(_LAYER + r"\.(fc1|pos_fc1|fc2|pos_fc2|layers)\.")


def _branch_module_name(match: re.Match[str]) -> str:
    part = "layers" if match[3] == "decoder" else match[3]
    return f"{match[1]}{match[2]}.{part}."


def _flat_branch_name(match: re.Match[str]) -> str:
    part = "decoder" if match[3] == "layers" else match[3]
    return f"{match[1]}{match[2]}_{part}."


# The backbone holds transformers' `SwinBackbone` as `backbone.swin`. Official checkpoints, and this package's
# files from before that, name its entries as transformers 4.x did, directly under `backbone.`: transformers
# 5.9 moved `embeddings` and `encoder` into a Swin model (`swin.`) and renamed seven block parameters. These
# nine renames are the ones transformers applies itself to 4.x Swin checkpoints (4.x → current, in this
# order: `attention.output.dense` before `output.dense`).
_SWIN = "backbone.swin."
_REFERENCE_BACKBONE = "backbone."  # where `REFERENCE_PREFIXES` puts the reference's `SwinBackbone`
_SWIN_MOVED = ("embeddings.", "encoder.")
_SWIN_RENAMES: tuple[tuple[str, str], ...] = (
    (".attention.self.query.", ".attention.q_proj."),
    (".attention.self.key.", ".attention.k_proj."),
    (".attention.self.value.", ".attention.v_proj."),
    (
        ".attention.self.relative_position_bias_table",
        ".attention.relative_position_bias.relative_position_bias_table",
    ),
    (".attention.output.dense.", ".attention.o_proj."),
    (".intermediate.dense.", ".mlp.fc1."),
    (".output.dense.", ".mlp.fc2."),
)
_SWIN_PATCH_EMBEDDING = _SWIN + "swin.embeddings.patch_embeddings.projection.weight"


def _current_swin_name(name: str) -> str:
    """A Swin entry under its 4.x name (`backbone.encoder....`) renamed; every other name unchanged."""
    if not name.startswith("backbone.") or name.startswith(_SWIN):
        return name
    return _SWIN + _current_swin_part(name.removeprefix("backbone."))


def _current_swin_part(part: str) -> str:
    """A name inside transformers' `SwinBackbone`, of 4.x or of the current release, in the current one."""
    if part.startswith(_SWIN_MOVED):
        part = "swin." + part
    for old, new in _SWIN_RENAMES:
        part = part.replace(old, new)
    return part


def _legacy_swin_name(name: str) -> str:
    """Inverse of `_current_swin_name`."""
    if not name.startswith(_SWIN):
        return name
    part = name.removeprefix(_SWIN)
    for old, new in reversed(_SWIN_RENAMES):
        part = part.replace(new, old)
    return "backbone." + part.removeprefix("swin.")


def to_model_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a state dict to this package's module names.

    Accepts the official checkpoints (`mask2former.model.*`, optionally behind DDP's `module.`), with the
    backbone named as transformers 4.x or, for weights the reference saved running on transformers 5, as the
    current release names it, and checkpoints written by this package: in its current names, or with the
    backbone in the transformers 4.x names that earlier versions wrote.
    """
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix("module.")
        for reference, ours in REFERENCE_PREFIXES:
            if name.startswith(reference):
                name = ours + name[len(reference) :]
                if ours == _REFERENCE_BACKBONE:  # what follows is a `SwinBackbone` name, old or current
                    name = _SWIN + _current_swin_part(name.removeprefix(ours))
                break
        if _IGNORED.search(name):
            continue
        name = _OLD_FPN.sub(r"\1.0.\2", name)
        name = _FLAT_BRANCH.sub(_branch_module_name, name)
        renamed[_current_swin_name(name)] = value
    return renamed


def to_reference_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `to_model_keys`: the names the reference implementation (and its loader) expects."""
    renamed = {}
    for key, value in state.items():
        name = _legacy_swin_name(_BRANCH_MODULE.sub(_flat_branch_name, key))
        for reference, ours in REFERENCE_PREFIXES:
            if name.startswith(ours):
                renamed[reference + name[len(ours) :]] = value
                break
    return renamed


def misfit(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> str | None:
    """What keeps `given` from loading strictly where `expected` (a state dict) is: its missing, unexpected
    and mis-shaped keys, a few of each; None when it fits."""
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    mismatched = [
        f"{key} {tuple(given[key].shape)} != {tuple(expected[key].shape)}"
        for key in expected
        if key in given and given[key].shape != expected[key].shape
    ]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
        if keys:
            parts.append(f"{label}: {_listed(keys)}")
    return "; ".join(parts) or None


# Config sizes read off a state dict in this package's names: (field, entry, axis) for one axis of one entry,
# and (field, pattern) for a count of numbered layers (the pattern's first group numbers them).
_SIZE_AXES: tuple[tuple[str, str, int], ...] = (
    ("embed_dim", _SWIN_PATCH_EMBEDDING, 0),
    ("hidden_dim", "instance_queries.weight", 1),
    ("num_queries", "proposal_bboxes.weight", 0),
    ("feature_size", "pixel_decoder.level_embed", 1),
    ("encoder_feedforward_dim", "pixel_decoder.encoder.layers.0.fc1.weight", 0),
    ("dim_feedforward", "decoder.decoder_layers.0.query_fusion_encoder_1.linear1.weight", 0),
    ("text hidden_size", "text_encoder.bert.embeddings.word_embeddings.weight", 1),
    ("text intermediate_size", "text_encoder.bert.encoder.layer.0.intermediate.dense.weight", 0),
)
_LAYER_COUNTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("encoder_layers", re.compile(r"^pixel_decoder\.encoder\.layers\.(\d+)\.")),
    ("decoder_layers", re.compile(r"^decoder\.decoder_layers\.(\d+)\.")),
    ("text num_hidden_layers", re.compile(r"^text_encoder\.bert\.encoder\.layer\.(\d+)\.")),
)
_SWIN_BLOCK = re.compile(r"^backbone\.swin\.swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.")
_BIAS_TABLE = "attention.relative_position_bias.relative_position_bias_table"


def architecture_sizes(state: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """The config sizes a state dict (in this package's names) has, those its entries show: what tells one
    architecture's weights from another's in a message."""
    sizes: dict[str, object] = {}
    blocks: dict[int, set[int]] = {}
    for key in state:
        if found := _SWIN_BLOCK.match(key):
            blocks.setdefault(int(found[1]), set()).add(int(found[2]))
    if blocks:
        stages = range(max(blocks) + 1)
        sizes["depths"] = [len(blocks.get(stage, ())) for stage in stages]
        tables = [state.get(f"{_SWIN}swin.encoder.layers.{stage}.blocks.0.{_BIAS_TABLE}") for stage in stages]
        shapes = [tuple(table.shape) for table in tables if table is not None and table.dim() == 2]
        if len(shapes) == len(tables):
            sizes["num_heads"] = [heads for _, heads in shapes]
            sizes["window_size"] = (math.isqrt(shapes[0][0]) + 1) // 2  # the table is (2w-1)² long
    for name, key, axis in _SIZE_AXES:
        tensor = state.get(key)
        if tensor is not None and tensor.dim() > axis:
            sizes[name] = tensor.shape[axis]
    for name, pattern in _LAYER_COUNTS:
        if count := len({found[1] for key in state if (found := pattern.match(key))}):
            sizes[name] = count  # none: a whole part is missing, which the missing entries say
    return sizes


def _size_differences(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> str | None:
    """The config sizes in which `given` differs from `expected`, as "the weights' a 1, b 2 against the
    architecture's 3, 4"; None when the sizes read off both agree."""
    ours, theirs = architecture_sizes(expected), architecture_sizes(given)
    names = [name for name in theirs if name in ours and theirs[name] != ours[name]]
    if not names:
        return None
    return (
        f"the weights' {', '.join(f'{name} {theirs[name]}' for name in names)} "
        f"against the architecture's {', '.join(str(ours[name]) for name in names)}"
    )


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load strictly: every model entry must be filled with the right shape and nothing may be left over.

    Raises CheckpointError listing the config sizes in which the weights differ from the model
    (`architecture_sizes`), then missing, unexpected and mis-shaped keys (in this package's names, to which
    the reference's are mapped first), instead of silently keeping random weights as the reference loader
    does.
    """
    mapped = to_model_keys(state)
    _refuse_misfit(model.state_dict(), mapped, source)
    model.load_state_dict(mapped, strict=True)


def _refuse_misfit(
    expected: Mapping[str, torch.Tensor], mapped: Mapping[str, torch.Tensor], source: str
) -> None:
    """Raise CheckpointError, as `load_weights` describes, when `mapped` (in this package's names) does not
    load strictly where `expected` is."""
    problems = misfit(expected, mapped)
    if problems:
        sizes = _size_differences(expected, mapped)
        raise CheckpointError(
            f"{source}: does not fit the model ({'; '.join(filter(None, (sizes, problems)))})"
        )


def model_with_weights(
    config: DocSAMConfig,
    state: Mapping[str, torch.Tensor],
    source: str = "checkpoint",
    device: str | torch.device = "cpu",
) -> DocSAMModel:
    """DocSAM of `config` with `state` loaded strictly (`load_weights`), on the CPU. The weights are first
    checked against the architecture built on the meta device, which allocates nothing: a config of other
    sizes than the weights' (a file's stored config can say anything, a vocabulary of 10^8 words) is refused
    as `load_weights` refuses it, before the memory it asks for (terabytes) is allocated; so is a model whose
    tensors the CPU, or the `device` it is to run on, has no room for (`refuse_unheld`)."""
    from model.docsam import DocSAM  # local import: docsam imports this module's siblings

    skeleton = meta_model(config, source)
    _refuse_misfit(skeleton.state_dict(), to_model_keys(state), source)
    refuse_unheld(skeleton, source, ("cpu", device))
    model = DocSAM(config)
    load_weights(model, state, source)
    return model


def meta_model(config: DocSAMConfig, source: str) -> DocSAMModel:
    """DocSAM of `config` on the meta device, which allocates nothing. A size torch cannot hold, which a
    config validated field by field can still give (a width of 2^64; a weight of 2^63 bytes or more, as a
    width of 2^62 makes), is refused as CheckpointError naming `source` (the weights or the config file):
    torch raises TypeError or RuntimeError, with its C++ stack in the message."""
    import torch

    from model.docsam import DocSAM

    try:
        with torch.device("meta"):
            return DocSAM(config)
    except (TypeError, RuntimeError, OverflowError) as error:
        reason = _unholdable_sizes(config) or _first_line(error)
        raise CheckpointError(f"{source}: an architecture of sizes torch cannot hold ({reason})") from None


def refuse_unheld(skeleton: nn.Module, source: str, devices: Sequence[str | torch.device] = ("cpu",)) -> None:
    """Raise CheckpointError naming `source` when the parameters and buffers of `skeleton` (a model on the
    meta device) need more bytes than one of `devices` has free (`model.memory.free_memory`; a device
    that does not say is not checked). Building the model would fail there, in the kernel's out-of-memory
    killer, or in torch's "DefaultCPUAllocator: can't allocate memory" for a single tensor larger than
    the machine's memory, on the CPU. Every model
    is built on the CPU before it is moved to its device: the CPU is among the devices to check. The
    tensors alone are a bound below what any run needs, so a model that would have run is never refused."""
    import torch

    from model.memory import amount, free_memory, tensor_bytes

    needed = tensor_bytes(skeleton)
    for device in dict.fromkeys(torch.device(name) for name in devices):
        free = free_memory(device)
        if free is not None and needed > free:
            count = sum(parameter.numel() for parameter in skeleton.parameters())
            raise CheckpointError(
                f"{source}: an architecture of {count:,} parameters, whose tensors alone take "
                f"{amount(needed)}, more than the {amount(free)} of memory free on {device}"
            )


_TORCH_SIZE_LIMIT = 2**63 - 1  # torch's sizes are signed 64-bit integers


def _unholdable_sizes(config: DocSAMConfig) -> str | None:
    """The config's values no torch size holds, each named by its key in the config's JSON
    (`mask2former_config.encoder_feedforward_dim 18446744073709551616 > 2^63 - 1`); None if there are none."""
    found = [f"{key} {value}" for key, value in _integers(config.to_dict()) if abs(value) > _TORCH_SIZE_LIMIT]
    return f"{', '.join(found)} > 2^63 - 1" if found else None


def _integers(data: Any, prefix: str = "") -> list[tuple[str, int]]:
    """The integers in a JSON-like tree, each with its dotted key (`depths.2` for a list's third)."""
    if isinstance(data, dict):
        return [found for key, value in data.items() for found in _integers(value, f"{prefix}{key}.")]
    if isinstance(data, list | tuple):
        return [found for index, value in enumerate(data) for found in _integers(value, f"{prefix}{index}.")]
    return [(prefix.rstrip("."), data)] if isinstance(data, int) and not isinstance(data, bool) else []


def _first_line(error: BaseException) -> str:
    """The first line of torch's message, without a quote it opens there and closes only after the C++
    stack it appends (`... with error "Overflow when unpacking long long` + newline + `Exception raised
    from ...`)."""
    line = " ".join(str(error).split("\n")[0].split())
    return line.replace('"', "") if line.count('"') % 2 else line


CONFIG_METADATA_KEY = "docsam_config"
CLASSES_METADATA_KEY = "docsam_classes"  # a JSON list of the class names trained, no background prompt
DATASET_METADATA_KEY = "docsam_dataset"  # the dataset name, the domain of the background prompt
PATCH_METADATA_KEY = "docsam_patch"  # the training crop, a JSON [height, width]
KEEP_SIZE_METADATA_KEY = "docsam_keep_size"  # whether training kept the page's size (--keep-size), JSON
SHORT_RANGE_METADATA_KEY = "docsam_short_range"  # the training's short-side range, a JSON [low, high]


def detect_variant(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> str:
    """The variant whose Swin width the checkpoint's patch embedding has; errors name `source`."""
    weight = to_model_keys(state).get(_SWIN_PATCH_EMBEDDING)
    if weight is None:  # every DocSAM architecture has one: no --variant or --model-config would load these
        held = (
            f" among its {len(state)} entries: {_listed(list(state))}" if state else "; it holds no tensors"
        )
        raise CheckpointError(f"{source}: not DocSAM weights (no DocSAM Swin patch embedding{held})")
    try:
        return variant_with_width(weight.shape[0])
    except ValueError as error:
        raise CheckpointError(f"{source}: {error}; pass --model-config") from None


def stored_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata of a safetensors file (empty for other formats); CheckpointError if unreadable."""
    _refuse_cut_off(Path(path))
    if not is_safetensors(Path(path)):
        return {}
    try:
        with safe_open(str(path), "numpy") as handle:  # "numpy": reading the header needs no torch
            return dict(handle.metadata() or {})
    except SafetensorError as error:
        raise _unreadable(Path(path), error) from error


def stored_config(path: str | os.PathLike[str]) -> DocSAMConfig | None:
    """The config a safetensors file written by `save_model` carries in its metadata, if any.

    Raises CheckpointError naming the file when that config is not a usable one."""
    text = stored_metadata(path).get(CONFIG_METADATA_KEY)
    if not text:
        return None
    try:
        return DocSAMConfig.from_dict(json.loads(text))
    except (ValueError, TypeError, RecursionError) as error:
        raise CheckpointError(f"{path}: its stored DocSAM config is not usable ({error})") from error


@dataclass(frozen=True)
class StoredClasses:
    """The prompts a model was trained with, as `save_model` stores them: the class names (without the
    background prompt) and the dataset name, the domain of `"<dataset> _background_"` (None: not stored)."""

    classes: tuple[str, ...]
    dataset: str | None = None


def stored_classes(path: str | os.PathLike[str]) -> StoredClasses | None:
    """The class names (and dataset name) a safetensors file written by `save_model` carries, if any.

    Raises CheckpointError naming the file when the file or the stored list cannot be read."""
    metadata = stored_metadata(path)
    text = metadata.get(CLASSES_METADATA_KEY)
    if not text:
        return None
    try:
        classes = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{path}: its stored class names are not usable ({error})") from error
    if not _is_class_list(classes):
        raise CheckpointError(f"{path}: its stored class names are not a list of distinct names")
    return StoredClasses(tuple(classes), metadata.get(DATASET_METADATA_KEY))


def stored_patch(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """The training crop (height, width) a safetensors file written by `save_model` carries, if any (files
    written before it was stored have none). Raises CheckpointError naming the file when it cannot be
    read."""
    return _stored_sides(path, PATCH_METADATA_KEY, "patch size", _is_patch, "two positive integers")


def stored_keep_size(path: str | os.PathLike[str]) -> bool | None:
    """Whether the model in a safetensors file written by `save_model` was trained with the keep-size rule,
    if the file says (files written before it was stored do not). Raises CheckpointError naming the file
    when it cannot be read."""
    keep_size = _stored_json(path, KEEP_SIZE_METADATA_KEY, "keep-size flag")
    if keep_size is not None and not isinstance(keep_size, bool):
        raise CheckpointError(f"{path}: its stored keep-size flag is not true or false")
    return keep_size


def stored_short_range(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """The short-side range (low, high) a model in a safetensors file written by `save_model` was trained
    with (`--short-range`), if the file says (files written before it was stored do not). Raises
    CheckpointError naming the file when it cannot be read."""
    rule = "two positive integers, low first"
    return _stored_sides(path, SHORT_RANGE_METADATA_KEY, "short-side range", _is_short_range, rule)


def _stored_sides(
    path: str | os.PathLike[str], key: str, what: str, valid: Callable[[object], bool], rule: str
) -> tuple[int, int] | None:
    """A pair of sizes stored under `key` (`_stored_json`), None when there is none; CheckpointError naming
    the file, `what` and the `rule` it breaks when it is not `valid`."""
    sides = _stored_json(path, key, what)
    if sides is None:
        return None
    if not valid(sides):
        raise CheckpointError(f"{path}: its stored {what} is not {rule}")
    return sides[0], sides[1]


def _stored_json(path: str | os.PathLike[str], key: str, what: str) -> Any:
    """The JSON value stored under `key` in a safetensors file's metadata, None when there is none;
    CheckpointError naming the file and `what` when it is no JSON."""
    text = stored_metadata(path).get(key)
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{path}: its stored {what} is not usable ({error})") from error


def _is_patch(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in value)
    )


def _is_short_range(value: object) -> bool:
    return _is_patch(value) and isinstance(value, list) and value[0] <= value[1]


def _is_class_list(value: object) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(name, str) and name for name in value)
        and len(set(value)) == len(value)
    )


def load_model(
    checkpoint: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    variant: str | None = None,
    config: DocSAMConfig | None = None,
    device: str | torch.device = "cpu",
) -> DocSAMModel:
    """Build DocSAM and load a checkpoint strictly; returns the model in eval mode on `device`.

    The architecture comes from `config`, else `variant` ('base'/'large'), else the config stored in a
    safetensors file written by this package, else it is detected from the checkpoint (base/large). A model
    whose tensors the CPU or `device` has no room for is refused before it is built (`refuse_unheld`).
    """
    state = checkpoint if isinstance(checkpoint, Mapping) else read_state_dict(checkpoint)
    config = checkpoint_config(checkpoint, state, variant, config)
    return model_with_weights(config, state, _source_label(checkpoint), device).to(device).eval()


def checkpoint_config(
    checkpoint: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    variant: str | None = None,
    config: DocSAMConfig | None = None,
) -> DocSAMConfig:
    """The architecture to build for a checkpoint (`state`, read from `checkpoint`): `config`, else
    `variant`, else the config stored in a safetensors file written by this package, else the variant
    detected from the weights (official `.pth` files store no config). An option given wins over what the
    file says; weights that do not fit it are then refused by `load_weights`."""
    if config is not None:
        return config
    if variant is not None:
        return variant_config(variant)
    if not isinstance(checkpoint, Mapping):
        stored = stored_config(checkpoint)
        if stored is not None:
            return stored
    return variant_config(detect_variant(state, _source_label(checkpoint)))


def _source_label(checkpoint: str | os.PathLike[str] | Mapping[str, torch.Tensor]) -> str:
    """How error messages name a checkpoint: its path, or 'state dict' for one passed in memory."""
    return "state dict" if isinstance(checkpoint, Mapping) else str(checkpoint)


def save_model(
    model: DocSAMModel,
    path: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    dataset: str | None = None,
    patch: Sequence[int] | None = None,
    keep_size: bool | None = None,
    short_range: Sequence[int] | None = None,
) -> None:
    """Write the model's weights and its config to one safetensors file.

    The names are the model's own `state_dict` names, the backbone's those of transformers' `SwinBackbone`
    (`backbone.swin.…`, without the relative-position indices it computes); `to_reference_keys` gives the
    official ones. `classes` (the class names trained, without the background prompt) and `dataset` (the
    name in `"<dataset> _background_"`) are stored when given, for `stored_classes`: `docsam segment` then
    prompts the model with them when asked for no classes. `patch` (the training crop, height and width) is
    stored when given, for `stored_patch`: `docsam segment`'s default window; `keep_size` (whether training
    kept the page's size) and `short_range` (its short-side range) too, for `stored_keep_size` and
    `stored_short_range`: `docsam segment`'s default rule and short side.
    """
    metadata = {
        CONFIG_METADATA_KEY: json.dumps(model.config.to_dict()),
        **training_metadata(classes, dataset, patch, keep_size, short_range),
    }
    write_safetensors(model.state_dict(), path, metadata)


def training_metadata(
    classes: Sequence[str] | None,
    dataset: str | None,
    patch: Sequence[int] | None = None,
    keep_size: bool | None = None,
    short_range: Sequence[int] | None = None,
) -> dict[str, str]:
    """The safetensors metadata that `stored_classes`, `stored_patch`, `stored_keep_size` and
    `stored_short_range` read back: `classes`, `dataset`, `patch`, `keep_size` and `short_range`, those given.

    Raises ValueError when `classes` are not distinct, non-empty names, `patch` not two positive sides or
    `short_range` not two positive sides, low first."""
    metadata: dict[str, str] = {}
    if classes is not None:
        if not _is_class_list(list(classes)):
            raise ValueError(f"classes must be distinct, non-empty names; got {list(classes)!r}")
        metadata[CLASSES_METADATA_KEY] = json.dumps(list(classes), ensure_ascii=False)
    if dataset is not None:
        metadata[DATASET_METADATA_KEY] = dataset
    if patch is not None:
        if not _is_patch(list(patch)):
            raise ValueError(f"patch must be two positive integers; got {list(patch)!r}")
        metadata[PATCH_METADATA_KEY] = json.dumps(list(patch))
    if keep_size is not None:
        metadata[KEEP_SIZE_METADATA_KEY] = json.dumps(keep_size)
    if short_range is not None:
        if not _is_short_range(list(short_range)):
            raise ValueError(
                f"short_range must be two positive integers, low first; got {list(short_range)!r}"
            )
        metadata[SHORT_RANGE_METADATA_KEY] = json.dumps(list(short_range))
    return metadata
