"""The `docsam segment` batch: a request in, per-page outputs written atomically, a summary out.

`run_segment` is the whole command as one call: check the output folder, find the model, segment every page,
write the run-level files, report through a `docsam_cli.console.Reporter`. Problems that stop the run
(an output folder that cannot be written, weights that cannot be found or do not load) are `UsageError`s;
a page that fails is reported and the batch goes on. The model (and torch) is loaded when the first
readable page needs it, so a batch of unreadable files is refused at once, in about a second.

Under a launcher (torchrun, srun) every process runs `run_segment`: they share the work as
`docsam_cli.batch_ranks` describes, and rank 0 writes the run-level files once every rank is done, over
the same pages in the same order as a single process would.

A page's outputs are written in one thread while the model segments the next pages; pages are reported
(JSON lines, errors, progress) in the order of the work list all the same. A page counts as done once its
record (`<out>/.docsam/records/<page_id>.json`) is written; that happens last, after every other output of
the page (a page being redone loses its earlier record first), and each file is written to a temporary
name and renamed. A run killed at any point therefore leaves only complete files, and a re-run redoes
exactly the pages without a record (or whose requested outputs are missing) — every page is done once. The
run-wide COCO files are assembled at the end (also of a run interrupted by Ctrl-C or SIGTERM) from the
per-page parts of every page done in the folder, this run's or not; if they cannot be written (a full
disk), the run says so and fails, and a re-run writes them. A record names its input's absolute path as
well, so that the page is recognised from any working folder; a page id whose record holds another input's
outputs (`a/scan.png` before, `b/scan.png` now) is refused, neither skipped nor overwritten. The folder
holds the results of one class list (`claim_classes`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from docsam_cli.atomic import atomic_write_text, can_write_in, is_temporary
from docsam_cli.batch_ranks import Alone, Ranks, join
from docsam_cli.console import RUN_WIDE, Reporter
from docsam_cli.distributed import launched_rank
from docsam_cli.errors import ExitCode, InputError, UsageError
from docsam_cli.folder_lock import created_by_locking, folder_lock, folder_replaced, remove_unused_folder
from docsam_cli.inputs import (
    Document,
    LoadOptions,
    Page,
    PageTask,
    collect_documents,
    iter_page_tasks,
    prefetch,
    set_max_image_pixels,
)
from docsam_cli.inputs.files import file_state
from docsam_cli.inputs.sources import input_key, stem_key
from docsam_cli.inputs.tasks import page_id_suffix
from docsam_cli.names import display_path, one_line, output_text
from docsam_cli.runtime import LoadedModel, describe_geometry, resolve_model
from docsam_cli.segment_request import SegmentRequest
from docsam_cli.weights import WeightsError
from docsam_cli.writers.jsonl import dumps_record, error_record
from docsam_cli.writers.page_outputs import (
    RECORDS,
    STATE_DIR,
    STORED_INPUT,
    OutputSettings,
    PageSource,
    PageWriter,
    drop_label_maps,
    nameable,
    output_folders,
    page_folders,
    written_folders,
)
from model.instances import PageInstances

if TYPE_CHECKING:
    from model.inference import Geometry

logger = logging.getLogger(__name__)

Segmenter = Callable[[Sequence[np.ndarray]], list[PageInstances]]
WorkItem = PageTask | InputError  # a page to do, or an input that gave no page
CLASSES_FILE = "classes.json"  # in STATE_DIR: the classes of the folder's results
STEMS_FILE = "stems.json"  # in STATE_DIR: the stem of every file a run listed, by its real path
# In a stored record only (not in its JSON line), beside STORED_INPUT: the classes the page was segmented
# with (a page done with other classes is done again), and the input file's size and modification time (a
# file replaced at the same path, a rescan, is done again).
STORED_CLASSES = "classes"
STORED_FILE = "input_file"
_STORED_ONLY = (STORED_INPUT, STORED_CLASSES, STORED_FILE)


def run_segment(request: SegmentRequest, reporter: Reporter) -> RunSummary:
    """Segment every page of `request.inputs` into its outputs; the summary says what was done.

    Run by every process when a launcher (torchrun, srun) starts several: they share the pages (see
    `docsam_cli.batch_ranks`) and all return the same summary, the whole run's. Raises UsageError before
    any page when the output folder cannot be written or another run is writing into it
    (`docsam_cli.folder_lock`), the weights cannot be found or the device or
    precision is not available; and when the weights do not load, which is found when the first readable
    page needs them (torch itself is imported only then). A refused run leaves no trace of the output
    folder it created (`remove_unused_folder`).
    """
    created = created_by_locking(request.out)
    try:
        return _run_segment(request, reporter)
    except UsageError:
        if created is not None and launched_rank() == 0:  # the others would unlink rank 0's lock file
            remove_unused_folder(request.out, created, (CLASSES_FILE, STEMS_FILE))
        raise


def _run_segment(request: SegmentRequest, reporter: Reporter) -> RunSummary:
    prepare_output_folder(request.out)
    check_written_folders(request.out, written_folders(request.out, request.formats))
    processes = join(request.model.device, request.out, jsonl="jsonl" in request.formats)
    with contextlib.ExitStack() as locked:

        def claim_folder() -> None:
            with folder_state_writes(request.out):
                locked.enter_context(folder_lock(request.out))
                claim_classes(request.out, request.class_names, overwrite=request.overwrite)

        try:
            # The weights, device and precision first: a run refused for them leaves the folder as it was
            # (with --overwrite and other classes, claiming it drops its label maps).
            try:
                model = resolve_model(replace(request.model, device=processes.device or request.model.device))
            except WeightsError as error:
                raise UsageError(str(error)) from None
            processes.on_main(claim_folder)  # under a launcher the other ranks share rank 0's lock
            logger.info(
                "classes: %s; domain %r", ", ".join(request.class_names), request.domain, extra=RUN_WIDE
            )
            set_max_image_pixels(request.max_image_pixels)

            def load_segmenter() -> Segmenter:
                from model import CheckpointError  # imports torch: only now that a page needs the model

                try:
                    geometry = request.geometry.resolve(model.weights)
                    logger.info("geometry: %s", describe_geometry(geometry), extra=RUN_WIDE)
                    loaded = model.load()
                except CheckpointError as error:
                    raise UsageError(str(error)) from None
                return model_segmenter(loaded, request, geometry)

            def list_work() -> Iterable[WorkItem]:
                earlier = read_stems(request.out)
                documents = collect_documents(
                    request.inputs,
                    recursive=request.recursive,
                    skip_folders=page_folders(request.out),
                    earlier_stems=earlier,
                    on_empty_stdin=processes.no_path_on_stdin,
                )
                with folder_state_writes(request.out):
                    record_stems(request.out, earlier, documents)
                logger.info("inputs: %d files", sum(not isinstance(item, InputError) for item in documents))
                options = LoadOptions(dpi=request.dpi, pages=request.pages, password=request.password)
                return iter_page_tasks(documents, options)

            run = SegmentRun(request, load_segmenter, processes.reporter(reporter), processes)
            with processes.warnings_once():
                return run.run(list_work)
        except Exception as error:
            processes.report_failure(error)
            if (lost := processes.store_lost(error)) is not None:
                raise lost from error
            raise
        finally:
            processes.close()


def prepare_output_folder(out: Path) -> None:
    """Create `out` if needed and make sure a file can be written in it. Raises UsageError naming the
    folder and the reason (it is a file, it cannot be created, it is read-only)."""
    for folder in (out, *output_folders(out)):
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--out {display_path(folder)}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"--out {display_path(out)}: cannot create the folder: {_os_reason(error)}"
        ) from None
    if (error := can_write_in(out)) is not None:
        raise _cannot_write_in(out, error)


def check_written_folders(out: Path, folders: Iterable[Path]) -> None:
    """Make sure a file can be written in each of `folders` under `out` that the run writes and that exists
    (one that does not is made in a folder found writable, each listed after the folder holding it), before
    the model is loaded: a read-only `page/` (a colleague's) would otherwise fail every page, each after the
    model, and a read-only `checkpoints/` a training run at its first checkpoint, after hours of steps.
    Raises UsageError naming it."""
    for folder in folders:
        if folder.is_dir() and (error := can_write_in(folder)) is not None:
            raise UsageError(
                f"--out {display_path(out)}: cannot write in {display_path(folder)}: {_os_reason(error)}"
            )


@contextlib.contextmanager
def folder_state_writes(out: Path) -> Iterator[None]:
    """Around the writes of the folder's own state before any page (the lock's process id, the classes,
    the stems): one that fails (a full disk, which the empty probe of `prepare_output_folder` does not
    find) makes the folder unusable, a UsageError naming it and the reason."""
    try:
        yield
    except OSError as error:
        raise _cannot_write_in(out, error) from None


def _cannot_write_in(out: Path, error: OSError) -> UsageError:
    return UsageError(f"--out {display_path(out)}: cannot write in the folder: {_os_reason(error)}")


def claim_classes(out: Path, class_names: Sequence[str], *, overwrite: bool) -> None:
    """Make `class_names` the classes of the output folder (`<out>/.docsam/classes.json`). They number the
    COCO categories and the semantic labels, so a folder holds the results of one class list: a run with
    other classes (or the same in another order) is refused before any page, unless `overwrite` or the
    folder holds no page yet (every input of the runs before failed). Other classes drop the folder's label
    maps (`drop_label_maps`). A folder whose classes.json is gone or unreadable is judged by its pages'
    records (`_other_classes_of_records`)."""
    path = out / STATE_DIR / CLASSES_FILE
    classes = _stored_classes(class_names)
    stored = _read_folder_classes(path)
    if stored is None:
        stored = _other_classes_of_records(out, classes)
    if stored == classes:
        return
    if stored is not None and not overwrite and _holds_pages(out):
        raise UsageError(
            f"--out {display_path(out)}: holds results for the classes {', '.join(map(str, stored))}, "
            f"not {', '.join(classes)} (use another --out, or --overwrite to redo its pages with these "
            "classes)"
        )
    if stored is not None:
        drop_label_maps(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(classes, ensure_ascii=False))


def _read_folder_classes(path: Path) -> list[str] | None:
    """The class list in `path` (classes.json), or None where it is missing, unreadable or not a list."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        logger.debug(
            "%s: unreadable, the classes are taken from the records", display_path(path), exc_info=True
        )
        return None
    return stored if isinstance(stored, list) else None


