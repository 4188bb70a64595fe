"""`--pages 1-3,7`: which pages of a multi-page document (PDF, multi-page TIFF) to process."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ITEM = re.compile(r"^(\d+)?\s*(-)?\s*(\d+)?$")


@dataclass(frozen=True)
class PageRanges:
    """Inclusive 1-based page ranges; `end=None` means "to the last page"."""

    ranges: tuple[tuple[int, int | None], ...]

    def select(self, page_count: int) -> list[int]:
        """The selected pages that exist in a document of `page_count` pages, ascending, each once.

        Pages past the end are dropped rather than rejected, so one `--pages 1-3` fits a batch of
        documents of any length; the caller reports a document where nothing is left.
        """
        chosen: set[int] = set()
        for start, end in self.ranges:
            last = page_count if end is None else min(end, page_count)
            chosen.update(range(start, last + 1))
        return sorted(chosen)


def parse_page_ranges(spec: str) -> PageRanges:
    """Parse `"1-3,7"`, `"5-"` (5 to the end), `"-3"` (1 to 3), `"2"`; whitespace is ignored.

    Raises ValueError with a message fit for a usage error on anything else (0, descending ranges,
    empty items, letters).
    """
    ranges: list[tuple[int, int | None]] = []
    for raw in spec.split(","):
        item = raw.strip()
        match = _ITEM.match(item)
        if not item or match is None or (match[2] is None and match[3] is not None) or item == "-":
            raise ValueError(f"invalid page range {item!r} in {spec!r}: use e.g. 1-3,7 or 5- (1-based)")
        first, dash, second = match[1], match[2], match[3]
        start = int(first) if first else 1
        end = (int(second) if second else None) if dash else start
        if start < 1 or (end is not None and end < start):
            raise ValueError(f"invalid page range {item!r} in {spec!r}: pages start at 1, ranges ascend")
        ranges.append((start, end))
    return PageRanges(tuple(ranges))
