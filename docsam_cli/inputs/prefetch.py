"""Decode pages in a thread pool ahead of the consumer, in order, with a bounded number in flight.

Threads suffice: Pillow decodes and numpy converts with the GIL released, and poppler renders in a
subprocess. At most `ahead` pages are decoded or being decoded beyond the one the consumer holds, so
memory stays bounded on a batch of any length.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing

from docsam_cli.errors import InputError
from docsam_cli.inputs.images import open_tiffs
from docsam_cli.inputs.tasks import Page, PageTask


def prefetch(
    tasks: Iterable[PageTask | InputError], *, workers: int = 2, ahead: int = 4
) -> Iterator[Page | InputError]:
    """Yield `task.load()` for each task in task order; an InputError (given, or raised by `load`) in place.

    Leaving the loop early (break, exception, `close()`) cancels the pages not started and waits for the
    ones running.
    """
    if workers < 1 or ahead < 1:
        raise ValueError("workers and ahead must be at least 1")
    pending: deque[Future[Page] | InputError] = deque()
    in_flight = 0
    source = iter(tasks)
    exhausted = False
    # the TIFFs its threads left open are closed once they have stopped (leaving `with` in reverse order)
    with (
        closing(open_tiffs),
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="docsam-load") as pool,
    ):
        try:
            while True:
                while not exhausted and in_flight < ahead:
                    task = next(source, None)
                    if task is None:
                        exhausted = True
                    elif isinstance(task, InputError):
                        pending.append(task)
                    else:
                        pending.append(pool.submit(task.load))
                        in_flight += 1
                if not pending:
                    return
                head = pending.popleft()
                if isinstance(head, InputError):
                    yield head
                    continue
                in_flight -= 1
                try:
                    page = head.result()
                except InputError as error:
                    yield error
                else:
                    yield page
        finally:
            for item in pending:
                if isinstance(item, Future):
                    item.cancel()
