"""Input layer of `docsam segment`: sources → documents → page tasks → decoded pages (BGR uint8).

    documents = collect_documents(["scans/", "*.pdf", "-"], recursive=True)
    for item in prefetch(iter_page_tasks(documents, LoadOptions(dpi=300, pages=parse_page_ranges("1-3")))):
        if isinstance(item, InputError):
            print(item, file=sys.stderr)  # one line: path (page N): reason
            continue
        run_model(item.image)  # item.page_id names the outputs

`iter_pages` chains the three.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TextIO

from docsam_cli.errors import InputError
from docsam_cli.inputs.images import DEFAULT_MAX_IMAGE_PIXELS, max_image_pixels, set_max_image_pixels, to_bgr
from docsam_cli.inputs.page_ranges import PageRanges, parse_page_ranges
from docsam_cli.inputs.pdf import MAX_DPI
from docsam_cli.inputs.prefetch import prefetch
from docsam_cli.inputs.sources import Document, collect_documents
from docsam_cli.inputs.tasks import LoadOptions, Page, PageTask, iter_page_tasks

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "MAX_DPI",
    "Document",
    "InputError",
    "LoadOptions",
    "Page",
    "PageRanges",
    "PageTask",
    "collect_documents",
    "iter_page_tasks",
    "iter_pages",
    "max_image_pixels",
    "parse_page_ranges",
    "prefetch",
    "set_max_image_pixels",
    "to_bgr",
]


def iter_pages(
    sources: Iterable[str],
    *,
    recursive: bool = False,
    options: LoadOptions | None = None,
    stdin: TextIO | None = None,
    workers: int = 2,
    ahead: int = 4,
) -> Iterator[Page | InputError]:
    """Every page of `sources` in order, decoded `ahead` by `workers` threads; InputErrors in place."""
    documents = collect_documents(sources, recursive=recursive, stdin=stdin)
    return prefetch(iter_page_tasks(documents, options), workers=workers, ahead=ahead)