def _other_classes_of_records(out: Path, classes: list[str]) -> list[str] | None:
    """Classes other than `classes` that a page of `out` was segmented with (its record's), or None: the
    folder's classes where its classes.json is gone, so that the run is refused, or drops the label maps,
    as if it had been there. Records of a docsam that stored no classes do not count, as when skipping."""
    for path in sorted((out / STATE_DIR / RECORDS).glob("*.json")):
        try:
            stored = json.loads(path.read_text(encoding="utf-8")).get(STORED_CLASSES, classes)
        except (OSError, ValueError, AttributeError):
            continue  # unreadable: the page is redone
        if isinstance(stored, list) and stored != classes:
            return stored
    return None


def _holds_pages(out: Path) -> bool:
    return any((out / STATE_DIR / RECORDS).glob("*.json"))


def read_stems(out: Path) -> dict[str, str]:
    """The stems earlier runs gave their files in the output folder (`<out>/.docsam/stems.json`, by
    `input_key`), which `collect_documents` keeps. A folder without the index (written by an older docsam,
    or the index was deleted) has it rebuilt from its pages' records."""
    path = out / STATE_DIR / STEMS_FILE
    try:
        stems = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _stems_of_records(out)
    except (OSError, ValueError):
        logger.debug("%s: unreadable, rebuilt from the records", display_path(path), exc_info=True)
        return _stems_of_records(out)
    if not isinstance(stems, dict):
        return _stems_of_records(out)
    return {key: stem for key, stem in stems.items() if isinstance(stem, str) and stem}


