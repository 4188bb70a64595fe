"""The run's records in its output folder.

* `run.json`: the command and the option values the run was started with (what `--config` replays), the
  working folder its relative paths are from, the process count, and what a resumed run must share with it
  (seed, batch size, datasets, processes).
* `log.jsonl`: one JSON line per logged step or validation, plus TensorBoard scalars when the
  `tensorboard` package is installed. On resume the lines (and TensorBoard events) written after the resumed
  checkpoint (by the interrupted process) are dropped first, so the file reads as if the run had never
  stopped.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from docsam_cli.atomic import atomic_open, atomic_write_text
from docsam_cli.errors import InputError

LOG_FILE = "log.jsonl"
RUN_FILE = "run.json"
FOLDER_KEY = "folder"  # in run.json: the working folder the run was started in, which its paths are from


def write_run_file(
    output: Path, record: Mapping[str, Any], world_size: int, identity: Mapping[str, Any]
) -> None:
    """`run.json`: `record` (`{"command", "settings"}` from the command line) and the run's shape."""
    try:
        with atomic_open(output / RUN_FILE) as handle:
            json.dump({**record, "world_size": world_size, "identity": dict(identity)}, handle, indent=1)
            handle.write("\n")
    except OSError as error:
        raise write_failure(output / RUN_FILE, "the run's record", error) from None


def recorded_world_size(output: Path) -> int | None:
    """The process count `run.json` records (None without one, or from a version that kept none)."""
    try:
        world_size = json.loads((output / RUN_FILE).read_text(encoding="utf-8")).get("world_size")
    except (OSError, ValueError, AttributeError):
        return None
    return world_size if isinstance(world_size, int) else None


def write_failure(target: Path, what: str, error: OSError) -> InputError:
    """The one error line of `what` that could not be written as `target` (a full disk names no file): the
    run stops there (exit 1)."""
    return InputError(target, f"cannot write {what}: {error.strerror or error}")


def run_settings(data: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(recording command, option values) of a `run.json`; any other mapping is option values only. Raises
    ValueError for a run.json whose settings are no mapping."""
    if "settings" in data and "command" in data:
        if not isinstance(data["settings"], Mapping):
            raise ValueError("its settings are no mapping of option names to values")
        return data["command"], dict(data["settings"])
    return None, dict(data)


def read_log(output: Path) -> list[dict[str, Any]]:
    """The records of `log.jsonl`. A line that is no record is left out: the torn last line of a run that
    stopped while writing it (a full disk, a crashed node), which would otherwise stop `--resume`."""
    path = output / LOG_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


class RunLog:
    """Appends records (rank 0 only); `start_step` truncates records of later steps left by a killed run."""

    def __init__(self, output: Path, start_step: int) -> None:
        self.path = output / LOG_FILE
        kept = [record for record in read_log(output) if record["step"] <= start_step]
        try:
            # Replaced, not rewritten in place: a resume on a full disk would cut the run's history short.
            atomic_write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept))
            self._handle = self.path.open("a", encoding="utf-8")
        except OSError as error:
            raise write_failure(self.path, "the training log", error) from None
        self._tensorboard = _tensorboard_writer(output / "tensorboard", start_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._handle.write(json.dumps(record) + "\n")
            self._handle.flush()
        except OSError as error:
            raise write_failure(self.path, "the training log", error) from None
        if self._tensorboard is not None:
            for name, value in _scalars(record):
                self._tensorboard.add_scalar(name, value, record["step"])

    def close(self) -> None:
        self._handle.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def _scalars(record: dict[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    scalars = []
    for key, value in record.items():
        if key == "step":
            continue
        if isinstance(value, dict):
            scalars += _scalars(value, f"{prefix}{key}/")
        elif isinstance(value, int | float):
            scalars.append((prefix + key, float(value)))
    return scalars


def _tensorboard_writer(folder: Path, first_step: int):
    """TensorBoard's writer for the run's scalars from `first_step` on: the events an earlier process wrote
    for that step and later ones (a stopped run's, after the checkpoint the run resumes from) are purged,
    as those lines of log.jsonl are dropped."""
    if importlib.util.find_spec("tensorboard") is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(folder), purge_step=first_step)
