"""How the processes of one `docsam segment` run share it: alone (`Alone`), or as the ranks of a launcher
such as torchrun or srun (`Ranks`). `join` picks the one the environment describes.

The work split under a launcher:

* Rank 0 lists the work once (inputs expanded, PDF page counts and TIFF frames read, in the order a single
  process takes them) and sends the list to every rank, so every rank holds the very same list, even if
  an input folder changes while the run starts. A path in it is read by each rank as named: one given
  relative to rank 0's working folder stops the run at the start if a rank works in another folder.
* Ranks claim the items of that list one at a time from a counter in the launcher's store (`store.add`,
  atomic; PyTorch's own c10d store, which torchrun already runs). A rank busy with a costly page simply
  claims fewer others, so the load balances itself whatever the pages cost: a 100-page PDF beside single
  images is spread page by page over every rank. A rank holds at most its decoding look-ahead beyond the
  page it segments, so the run ends within about one page of the same time on every rank. A static split
  (every N-th page) cannot adapt to pages of unequal cost or to ranks of unequal speed.
* The queue lives only in the store: a killed run leaves nothing of it behind, and a rerun lists the work
  again; each page's record (written last, atomically) says whether it is done.

What each rank shows: its own `error:` lines on stderr; its JSON lines in `<out>/jsonl/rank-<K>.jsonl`
(several processes writing long lines to one stdout would interleave them); progress counted in the store
and shown, as one bar for the whole run, by rank 0, which also writes the run-level files and the summary
once every rank is done.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from docsam_cli.console import Reporter, filtered_logs
from docsam_cli.errors import InputError, UsageError
from docsam_cli.inputs import PageTask
from docsam_cli.names import display_path
from docsam_cli.writers.page_outputs import STATE_DIR

if TYPE_CHECKING:
    from torch.distributed import Store

    from docsam_cli.distributed import Distributed

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")
Summary = TypeVar("Summary")
Result = TypeVar("Result")

# Rank 0 lists the work while the others wait, and at the end each rank waits for the slowest one's last
# pages: a collective may wait this long (listing a very large batch of PDFs takes a while).
TIMEOUT = timedelta(hours=6)
PROGRESS_POLL_SECONDS = 0.5
JSONL_DIR = "jsonl"
# An interrupted run's rank 0 waits this long at most for the other ranks to finish writing their pages
# before it writes the run-level files over the pages done: the launcher kills the ranks outright 30 s after
# its SIGTERM (torchrun; Slurm's default KillWait), which must leave rank 0 time to write them.
STOPPING_SECONDS = 15.0
STOPPING_POLL_SECONDS = 0.1


def join(device: str, out: Path, jsonl: bool) -> Alone | Ranks:
    """This process's part of a run writing into `out` (and JSON lines if `jsonl`): `Ranks` when a launcher
    started several processes, else `Alone`."""
    from docsam_cli.distributed import launched_world_size, setup

    if launched_world_size() <= 1:
        return Alone(out, jsonl)
    # The processes only exchange small messages, through the launcher's store, so several may share a GPU:
    # on a GPU much of a page's time is host work (encoding, writing, launching kernels), which more
    # processes do side by side.
    return Ranks(setup(device, timeout=TIMEOUT, share_gpus=True, process_group=False), out, jsonl)


def rank_jsonl_path(out: Path, rank: int) -> Path:
    return out / JSONL_DIR / f"rank-{rank}.jsonl"


class Alone:
    """A run in one process: the work is taken lazily, in order; messages go to the caller's reporter.
    Given its output folder, it removes what an earlier run under a launcher left there, as `Ranks` does:
    its JSON lines go to stdout, and the ranks' files would pass for this run's."""

    is_main = True
    device: str | None = None  # the request's own

    def __init__(self, out: Path | None = None, jsonl: bool = False) -> None:
        self.out = out
        self.jsonl = jsonl
        self._failures = 0

    def on_main(self, action: Callable[[], Result]) -> Result:
        return action()

    def report_failure(self, error: Exception) -> None:
        pass

    def store_lost(self, error: Exception) -> UsageError | None:
        return None

    def share_work(self, make: Callable[[], Iterable[Item]]) -> Iterable[Item]:
        if self.out is not None:
            _remove_stale_state(self.out, jsonl=self.jsonl)
        return make()

    def claim(self, work: Iterable[Item]) -> Iterator[tuple[int, Item]]:
        return enumerate(work)

    def no_path_on_stdin(self) -> None:
        """An empty list on stdin is nothing to do (`find -newer stamp | docsam segment -`)."""

    def look_ahead(self, workers: int, pages_per_batch: int) -> int:
        """Pages decoded ahead of the model: enough to keep it fed through pages of unequal cost."""
        return 2 * workers

    def count_failure(self) -> None:
        self._failures += 1

    def failures(self) -> int:
        return self._failures

    def reporter(self, inner: Reporter) -> Reporter:
        return inner

    def warnings_once(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def conclude(self, outcome: Outcome, conclude: Callable[[list[Outcome]], Summary]) -> Summary:
        """`conclude` over what this process did (the run's summary)."""
        return conclude([outcome])

    def await_stopped(self) -> None:
        pass

    def close(self) -> None:
        pass


class Ranks:
    """One rank of a run spread over a launcher's processes (see the module's docstring)."""

    def __init__(self, distributed: Distributed, out: Path, jsonl: bool) -> None:
        self.distributed = distributed
        self.rank = distributed.rank
        self.is_main = distributed.is_main
        self.device = str(distributed.device)
        self.out = out
        self.jsonl = rank_jsonl_path(out, self.rank) if jsonl else None
        self.counters: StoreCounters | None = None  # once the work is shared
        self._marker: Path | None = None
        self._reporter: RankReporter | None = None

    def share_work(self, make: Callable[[], Iterable[Item]]) -> list[Item]:
        """Rank 0 runs `make` and every rank gets its list. Until then no rank writes: rank 0 (and `make`)
        may clean what a killed run left (a failure stops every rank: `report_failure`). Raises UsageError on
        every rank if some rank does not see the output folder rank 0 writes in."""
        out = self.out

        def listed() -> tuple[str, str | None, list[Any]]:
            _remove_stale_state(out, jsonl=self.jsonl is not None)
            work = [_Portable.of(item) for item in make()]
            run_id = uuid.uuid4().hex
            _marker_path(out, run_id).touch()
            return run_id, working_folder(), work

        run_id, folder, work = self.on_main(listed)
        self.counters = StoreCounters(self.distributed.store, f"docsam-segment/{run_id}/")
        self._marker = _marker_path(out, run_id)
        seen = self.distributed.gather((self._marker.exists(), working_folder()))
        blind = [rank for rank, (sees, _) in enumerate(seen) if not sees]
        elsewhere = [rank for rank, (_, there) in enumerate(seen) if there != folder]
        if blind:
            raise UsageError(
                f"--out {display_path(out)}: rank {', '.join(map(str, blind))} cannot see the files rank 0 "
                f"writes there{_blind_reason(out, folder, moved=set(blind) <= set(elsewhere))}"
            )
        if folder is not None and elsewhere and any(_reads_relative_path(item) for item in work):
            raise other_working_folder(elsewhere, folder, "the inputs")
        return [_Portable.restore(item) for item in work]

    def on_main(self, action: Callable[[], Result]) -> Result:
        """`action()` run by rank 0, its result sent to every rank. If it fails, rank 0 raises its error
        (and `report_failure` stops the others)."""
        return self.distributed.from_main(action() if self.is_main else None)

    def report_failure(self, error: Exception) -> None:
        """This rank stops the run: the other ranks stop at their next exchange, with `error`'s message,
        instead of waiting for this one (for hours under srun, where no torchrun stops them)."""
        self.distributed.report_failure(str(error) or type(error).__name__)

    def store_lost(self, error: Exception) -> UsageError | None:
        """What stops this rank if `error` is the run's store failing to answer: the process holding it
        (rank 0 under srun or another launcher that sets MASTER_ADDR, torchrun's own under torchrun) is
        gone, killed outright, so the run cannot go on (a rerun does the pages left); None for any other
        error."""
        from torch.distributed import DistNetworkError

        if not isinstance(error, DistNetworkError):
            return None
        logger.debug("the store stopped answering: %s", error)
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        return UsageError(
            f"the run's store at {where} stopped answering: the process holding it (rank 0, or torchrun) "
            "was killed or ran out of memory?; a rerun does the pages left"
        )

    def no_path_on_stdin(self) -> None:
        """Rank 0, listing the work, read no path on stdin: nothing to do from it, as for one process, but
        said, since under a launcher stdin is read by rank 0 alone, which may run on a machine whose stdin
        is empty (`srun --input`, a torchrun started there by hand) while the list went to another."""
        logger.warning(
            "-: no path on stdin: under a launcher only rank 0 reads the paths on stdin, and its stdin (on "
            "%s) held none; give rank 0 the list there (`docsam segment - < list.txt` on its machine), or "
            "name the inputs as arguments (files, folders, globs)",
            socket.gethostname(),
        )

    def claim(self, work: Sequence[Item]) -> Iterator[tuple[int, Item]]:
        """The items this rank takes, each claimed when the caller asks for the next one."""
        return self._counters().claim(work)

    def look_ahead(self, workers: int, pages_per_batch: int) -> int:
        """Pages decoded ahead of the model, each claimed when its decoding starts: one per decoding thread,
        or the next batch of pages, so that at the end of the list no rank holds many pages the others
        could have taken."""
        return max(workers, pages_per_batch)

    def count_failure(self) -> None:
        self._counters().add("failed")

    def failures(self) -> int:
        """Pages failed so far on every rank."""
        return self._counters().read("failed")

    def reporter(self, inner: Reporter) -> RankReporter:
        self._reporter = RankReporter(inner, self, self.jsonl)
        return self._reporter

    def warnings_once(self) -> contextlib.AbstractContextManager[None]:
        """Within the block, each `warning:` line is shown by the first rank to log it, the others' left out:
        what a run warns of once the pages are shared (class names its overlays draw as boxes) holds for
        every rank, and was said by each."""
        return filtered_logs(self._first_to_warn)

    def _first_to_warn(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or self.counters is None:
            return True
        text = record.getMessage().encode("utf-8", "surrogatepass")
        try:
            return self.counters.add(f"warned/{hashlib.sha256(text).hexdigest()}") == 1
        except Exception:  # the store is gone with the launcher: said again rather than not at all
            return True

    def count_progress(self) -> None:
        """One more item accounted for."""
        self._counters().add("progress")

    def progress(self) -> int:
        """Items accounted for so far on every rank (0 until the work is shared)."""
        return self.counters.read("progress") if self.counters is not None else 0

    def conclude(self, outcome: Outcome, conclude: Callable[[list[Outcome]], Summary]) -> Summary:
        """Once every rank is done: rank 0 runs `conclude` over every rank's outcome (rank order) and every
        rank gets its result. Nothing is left to do on rank 0 after that: when ranks exit with a failure,
        torchrun stops the ranks still running."""
        outcomes = self.distributed.gather(outcome)
        summary = None
        if self.is_main:
            summary = conclude(outcomes)
            if self._marker is not None:
                self._marker.unlink(missing_ok=True)
        return self.distributed.from_main(summary)

    def await_stopped(self) -> None:
        """Wait until every other rank has stopped writing pages (`close`), `STOPPING_SECONDS` at most (a
        rank killed outright never says so) and not at all once the store is gone: an interrupted run's
        rank 0 then writes the run-level files over every page whose record is written, the other ranks'
        last pages included, which they finish writing after the signal too."""
        if self.counters is None:
            return
        others = [self._stopped_key(rank) for rank in range(self.distributed.world_size) if rank != self.rank]
        deadline = time.monotonic() + STOPPING_SECONDS
        try:
            while not self.distributed.store.check(others) and time.monotonic() < deadline:
                time.sleep(STOPPING_POLL_SECONDS)
        except Exception:  # the store is gone with the launcher: no rank is left to wait for
            logger.debug("the other ranks' stop cannot be read", exc_info=True)

    def close(self) -> None:
        """Say in the store that this rank writes no more pages (best effort: the store may be gone), then
        stop its reporter and beats."""
        if self.counters is not None:
            with contextlib.suppress(Exception):
                self.distributed.store.set(self._stopped_key(self.rank), b"")
        if self._reporter is not None:
            self._reporter.close()
        self.distributed.close()  # a segment run joins no process group: nothing else to tear down

    def _stopped_key(self, rank: int) -> str:
        return f"{self._counters().prefix}stopped/{rank}"

    def _counters(self) -> StoreCounters:
        if self.counters is None:
            raise RuntimeError("the work has not been shared yet")
        return self.counters


class StoreCounters:
    """Counters every rank shares, in a `torch.distributed.Store` under `prefix` (one run's: a store may
    outlive a run, as torchrun's does across restarts). `Store.add` is atomic, so each value of a counter
    goes to one caller only."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.store = store
        self.prefix = prefix

    def add(self, name: str) -> int:
        """Count one more; returns the new value."""
        return self.store.add(self.prefix + name, 1)

    def read(self, name: str) -> int:
        return self.store.add(self.prefix + name, 0)

    def claim(self, work: Sequence[Item]) -> Iterator[tuple[int, Item]]:
        """(index, item) of the items of `work` this caller takes, each claimed as the next one is asked
        for: whoever asks first gets the next item, so faster callers take more."""
        while (index := self.add("next") - 1) < len(work):
            yield index, work[index]


class RankReporter:
    """One rank's `Reporter`: its `error:` lines through `inner`; its JSON lines into its own file; progress
    counted over every rank and shown, with the summary, by rank 0 only."""

    def __init__(self, inner: Reporter, ranks: Ranks, jsonl: Path | None) -> None:
        self.inner = inner
        self.ranks = ranks
        self.jsonl = jsonl
        self._lines: IO[str] | None = None
        self._shown = 0
        self._stop = threading.Event()
        self._mirror: threading.Thread | None = None

    def start(self, label: str) -> None:
        if self.ranks.is_main:
            self.inner.start(label)
            self._mirror = threading.Thread(target=self._mirror_progress, name="docsam-progress", daemon=True)
            self._mirror.start()

    def advance(self) -> None:
        self.ranks.count_progress()

    def error(self, message: str) -> None:
        self.inner.error(message)

    def data(self, line: str) -> None:
        """Appended to this rank's file, opened at the first line (by then rank 0 has removed the files of
        an earlier run) and flushed line by line, so `tail -f` follows it."""
        if self.jsonl is None:
            return
        if self._lines is None:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            self._lines = self.jsonl.open("w", encoding="utf-8")
        self._lines.write(line)
        self._lines.flush()

    def summary(self, lines: Sequence[str]) -> None:
        self.close()
        if self.ranks.is_main:
            self._catch_up()
            self.inner.summary(lines)

    def close(self) -> None:
        self._stop.set()
        if self._mirror is not None:
            self._mirror.join()
            self._mirror = None
        if self._lines is not None:
            self._lines.close()
            self._lines = None

    def _mirror_progress(self) -> None:
        while not self._stop.wait(PROGRESS_POLL_SECONDS):
            try:
                self._catch_up()
            except Exception:  # the store went away (a rank died): the run is ending anyway
                logger.debug("progress: the store cannot be read", exc_info=True)
                return

    def _catch_up(self) -> None:
        total = self.ranks.progress()
        for _ in range(total - self._shown):
            self.inner.advance()
        self._shown = max(self._shown, total)


@dataclass(frozen=True)
class _Portable:
    """An InputError as it travels between ranks (an exception does not pickle with its fields)."""

    path: Path
    reason: str
    page: int | None

    @staticmethod
    def of(item: Any) -> Any:
        return _Portable(item.path, item.reason, item.page) if isinstance(item, InputError) else item

    @staticmethod
    def restore(item: Any) -> Any:
        return InputError(item.path, item.reason, item.page) if isinstance(item, _Portable) else item


def working_folder() -> str | None:
    """This process's working folder; None if it has none (removed since the process started in it)."""
    try:
        return os.getcwd()
    except OSError:
        return None


def other_working_folder(ranks: Sequence[int], folder: str, paths: str) -> UsageError:
    """The refusal of a run whose `ranks` work in another folder than rank 0's working `folder` while
    `paths` (a plural: "the inputs") are relative: each rank would read them from its own working folder,
    another file there or none."""
    return UsageError(
        f"rank {', '.join(map(str, ranks))} runs in another working folder than rank 0 "
        f"({display_path(folder)}): {paths} are named by relative paths, which each rank reads from its own "
        f"working folder; start every rank in the same folder, or give {paths} as absolute paths"
    )


def _blind_reason(out: Path, folder: str | None, moved: bool) -> str:
    """Why ranks miss the output folder rank 0 writes in: a relative `out`, read by ranks in another working
    folder than rank 0's (`moved`), names another folder there; else the folder is on no shared file
    system."""
    if moved and folder is not None and not out.is_absolute():
        return (
            f": it runs in another working folder than rank 0 ({display_path(folder)}), from which a "
            "relative --out names another folder; start every rank in the same folder, or give --out as an "
            "absolute path"
        )
    return "; with several machines, --out must be on a file system they share"


def _reads_relative_path(item: Any) -> bool:
    """Whether a work item is a page read from a file named by a relative path, which each rank reads from
    its own working folder (an input that gave no page is only reported)."""
    return isinstance(item, PageTask) and not item.source.is_absolute()


def _marker_path(out: Path, run_id: str) -> Path:
    """A file rank 0 creates at start: every rank must see it, or --out is not shared by the machines."""
    return out / STATE_DIR / f"run-{run_id}"


def _remove_stale_state(out: Path, jsonl: bool) -> None:
    """What an earlier run left: its marker (if it was killed) and, when this run writes JSON lines, its
    ranks' JSON-lines files (it may have had more ranks than this one, or this one prints them on stdout).
    Called under the folder's lock, before any page."""
    state = out / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    stale = [*state.glob("run-*"), *((out / JSONL_DIR).glob("rank-*.jsonl") if jsonl else ())]
    for path in stale:
        logger.debug("removing %s, left by an earlier run", display_path(path))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