def _stems_of_records(out: Path) -> dict[str, str]:
    """The stem of every input with a page record in `out` (a page id less its page suffix)."""
    stems: dict[str, str] = {}
    for path in (out / STATE_DIR / RECORDS).glob("*.json"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            source, page, page_id = record[STORED_INPUT], record["page"], record["page_id"]
        except (OSError, ValueError, TypeError, KeyError):
            continue  # unreadable, or from a docsam that stored no absolute path: the page is redone
        suffix = "" if page is None else page_id_suffix(page)
        if isinstance(source, str) and isinstance(page_id, str) and page_id.endswith(suffix):
            stems[input_key(Path(source))] = page_id.removesuffix(suffix)
    return stems


def record_stems(out: Path, earlier: dict[str, str], documents: Sequence[Document | InputError]) -> None:
    """Add this run's files to the stem index, before any page: a page's outputs are named by its stem. A
    file gone since (moved, say) loses its entry when its stem is given to another."""
    listed = {input_key(item.path): item.stem for item in documents if isinstance(item, Document)}
    given = {stem_key(stem) for stem in listed.values()}
    kept = {key: stem for key, stem in earlier.items() if key in listed or stem_key(stem) not in given}
    stems = {**kept, **listed}
    if stems != earlier or not (out / STATE_DIR / STEMS_FILE).is_file():
        atomic_write_text(out / STATE_DIR / STEMS_FILE, json.dumps(stems, indent=0))


def _stored_classes(class_names: Sequence[str]) -> list[str]:
    """Class names as the output folder stores them (`classes.json`, each page's record)."""
    return [output_text(name) for name in class_names]


def model_segmenter(loaded: LoadedModel, request: SegmentRequest, geometry: Geometry) -> Segmenter:
    """The loaded model as a `Segmenter`: pages in, instances out, with the request's prompts and batching."""

    from model.inference import segment_pages

    def segment(images: Sequence[np.ndarray]) -> list[PageInstances]:
        with loaded.autocast():
            return segment_pages(
                loaded.model,
                images,
                list(request.class_names),
                domain=request.domain,
                geometry=geometry,
                batch_size=request.batch_size,
                isolate_batch=request.isolate,
            )

    return segment


@dataclass
class ProcessOutcome:
    """What one process did. `failures` and `finished` (the ids of the pages done or skipped) come with
    the work-list index of their item, so that the outcomes of several processes combine in list order."""

    done: int = 0
    skipped: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)
    finished: list[tuple[int, str]] = field(default_factory=list)
    stopped_early: bool = False


