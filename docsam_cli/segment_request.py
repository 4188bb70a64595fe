"""What `docsam segment` is asked to do, as one typed value: its options parsed, nothing loaded yet.

The command line builds a `SegmentRequest` from its options (whose defaults are this dataclass's) and hands
it to `docsam_cli.batch.run_segment`; a script can do the same. Importing this module is cheap (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from docsam_cli.inputs.images import DEFAULT_MAX_IMAGE_PIXELS
from docsam_cli.runtime import GeometryOptions, ModelSpec
from docsam_cli.writers.class_map import ClassMap
from docsam_cli.writers.formats import DEFAULT_FORMATS, MaskFormat

if TYPE_CHECKING:
    from docsam_cli.inputs import PageRanges


@dataclass(frozen=True)
class SegmentRequest:
    """One `docsam segment` run. `inputs` are files, folders, globs or `-` (paths on stdin)."""

    inputs: tuple[str, ...]
    class_names: tuple[str, ...]
    domain: str  # the background prompt is "<domain> _background_"
    model: ModelSpec
    geometry: GeometryOptions  # as given; completed from what is known of the weights
    out: Path = Path("docsam-out")
    formats: frozenset[str] = frozenset(DEFAULT_FORMATS)
    # Reading the inputs
    recursive: bool = False
    dpi: float = 200.0  # PDF rendering
    pages: PageRanges | None = None  # of PDFs and multi-page TIFFs; None: all
    password: str | None = None
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS  # the decompression-bomb guard; None: no limit
    workers: int = 2  # threads decoding and rendering pages ahead of the model
    # Running the model
    batch_size: int = 16  # windows per forward pass
    isolate: bool = False  # windows of several pages may share forward passes
    pages_per_batch: int = 4  # with `isolate`
    # Writing
    writers: int = 2  # threads writing pages' outputs while the model segments the next pages
    mask_format: MaskFormat = "rle"
    page_map: ClassMap | None = None  # class → (PAGE element, @type), see `writers.page_map`
    alto_map: ClassMap | None = None  # class → (ALTO element, tag label), see `writers.alto_map`
    overwrite: bool = False
    max_failures: int | None = None  # stop once more pages than this have failed; None: never
