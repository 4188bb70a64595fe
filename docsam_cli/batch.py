"""The `docsam segment` batch: pages in, per-page outputs written atomically, a summary out.

A page counts as done once its record (`<out>/.docsam/records/<page_id>.json`) is written; that happens
last, after every other output of the page, and each file is written to a temporary name and renamed. A
run killed at any point therefore leaves only complete files, and a re-run redoes exactly the pages without
a record (or whose requested outputs are missing) — every page is done once. The run-wide COCO files are
assembled at the end from per-page parts, so skipped pages are part of them too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from docsam_cli.atomic import atomic_write_text
from docsam_cli.errors import InputError
from docsam_cli.inputs import Page, PageTask, prefetch
from docsam_cli.writers.jsonl import dumps_record, error_record
from docsam_cli.writers.page_outputs import OutputSettings, PageSource, PageWriter, output_folders
from model.instances import PageInstances

Segmenter = Callable[[Sequence[np.ndarray]], list[PageInstances]]


@dataclass(frozen=True)
class SegmentSettings:
    output: OutputSettings
    pages_per_batch: int = 1  # pages whose windows share forward passes (only meaningful when isolated)
    overwrite: bool = False
    max_failures: int | None = None  # stop once more pages than this have failed; None = never
    workers: int = 2


@dataclass
class RunSummary:
    done: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failures or self.stopped_early else 0

    @property
    def pages_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


class SegmentRun:
    """One `docsam segment` invocation over a stream of page tasks."""

    def __init__(
        self,
        settings: SegmentSettings,
        segmenter: Segmenter,
        emit_line: Callable[[str], None],
        report_error: Callable[[str], None],
        on_page: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.segmenter = segmenter
        self.emit_line = emit_line
        self.report_error = report_error
        self.on_page = on_page
        self.summary = RunSummary()
        self.writer = PageWriter(settings.output)
        self.formats = settings.output.formats
        self.finished_ids: list[str] = []

    def run(self, tasks: Iterable[PageTask | InputError]) -> RunSummary:
        started = time.perf_counter()
        self._remove_stale_temporaries()
        try:
            pages = prefetch(
                self._pending(tasks), workers=self.settings.workers, ahead=2 * self.settings.workers
            )
            for group in _groups(pages, self.settings.pages_per_batch):
                self._process(group)
                if self._should_stop():
                    self.summary.stopped_early = True
                    break
        finally:
            self.summary.seconds = time.perf_counter() - started
        self.writer.finish(self.finished_ids)
        return self.summary

    def _remove_stale_temporaries(self) -> None:
        """Temporary files a killed run left behind (`.<name>.<random>.tmp`, never an output). One run per
        output directory at a time is assumed, as for any batch writing the same files."""
        for folder in output_folders(self.settings.output.out_dir):
            for path in folder.glob(".*.tmp"):
                path.unlink(missing_ok=True)

    # --- per page --------------------------------------------------------------------------------

    def _pending(self, tasks: Iterable[PageTask | InputError]) -> Iterator[PageTask | InputError]:
        """Tasks still to do; finished pages are reported as skipped (their stored record re-emitted)."""
        for task in tasks:
            if isinstance(task, InputError):
                yield task
                continue
            if not self.settings.overwrite and self.writer.is_done(task.page_id):
                self.summary.skipped += 1
                self.finished_ids.append(task.page_id)
                if "jsonl" in self.formats:
                    record = json.loads(self.writer.files(task.page_id).record.read_text(encoding="utf-8"))
                    self.emit_line(dumps_record({**record, "skipped": True}))
                self.on_page()
                continue
            yield task

    def _process(self, group: list[Page | InputError]) -> None:
        pages = [item for item in group if isinstance(item, Page)]
        for item in group:
            if isinstance(item, InputError):
                self._fail(str(item.path), item.page, str(item), None)
        if not pages:
            return
        started = time.perf_counter()
        try:
            results = self.segmenter([page.image for page in pages])
        except Exception as error:  # a model failure on these pages must not end the batch
            for page in pages:
                reason = f"{page.source}: segmentation failed: {type(error).__name__}: {error}"
                self._fail(str(page.source), page.page, reason, page.page_id)
            return
        seconds = (time.perf_counter() - started) / len(pages)
        for page, instances in zip(pages, results, strict=True):
            try:
                self._write(page, instances, seconds)
            except OSError as error:
                self._fail(
                    str(page.source), page.page, f"{page.source}: cannot write outputs: {error}", page.page_id
                )

    def _write(self, page: Page, instances: PageInstances, model_seconds: float) -> None:
        started = time.perf_counter()
        source = PageSource(page.source, page.page, page.page_id, page.image)
        record = self.writer.write(source, instances, {"model_s": model_seconds})
        record["timing"]["write_s"] = round(time.perf_counter() - started, 4)
        text = dumps_record(record)
        atomic_write_text(self.writer.files(page.page_id).record, text)  # last: marks the page done
        self.summary.done += 1
        self.finished_ids.append(page.page_id)
        if "jsonl" in self.formats:
            self.emit_line(text)
        self.on_page()

    def _fail(self, path: str, page: int | None, message: str, page_id: str | None) -> None:
        self.summary.failures.append(message)
        self.report_error(message)
        if "jsonl" in self.formats:
            self.emit_line(
                dumps_record(error_record(input_path=path, page=page, error=message, page_id=page_id))
            )
        self.on_page()

    def _should_stop(self) -> bool:
        limit = self.settings.max_failures
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