@dataclass
class RunSummary:
    done: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)  # inputs and pages, each one message
    unwritten: list[str] = field(default_factory=list)  # the run's own files (coco.json) not written
    stopped_early: bool = False
    seconds: float = 0.0

    @classmethod
    def combine(cls, outcomes: Sequence[ProcessOutcome], seconds: float) -> RunSummary:
        """The run's summary from its processes' outcomes; failures in the order of the work list."""
        failures = sorted(pair for outcome in outcomes for pair in outcome.failures)
        return cls(
            done=sum(outcome.done for outcome in outcomes),
            skipped=sum(outcome.skipped for outcome in outcomes),
            failures=[message for _, message in failures],
            stopped_early=any(outcome.stopped_early for outcome in outcomes),
            seconds=seconds,
        )

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAILED if self.failures or self.unwritten or self.stopped_early else ExitCode.OK

    @property
    def pages_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """The summary as shown at the end of a run: counts, then each failure again."""
        counts = (
            f"{self.done} pages segmented, {self.skipped} skipped (already done), "
            f"{len(self.failures)} failed in {self.seconds:.1f} s ({self.pages_per_second:.2f} pages/s)"
        )
        if self.unwritten:
            counts += "; the run's files were not written"
        if self.stopped_early:
            counts += "; stopped early by the failure limit"
        return [counts, *(f"  failed: {message}" for message in [*self.failures, *self.unwritten])]


