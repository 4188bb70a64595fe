"""The `docsam segment` batch: a request in, per-page outputs written atomically, a summary out.

`run_segment` is the whole command as one call: check the output folder, load the model, segment every page,
write the run-level files, report through a `docsam_cli.console.Reporter`. Problems that stop the run
before any page (an output folder that cannot be written, weights that do not load) are `UsageError`s;
a page that fails is reported and the batch goes on.

A page counts as done once its record (`<out>/.docsam/records/<page_id>.json`) is written; that happens
last, after every other output of the page, and each file is written to a temporary name and renamed. A
run killed at any point therefore leaves only complete files, and a re-run redoes exactly the pages without
a record (or whose requested outputs are missing) — every page is done once. The run-wide COCO files are
assembled at the end from per-page parts, so skipped pages are part of them too; if they cannot be written
(a full disk), the run says so and fails, and a re-run writes them.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from docsam_cli.atomic import atomic_write_text
from docsam_cli.console import Reporter
from docsam_cli.errors import ExitCode, InputError, UsageError
from docsam_cli.inputs import (
    LoadOptions,
    Page,
    PageTask,
    collect_documents,
    iter_page_tasks,
    prefetch,
    set_max_image_pixels,
)
from docsam_cli.names import display_path
from docsam_cli.runtime import LoadedModel, describe_geometry, load_for_inference
from docsam_cli.segment_request import SegmentRequest
from docsam_cli.weights import WeightsError
from docsam_cli.writers.jsonl import dumps_record, error_record
from docsam_cli.writers.page_outputs import OutputSettings, PageSource, PageWriter, output_folders
from model import CheckpointError
from model.inference import Geometry, segment_pages
from model.instances import PageInstances

logger = logging.getLogger(__name__)

Segmenter = Callable[[Sequence[np.ndarray]], list[PageInstances]]


def run_segment(request: SegmentRequest, reporter: Reporter) -> RunSummary:
    """Segment every page of `request.inputs` into its outputs; the summary says what was done.

    Raises UsageError, before any page is processed, when the output folder cannot be written or the
    model cannot be loaded.
    """
    prepare_output_folder(request.out)
    try:
        loaded = load_for_inference(request.model)
    except (WeightsError, CheckpointError) as error:
        raise UsageError(str(error)) from None
    geometry = request.geometry.resolve(loaded.weights.entry)
    logger.info("geometry: %s", describe_geometry(geometry))
    logger.info("classes: %s; domain %r", ", ".join(request.class_names), request.domain)
    set_max_image_pixels(request.max_image_pixels)
    documents = collect_documents(request.inputs, recursive=request.recursive)
    logger.info("inputs: %d files", sum(not isinstance(document, InputError) for document in documents))
    load_options = LoadOptions(dpi=request.dpi, pages=request.pages, password=request.password)
    run = SegmentRun(request, model_segmenter(loaded, request, geometry), reporter)
    summary = run.run(iter_page_tasks(documents, load_options))
    reporter.summary(summary.lines())
    return summary


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
    try:
        handle, probe = tempfile.mkstemp(prefix=".docsam-probe.", suffix=".tmp", dir=out)
    except OSError as error:
        raise UsageError(
            f"--out {display_path(out)}: cannot write in the folder: {_os_reason(error)}"
        ) from None
    os.close(handle)
    os.unlink(probe)


def model_segmenter(loaded: LoadedModel, request: SegmentRequest, geometry: Geometry) -> Segmenter:
    """The loaded model as a `Segmenter`: pages in, instances out, with the request's prompts and batching."""

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
class RunSummary:
    done: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAILED if self.failures or self.stopped_early else ExitCode.OK

    @property
    def pages_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """The summary as shown at the end of a run: counts, then each failure again."""
        counts = (
            f"{self.done} pages segmented, {self.skipped} skipped (already done), "
            f"{len(self.failures)} failed in {self.seconds:.1f} s ({self.pages_per_second:.2f} pages/s)"
        )
        if self.stopped_early:
            counts += "; stopped early by the failure limit"
        return [counts, *(f"  failed: {message}" for message in self.failures)]


