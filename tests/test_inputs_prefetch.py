"""The prefetching iterator: order, errors in place, a bounded number of pages ahead, clean early exit."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from docsam_cli.inputs import InputError, Page, iter_pages, prefetch


class FakeTask:
    """Stands in for a PageTask: records when its load starts; later tasks finish first."""

    def __init__(self, number: int, log: list[int], lock: threading.Lock, fail: bool = False) -> None:
        self.number, self.log, self.lock, self.fail = number, log, lock, fail

    def load(self) -> Page:
        with self.lock:
            self.log.append(self.number)
        time.sleep(0.002 * (5 - self.number % 5))
        if self.fail:
            raise InputError(f"task{self.number}.png", "cannot decode")
        return Page(Path(f"task{self.number}.png"), None, f"task{self.number}", np.zeros((1, 1, 3), np.uint8))


def make_tasks(count: int, failing: set[int] = frozenset()) -> tuple[list, list[int]]:
    log: list[int] = []
    lock = threading.Lock()
    return [FakeTask(number, log, lock, number in failing) for number in range(count)], log


def label(item: Page | InputError) -> str:
    return f"error:{item.path.name}" if isinstance(item, InputError) else item.page_id


def test_results_keep_task_order_with_errors_in_place():
    tasks, _ = make_tasks(8, failing={3})
    listed_error = InputError("missing.png", "no such file or directory")
    items = [*tasks[:2], listed_error, *tasks[2:]]
    assert [label(item) for item in prefetch(items, workers=3, ahead=4)] == [
        "task0",
        "task1",
        "error:missing.png",
        "task2",
        "error:task3.png",
        "task4",
        "task5",
        "task6",
        "task7",
    ]


def test_no_more_than_ahead_pages_are_started_beyond_the_consumer():
    tasks, started = make_tasks(12)
    ahead = 3
    for consumed, _ in enumerate(prefetch(tasks, workers=2, ahead=ahead), 1):
        time.sleep(0.003)  # a slow model: workers would run far ahead if nothing held them back
        assert len(started) <= consumed + ahead - 1
    assert sorted(started) == list(range(12))


def test_leaving_early_cancels_pages_not_started():
    tasks, started = make_tasks(50)
    stream = prefetch(tasks, workers=1, ahead=2)
    next(stream)
    stream.close()
    assert len(started) <= 2


class HeldTask(FakeTask):
    """A FakeTask whose load holds its worker until `release` is set."""

    def __init__(self, number: int, log: list[int], lock: threading.Lock, release: threading.Event) -> None:
        super().__init__(number, log, lock)
        self.release = release

    def load(self) -> Page:
        page = super().load()
        self.release.wait(timeout=10)
        return page


def test_leaving_early_cancels_the_pages_queued_behind_a_busy_worker():
    """Four pages are handed to one worker; the consumer leaves after the first while the worker is held
    on the second: the two queued behind it are never decoded (the pool would otherwise run them all
    before the loop could end)."""
    tasks, started = make_tasks(4)
    release = threading.Event()
    tasks[1] = HeldTask(1, started, tasks[0].lock, release)
    stream = prefetch(tasks, workers=1, ahead=4)
    assert label(next(stream)) == "task0"
    threading.Timer(0.2, release.set).start()
    stream.close()
    assert started == [0, 1]


def test_one_page_ahead_is_allowed():
    tasks, started = make_tasks(3)
    assert [label(item) for item in prefetch(tasks, workers=1, ahead=1)] == ["task0", "task1", "task2"]
    assert started == [0, 1, 2]


@pytest.mark.parametrize("settings", [{"workers": 0}, {"ahead": 0}])
def test_invalid_pool_settings_are_rejected(settings):
    with pytest.raises(ValueError, match="at least 1"):
        next(prefetch(make_tasks(2)[0], **settings))


def test_iter_pages_chains_listing_tasks_and_decoding(tmp_path):
    for index in range(3):
        Image.new("RGB", (5 + index, 4), (index, 0, 0)).save(tmp_path / f"page{index + 1}.png")
    (tmp_path / "page4.png").write_bytes(b"")
    pages = list(iter_pages([str(tmp_path)], workers=2, ahead=2))
    assert [label(item) for item in pages] == ["page1", "page2", "page3", "error:page4.png"]
    assert [item.width for item in pages[:3]] == [5, 6, 7]