class SegmentRun:
    """One `docsam segment` process's share of a run, with a `Segmenter` (the model or a stand-in) made by
    `load_segmenter` when the first readable page needs it: a batch of unreadable files loads no model."""

    def __init__(
        self,
        request: SegmentRequest,
        load_segmenter: Callable[[], Segmenter],
        reporter: Reporter,
        processes: Alone | Ranks | None = None,
    ) -> None:
        self.request = request
        self.load_segmenter = load_segmenter
        self.reporter = reporter
        self.processes = processes or Alone()
        self.outcome = ProcessOutcome()
        self.writer = PageWriter(
            OutputSettings(
                out_dir=request.out,
                formats=request.formats,
                class_names=request.class_names,
                mask_format=request.mask_format,
                page_map=request.page_map,
                alto_map=request.alto_map,
            )
        )
        self.pages_per_batch = request.pages_per_batch if request.isolate else 1
        self._classes = _stored_classes(request.class_names)
        self._segmenter: Segmenter | None = None
        # Work index and page id (None for an input that gave no page) of the items handed to `prefetch`.
        self._decoding: deque[tuple[int, str | None]] = deque()
        # Pages found done as `prefetch` looks ahead, reported in turn: (work index, task, stored record),
        # the record None for a page waiting behind one not reported yet (read again when reported: a
        # rerun whose first page is redone finds every later page done while that page is in the model,
        # and their records could take gigabytes).
        self._skipped: deque[tuple[int, PageTask, dict[str, Any] | None]] = deque()
        self._unreported = 0  # items handed to `prefetch` and not reported yet: skipped pages wait for them
        self._write_pool: ThreadPoolExecutor | None = None  # threads writing behind the model, in `run`
        self._writing: deque[_Writing] = deque()  # pages handed to them, in work order
        # Pages are reported by the main thread and, as a page's writing ends, by its writing thread (while
        # the main one waits for the model): one at a time. What failed a writing thread's report (stdout
        # closed) is raised in the main thread.
        self._reporting = threading.RLock()
        self._report_error: Exception | None = None

    def run(self, list_work: Callable[[], Iterable[WorkItem]]) -> RunSummary:
        """Do this process's items of the work `list_work` gives (listed once per run). Once every process
        is done, the main one writes the run-level files and shows the summary; all return it. Interrupted
        at any point after the listing, also while the run-level files are written at the end, it writes
        them over the pages done (`_finish_interrupted`) before it lets the interruption go on."""
        started = time.perf_counter()
        self.reporter.start("segment")
        work = self.processes.share_work(lambda: self._prepare_then(list_work))
        workers = self.request.workers
        ahead = self.processes.look_ahead(workers, self.pages_per_batch)

        def conclude(outcomes: list[ProcessOutcome]) -> RunSummary:
            summary = RunSummary.combine(outcomes, time.perf_counter() - started)
            self._finish(summary, [pair for outcome in outcomes for pair in outcome.finished])
            self.reporter.summary(summary.lines())
            return summary

        try:
            with (
                ThreadPoolExecutor(
                    max_workers=self.request.writers, thread_name_prefix="docsam-write"
                ) as self._write_pool,
                contextlib.closing(
                    prefetch(self._pending(self.processes.claim(work)), workers=workers, ahead=ahead)
                ) as items,
            ):
                try:
                    self._take(items)
                finally:  # also when interrupted: the pages being written are finished, and reported
                    self._collect_writes()
            if self.outcome.stopped_early:  # pages found done ahead, past the stop: the run never got there
                self._skipped.clear()
            self._report_skipped()
            return self.processes.conclude(self.outcome, conclude)
        except KeyboardInterrupt:
            self._finish_interrupted()
            raise

    def _prepare_then(self, list_work: Callable[[], Iterable[WorkItem]]) -> Iterable[WorkItem]:
        """Before any page is written (on the main process): what killed runs left is removed and the class
        table written (`PageWriter.start`); then the work is listed. A table that cannot be written stops
        the run, a UsageError naming it: the maps would lie beside an earlier table, or none."""
        self._remove_stale_temporaries()
        try:
            self.writer.start()
        except OSError as error:
            where = display_path(_os_path(error) or self.request.out)
            raise UsageError(f"{where}: cannot write the run's files: {_os_reason(error)}") from None
        return list_work()

    def _remove_stale_temporaries(self) -> None:
        """Temporary files a killed run left behind (`.<name>.<random>.tmp`, never an output): no other
        run is writing into the folder (`folder_lock`); under a launcher only rank 0 cleans, before any
        rank writes."""
        for folder in output_folders(self.request.out):
            for path in filter(is_temporary, folder.glob(".*.tmp")):
                logger.debug("removing %s, left by an interrupted run", display_path(path))
                path.unlink(missing_ok=True)

    def _finish_interrupted(self) -> None:
        """The run-level files of an interrupted run, over the pages done so far (on the main process, which
        also counts the other processes' pages done by their records, once they have finished writing the
        pages they held), so that `coco.json` holds the pages reported. A second
        signal stops it; the files being written are then left as they were (atomic writes)."""
        if self.processes.is_main:
            self.processes.await_stopped()
            self._finish(RunSummary(), self.outcome.finished)

    def _finish(self, summary: RunSummary, finished: list[tuple[int, str]]) -> None:
        """The run-level files over the pages done or skipped, in the order of the work list. Failing to
        write them fails the run; the pages stay done. A folder removed while the run wrote in it lost the
        pages written before, which files over the pages left would leave out though the run reported them."""
        if folder_replaced(self.request.out):
            message = (
                f"--out {display_path(self.request.out)}: the folder was removed while the run wrote in "
                "it, with the pages written before; the run's files were not written (a re-run redoes those "
                "pages)"
            )
            summary.unwritten.append(message)
            self.reporter.error(message)
            return
        try:
            self.writer.finish([page_id for _, page_id in sorted(finished)])
        except OSError as error:
            where = display_path(_os_path(error) or self.request.out)
            message = f"{where}: cannot write the run's files: {_os_reason(error)} (a re-run writes them)"
            summary.unwritten.append(message)
            self.reporter.error(message)

    # --- per page --------------------------------------------------------------------------------

    def _pending(self, claimed: Iterable[tuple[int, WorkItem]]) -> Iterator[WorkItem]:
        """The claimed items still to do, for `prefetch`; pages done by an earlier run are reported as
        skipped (their stored record re-emitted) and not passed on: at once when every item before them
        is reported, so that a rerun over thousands of done pages shows them as it goes, not all at its
        end, holding their records until then."""
        for index, item in claimed:
            page_id = item.page_id if isinstance(item, PageTask) else None
            with self._reporting:
                if isinstance(item, PageTask) and not self.request.overwrite:
                    item = self._unless_done(index, item)
                    if item is None:
                        if not self._unreported:
                            self._report_skipped()
                        continue
                self._decoding.append((index, page_id))
                self._unreported += 1
            yield item

    def _unless_done(self, index: int, task: PageTask) -> WorkItem | None:
        """None if the page is done (reported as skipped); an InputError if its id holds another input's
        outputs; else the task."""
        record = self._stored_record(task.page_id)
        if record is None:
            return task
        if not _same_input(record, task.source):
            return InputError(
                task.source,
                f"page id {task.page_id} already holds the outputs of {one_line(record['input'])} in this "
                "output folder (use another --out, or --overwrite)",
                task.page,
            )
        if STORED_FILE in record and record[STORED_FILE] != file_state(task.source):
            return task  # the file was replaced since (a rescan saved over the old one)
        if STORED_FILE not in record and task.kind == "image" and task.frame != (task.page or 1) - 1:
            return task  # done by a docsam that took every TIFF frame, thumbnails too, for a page
        in_document = _own_image(task, record)
        if not self.writer.is_done(task.page_id, in_document=in_document):
            return task  # an output asked for now is missing: redo the page
        if not _written_with(record, self.writer.files(task.page_id).listed(in_document)):
            return task  # an output asked for now is an earlier record's, stale since the page was redone
        if record.get(STORED_CLASSES, self._classes) != self._classes:
            return task  # done with other classes, before an --overwrite run changed the folder's
        logger.debug("%s: done by an earlier run, skipped", task.page_id)
        self._skipped.append((index, task, None if self._unreported else record))
        return None

    def _report_skipped(self, before: int | None = None) -> None:
        """Report the skipped pages listed before work index `before` (all if None): pages are found done
        while decoding runs ahead, and their JSON lines come in the order of the work list all the same.
        A page is counted as skipped as it is reported, so that a run stopped early counts none past the
        stop."""
        while self._skipped and (before is None or self._skipped[0][0] < before):
            index, task, record = self._skipped.popleft()
            self.outcome.skipped += 1
            self.outcome.finished.append((index, task.page_id))
            if "jsonl" in self.request.formats:
                record = record or self._stored_record(task.page_id) or _removed_record(task)
                line = {key: value for key, value in record.items() if key not in _STORED_ONLY}
                listed = self.writer.files(task.page_id).listed(in_document=_own_image(task, record))
                line["input"] = output_text(str(task.source))  # as named now, like the outputs below
                line["outputs"] = {name: output_text(str(path)) for name, path in listed.items()}
                self.reporter.data(dumps_record({**line, "skipped": True}))
            self.reporter.advance()

    def _stored_record(self, page_id: str) -> dict[str, Any] | None:
        """The record a finished page left, None if there is none (or none that can be read: redo)."""
        path = self.writer.files(page_id).record
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            logger.debug("%s: unreadable record, the page is done again", display_path(path), exc_info=True)
            return None
        return record if isinstance(record, dict) and isinstance(record.get("input"), str) else None

    def _take(self, items: Iterator[Page | InputError]) -> None:
        """Segment the decoded pages in groups of `pages_per_batch`; an input that gave no page fails at
        once, after the pages before it (a group not yet full is segmented first). The failure limit is
        checked as each failure is counted, so nothing (not even the model's loading) follows the failure
        that passes it; the run stopped early only if work was left. Under a launcher it is also checked
        before each item, since the other processes' failures count too: a process does not load the
        model or segment pages once another one's failure has passed it."""
        group: list[tuple[int, Page]] = []
        for item in items:
            if self._should_stop():  # the other processes' failures passed the limit meanwhile
                self.outcome.stopped_early = True  # this item, at least, is left
                return
            index, page_id = self._decoding.popleft()
            if isinstance(item, InputError):
                if group:  # the pages before it waiting for their batch come first, as in the input
                    self._process(group)
                    group = []
                    if self._should_stop():
                        self.outcome.stopped_early = True  # this item, at least, is left
                        return
                self._fail(index, item, page_id)
            else:
                group.append((index, item))
                if len(group) < self.pages_per_batch:
                    continue
                self._process(group)
                group = []
            if self._should_stop():
                self.outcome.stopped_early = bool(group) or next(items, None) is not None
                return
        if group and self._should_stop():
            self.outcome.stopped_early = True
        elif group:
            self._process(group)

    def _process(self, pages: list[tuple[int, Page]]) -> None:
        """Segment a group of pages and hand them to the writing threads. Earlier pages are written while
        this group is segmented (on a GPU, writing would otherwise leave it idle): up to `writers` of them,
        so that writing slower than the model is spread over the threads rather than making it wait. Pages
        are reported in work order as their writing ends. With a failure limit every page is collected
        before the next group: a page failing to be written then stops the run before any further page
        is segmented."""
        segmenter = self._segmenter or self.load_segmenter()
        self._segmenter = segmenter  # loaded once, when the first readable page needs it
        started = time.perf_counter()
        try:
            results = segmenter([page.image for _, page in pages])
        except Exception as error:  # a model failure on these pages must not end the batch
            logger.debug("segmentation failed", exc_info=True)
            for index, page in pages:
                reason = f"segmentation failed: {type(error).__name__}: {error}"
                self._fail(index, InputError(page.source, reason, page.page), page.page_id)
            return
        seconds = (time.perf_counter() - started) / len(pages)
        self._collect_writes(keep=self.request.writers - 1)
        assert self._write_pool is not None, "pages are processed inside `run`"
        with self._reporting:  # a page written at once is reported once it is listed
            for (index, page), instances in zip(pages, results, strict=True):
                written = self._write_pool.submit(self._write, page, instances, seconds)
                self._writing.append(_Writing(index, page, len(instances), seconds, written))
                written.add_done_callback(self._on_write_ended)
        if self.request.max_failures is not None:
            self._collect_writes()

    def _write(self, page: Page, instances: PageInstances, model_seconds: float) -> tuple[str, float]:
        """Write the page's outputs, its record last (in a writing thread); its JSON line and the seconds
        writing took. A record an earlier run left is removed first: a page redone (`--overwrite`) whose
        writing fails or is killed halfway is not done, whatever of its outputs were replaced."""
        started = time.perf_counter()
        record_path = self.writer.files(page.page_id).record
        record_path.unlink(missing_ok=True)
        source = PageSource(page.source, page.page, page.page_id, page.image, page.unlike_file, page.dpi)
        record = self.writer.write(source, instances, {"model_s": model_seconds})
        record["timing"]["write_s"] = round(time.perf_counter() - started, 4)
        stored = dumps_record(
            {
                **record,
                STORED_INPUT: output_text(input_key(page.source)),
                STORED_CLASSES: self._classes,
                STORED_FILE: page.file_state,
            }
        )
        atomic_write_text(record_path, stored)  # last: marks the page done
        return dumps_record(record), record["timing"]["write_s"]

    def _on_write_ended(self, _: Future[tuple[str, float]]) -> None:
        """As a page's writing ends, in its writing thread: report the pages whose writing has ended that
        are next in work order, so that a page's JSON line and progress come as it is done, not once the
        model has segmented the next page. (It runs in the main thread for a page whose writing ended before
        it was listed: a Ctrl-C there stops the run at once, as anywhere in the main thread.)"""
        with self._reporting:
            if self._report_error is None:
                try:
                    self._report_ended_writes_in_order()
                except Exception as error:  # the main thread raises it (`_collect_writes`)
                    self._report_error = error

    def _collect_writes(self, keep: int = 0) -> None:
        """Report the pages handed to the writing threads, in work order: wait for the oldest until at most
        `keep` are left, then report those whose writing has ended. The waiting is done without holding
        the reports: a writing thread reports the page it ends before it takes the next one."""
        while True:
            with self._reporting:
                if self._report_error is not None:
                    raise self._report_error
                self._report_ended_writes_in_order()
                if len(self._writing) <= keep:
                    return
                oldest = self._writing[0].result
            wait([oldest])

    def _report_ended_writes_in_order(self) -> None:
        while self._writing and self._writing[0].result.done():
            writing = self._writing.popleft()
            index, page = writing.index, writing.page
            try:
                line, write_seconds = writing.result.result()
            except OSError as error:
                where = display_path(_os_path(error) or self.request.out)  # a full disk names no file
                reason = f"cannot write its outputs: {_os_reason(error)} ({where})"
                self._report_failure(index, InputError(page.source, reason, page.page), page.page_id)
            except Exception as error:  # like a model failure: this page fails, the batch goes on
                logger.debug("writing failed", exc_info=True)
                reason = f"cannot write its outputs: {type(error).__name__}: {error}"
                self._report_failure(index, InputError(page.source, reason, page.page), page.page_id)
            else:
                self._report_written(writing, line, write_seconds)

    def _report_written(self, writing: _Writing, line: str, write_seconds: float) -> None:
        self._report_skipped(before=writing.index)
        self._unreported -= 1
        self.outcome.done += 1
        self.outcome.finished.append((writing.index, writing.page.page_id))
        logger.info(
            "%s: %d instances; model %.2f s, writing %.2f s",
            writing.page.page_id,
            writing.instances,
            writing.model_seconds,
            write_seconds,
        )
        if "jsonl" in self.request.formats:
            self.reporter.data(line)
        self.reporter.advance()

    def _fail(self, index: int, error: InputError, page_id: str | None) -> None:
        """Report a page that failed, after the pages before it still being written."""
        self._collect_writes()  # and no page is handed to the writing threads but by this thread
        with self._reporting:
            self._report_failure(index, error, page_id)

    def _report_failure(self, index: int, error: InputError, page_id: str | None) -> None:
        self._report_skipped(before=index)
        self._unreported -= 1
        message = str(error)
        self.outcome.failures.append((index, message))
        self.processes.count_failure()
        self.reporter.error(message)
        if "jsonl" in self.request.formats:
            record = error_record(input_path=str(error.path), page=error.page, error=message, page_id=page_id)
            self.reporter.data(dumps_record(record))
        self.reporter.advance()

    def _should_stop(self) -> bool:
        limit = self.request.max_failures
        return limit is not None and self.processes.failures() > limit