class SegmentRun:
    """One `docsam segment` run over a stream of page tasks, with a `Segmenter` (the model or a stand-in)."""

    def __init__(self, request: SegmentRequest, segmenter: Segmenter, reporter: Reporter) -> None:
        self.request = request
        self.segmenter = segmenter
        self.reporter = reporter
        self.summary = RunSummary()
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
        self.finished_ids: list[str] = []

    def run(self, tasks: Iterable[PageTask | InputError]) -> RunSummary:
        started = time.perf_counter()
        self._remove_stale_temporaries()
        self.reporter.start("segment")
        workers = self.request.workers
        try:
            pages = prefetch(self._pending(tasks), workers=workers, ahead=2 * workers)
            for group in _groups(pages, self.pages_per_batch):
                self._process(group)
                if self._should_stop():
                    self.summary.stopped_early = True
                    break
        finally:
            self.summary.seconds = time.perf_counter() - started
        self._finish()
        return self.summary

    def _remove_stale_temporaries(self) -> None:
        """Temporary files a killed run left behind (`.<name>.<random>.tmp`, never an output). One run per
        output directory at a time is assumed, as for any batch writing the same files."""
        for folder in output_folders(self.request.out):
            for path in folder.glob(".*.tmp"):
                logger.debug("removing %s, left by an interrupted run", display_path(path))
                path.unlink(missing_ok=True)

    def _finish(self) -> None:
        """The run-level files. Failing to write them fails the run; the pages stay done."""
        try:
            self.writer.finish(self.finished_ids)
        except OSError as error:
            where = display_path(_os_path(error) or self.request.out)
            self._fail_run(
                f"{where}: cannot write the run's files: {_os_reason(error)} (a re-run writes them)"
            )

    # --- per page --------------------------------------------------------------------------------

    def _pending(self, tasks: Iterable[PageTask | InputError]) -> Iterator[PageTask | InputError]:
        """Tasks still to do; finished pages are reported as skipped (their stored record re-emitted)."""
        for task in tasks:
            if isinstance(task, InputError):
                yield task
                continue
            if not self.request.overwrite and self.writer.is_done(task.page_id):
                logger.debug("%s: done by an earlier run, skipped", task.page_id)
                self.summary.skipped += 1
                self.finished_ids.append(task.page_id)
                if "jsonl" in self.request.formats:
                    record = json.loads(self.writer.files(task.page_id).record.read_text(encoding="utf-8"))
                    self.reporter.data(dumps_record({**record, "skipped": True}))
                self.reporter.advance()
                continue
            yield task

    def _process(self, group: list[Page | InputError]) -> None:
        pages = [item for item in group if isinstance(item, Page)]
        for item in group:
            if isinstance(item, InputError):
                self._fail(item, None)
        if not pages:
            return
        started = time.perf_counter()
        try:
            results = self.segmenter([page.image for page in pages])
        except Exception as error:  # a model failure on these pages must not end the batch
            logger.debug("segmentation failed", exc_info=True)
            for page in pages:
                reason = f"segmentation failed: {type(error).__name__}: {error}"
                self._fail(InputError(page.source, reason, page.page), page.page_id)
            return
        seconds = (time.perf_counter() - started) / len(pages)
        for page, instances in zip(pages, results, strict=True):
            try:
                self._write(page, instances, seconds)
            except OSError as error:
                reason = f"cannot write its outputs: {_os_reason(error)}"
                if _os_path(error):
                    reason += f" ({display_path(_os_path(error))})"
                self._fail(InputError(page.source, reason, page.page), page.page_id)

    def _write(self, page: Page, instances: PageInstances, model_seconds: float) -> None:
        started = time.perf_counter()
        source = PageSource(page.source, page.page, page.page_id, page.image)
        record = self.writer.write(source, instances, {"model_s": model_seconds})
        record["timing"]["write_s"] = round(time.perf_counter() - started, 4)
        text = dumps_record(record)
        atomic_write_text(self.writer.files(page.page_id).record, text)  # last: marks the page done
        self.summary.done += 1
        self.finished_ids.append(page.page_id)
        logger.info(
            "%s: %d instances; model %.2f s, writing %.2f s",
            page.page_id,
            len(instances),
            model_seconds,
            record["timing"]["write_s"],
        )
        if "jsonl" in self.request.formats:
            self.reporter.data(text)
        self.reporter.advance()

    def _fail(self, error: InputError, page_id: str | None) -> None:
        message = str(error)
        self.summary.failures.append(message)
        self.reporter.error(message)
        if "jsonl" in self.request.formats:
            record = error_record(input_path=str(error.path), page=error.page, error=message, page_id=page_id)
            self.reporter.data(dumps_record(record))
        self.reporter.advance()

    def _fail_run(self, message: str) -> None:
        self.summary.failures.append(message)
        self.reporter.error(message)

    def _should_stop(self) -> bool:
        limit = self.request.max_failures
        return limit is not None and len(self.summary.failures) > limit


def _groups(pages: Iterable[Page | InputError], size: int) -> Iterator[list[Page | InputError]]:
    group: list[Page | InputError] = []
    for item in pages:
        group.append(item)
        if sum(isinstance(entry, Page) for entry in group) >= size:
            yield group
            group = []
    if group:
        yield group


def _os_reason(error: OSError) -> str:
    """What went wrong, without the path (the message names it): `Permission denied`."""
    return error.strerror or str(error) or type(error).__name__


def _os_path(error: OSError) -> str | None:
    """The file an OSError is about: the target of a rename (the file being written), else its path."""
    return error.filename2 or error.filename