@dataclass
class _Writing:
    """A page handed to the writing threads: its work index, the page, what to log, and the result (its
    JSON line and the seconds writing took, or the exception that failed it)."""

    index: int
    page: Page
    instances: int
    model_seconds: float
    result: Future[tuple[str, float]]


def _removed_record(task: PageTask) -> dict[str, Any]:
    """What the JSON line of a skipped page whose record was removed (by hand) since it was found says."""
    return {"page": task.page, "page_id": task.page_id}


def _own_image(task: PageTask, record: dict[str, Any]) -> bool:
    """Whether a done page has its own image (`PageSource.own_image`): a PDF or TIFF page, a TIFF's one page
    after a thumbnail or an image the outputs cannot name (`nameable`; either also when done by a docsam
    that named the input: it is redone), or an image that its EXIF or TIFF orientation turned, which only
    decoding tells, as its record says (it lists the image)."""
    written = record.get("outputs")
    return (
        task.page is not None
        or task.frame != 0
        or not nameable(task.source)
        or (isinstance(written, dict) and "image" in written)
    )


def _written_with(record: dict[str, Any], asked: Mapping[str, Path]) -> bool:
    """Whether every output asked for was written with the stored record (it lists them): a page redone
    with fewer formats leaves the others' files of an earlier run. The COCO part is not listed there; its
    classes and mask format tell whether it is the page's (`PageWriter.is_done`)."""
    written = record.get("outputs")
    return isinstance(written, dict) and all(name in written for name in asked if name != "coco")


def _same_input(record: dict[str, Any], source: Path) -> bool:
    """Whether a stored record is of `source`: the same file under the same or another name (a relative
    path given from another folder, a link). The record's absolute path names the file from any working
    folder; a record without it (from an older docsam) has only the name as given, read from the current
    folder. Names are compared as `docsam_cli.names.output_text` writes them."""
    absolute = record.get(STORED_INPUT)
    if isinstance(absolute, str):
        stored, name = absolute, output_text(input_key(source))
    else:
        stored, name = record["input"], output_text(str(source))
    if stored == name:
        return True
    try:
        return os.path.samefile(stored, source)
    except (OSError, ValueError):
        return False


def _os_reason(error: OSError) -> str:
    """What went wrong, without the path (the message names it): `Permission denied`."""
    return error.strerror or str(error) or type(error).__name__


def _os_path(error: OSError) -> str | None:
    """The file an OSError is about: the target of a rename (the file being written), else its path."""
    return error.filename2 or error.filename
