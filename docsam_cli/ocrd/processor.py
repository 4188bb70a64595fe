"""`ocrd-docsam-segment`: DocSAM layout segmentation as an OCR-D processor (OCR-D core 3).

For each page of the input file group, the page image as the workflow has prepared it (cropped and
deskewed where earlier steps did so; a binarized image is passed over for one that is not, since DocSAM
was trained on colour and grey scans, and so is a dewarped one, whose pixels cannot be mapped back to the
page's) goes through the pipeline of `docsam segment`. The regions found are added to the page's PAGE
document at the page level, with their reading order, typed as `docsam segment --format page` types them
(text lines nested into their text regions); the `existing_regions` parameter says whether they replace
the page's regions or join them. The output file group gets one PAGE file per page.

The model is loaded once per process. A page that fails (an unreadable image, the model out of memory) is
handled as OCRD_MISSING_OUTPUT says: SKIP it, COPY its input PAGE unchanged, or ABORT.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np
from ocrd import Processor
from ocrd.decorators import ocrd_cli_options, ocrd_cli_wrap_processor
from ocrd.processor.ocrd_page_result import OcrdPageResult
from ocrd_modelfactory import page_from_file
from ocrd_utils import polygon_from_points

from docsam_cli.errors import ExitCode
from docsam_cli.names import display_path
from docsam_cli.ocrd.parameters import SegmentSettings
from docsam_cli.user_paths import expand_user
from docsam_cli.writers.xml_tree import OCRD_PROCESSOR

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ocrd import Workspace
    from ocrd.processor.base import OcrdFileType
    from ocrd_models.ocrd_page import OcrdPage, PageType

    from docsam_cli.ocrd.frame import ReadingFrame
    from docsam_cli.runtime import LoadedModel
    from model.inference import Geometry

EXECUTABLE = OCRD_PROCESSOR
# Derived page images (AlternativeImage) with any of these features are passed over; the original always
# qualifies. A binarized image is not what DocSAM was trained on; a dewarped one is no affine map of the
# page (OCR-D keeps no transform for dewarping), so regions found on it could not be put back in place.
AVOIDED_IMAGE_FEATURES = "binarized,dewarped"
# How core's command line refuses -I/-O that do not fit the METS (an input group it lacks, an output group
# it holds already without --overwrite): an Exception whose lines after this one name each problem.
FILE_GROUPS_REFUSED = "Invalid input/output file grps:"
# How core refuses parameters that ocrd-tool.json's schema rejects: a ValueError of this line, then the
# validation report's XML, one `<error>` element per problem (its text not escaped).
PARAMETERS_REFUSED = "Invalid parameters:"
# The command-line options (click's names) for which core answers, or starts a processing worker, without
# processing the workspace given by -m, -I and -O.
INFORMATION_OPTIONS = (
    "help",
    "version",
    "dump_json",
    "dump_module_dir",
    "resolve_resource",
    "show_resource",
    "list_resources",
    "subcommand",
    "queue",
    "database",
)


class SetupError(Exception):
    """Parameters that do not make sense together, or weights that do not load: the processor cannot
    start. The message is one line, for the user."""


class DocsamSegment(Processor):
    """Segments pages into regions with DocSAM; the classes to find are named in the `classes` or `preset`
    parameter."""

    # One page at a time per process: page-parallel workers are forked, and a forked copy of a model
    # already on a CUDA device cannot use it.
    max_workers = 1

    settings: SegmentSettings
    loaded: LoadedModel | None = None
    geometry: Geometry

    @property
    def executable(self) -> str:
        return EXECUTABLE  # also when run as `python -m docsam_cli.ocrd`

    @property
    def metadata_filename(self) -> str:
        return "ocrd/ocrd-tool.json"  # inside the top-level package, docsam_cli

    def setup(self) -> None:
        """Read the parameters and load the model (once per processor, not per page). Raises SetupError."""
        from docsam_cli.errors import UsageError
        from docsam_cli.runtime import describe_geometry, load_for_inference
        from docsam_cli.weights import WeightsError
        from docsam_cli.writers.class_map import unmatched_warning

        try:
            parameters = {**self.parameter, "weights": self._weights(self.parameter["weights"])}
            self.settings = SegmentSettings.from_parameters(parameters)
            self.loaded = load_for_inference(self.settings.model)
            self.geometry = self.settings.geometry.resolve(self.loaded.weights)
        except (ValueError, UsageError, WeightsError) as error:  # a CheckpointError is a ValueError
            raise SetupError(_in_parameter_names(str(error), self.ocrd_tool["parameters"])) from None
        except PermissionError as error:  # a path in a folder that may not be searched: Path.exists() raises
            raise SetupError(f"{display_path(error.filename)}: {error.strerror}") from None
        self.logger.info("geometry: %s", describe_geometry(self.geometry))
        self.logger.info("classes: %s; domain %r", ", ".join(self.settings.class_names), self.settings.domain)
        if warning := unmatched_warning("page_map", self.settings.page_map, self.settings.class_names):
            self.logger.warning(warning)

    def _weights(self, value: str) -> str:
        """The `weights` parameter: a file or folder, else a resource installed where OCR-D keeps them
        (`ocrd resmgr`, `$XDG_DATA_HOME/ocrd-resources/ocrd-docsam-segment/`, ...; `-L` lists them), model-zoo
        names included; a value found in neither stays as given, for the loader to take as a model-zoo name
        from docsam's cache or to report."""
        if Path(expand_user(value)).exists():
            return value
        try:
            return str(self.resolve_resource(value))
        except FileNotFoundError:  # core's ResourceNotFoundError
            return value

    def shutdown(self) -> None:
        self.loaded = None

    def process_workspace(self, workspace: Workspace) -> None:
        """OCR-D core's loop; when it stops on a page (OCRD_MISSING_OUTPUT=ABORT, Ctrl-C, or SIGTERM or
        SIGHUP, taken as Ctrl-C), the METS is saved first, so that the pages done before stay listed in it
        (core saves it only after a whole run)."""
        from docsam_cli.inputs.images import set_max_image_pixels
        from docsam_cli.interruption import terminate_as_interrupt

        # Process-wide, as `docsam segment` sets it once: core's own opens of the page images (for their
        # size and resolution, then to decode them) are held to it from the first page on. Set for each
        # run, not at setup: an OCR-D processing worker keeps a set-up processor per parameter set and runs
        # it again for later jobs, after others were set up.
        set_max_image_pixels(self.settings.max_image_pixels)
        try:
            with terminate_as_interrupt():
                super().process_workspace(workspace)
        except BaseException:  # KeyboardInterrupt too
            workspace.save_mets()
            raise

    def _copy_page_file(self, input_file: OcrdFileType) -> None:
        """OCRD_MISSING_OUTPUT=COPY for a page that failed: its input PAGE copied, as core copies it, if
        the input can be read. An image Pillow cannot identify or PAGE XML that does not parse (the very
        reason the page failed) made core's copy raise again, which ended the whole run at that page; such a
        page is left without output instead, as SKIP leaves it (core counts it as failed either way)."""
        try:
            page_from_file(input_file)
        except Exception as error:  # whatever reading the input raises: OSError, XMLSyntaxError, ...
            self.logger.error(
                "page %s: its input cannot be read, so nothing is copied: %s", input_file.pageId, error
            )
            return
        super()._copy_page_file(input_file)

    def process_page_file(self, *input_files: OcrdFileType | None) -> None:
        """Core's handling of one page, a page image over `max_image_pixels` reported as a ValueError that
        says how to raise the limit: Pillow refuses it from its header, in its own words ("could be
        decompression bomb DOS attack"), wherever core opens it."""
        from PIL import Image

        from docsam_cli.inputs.images import pillow_bomb_size

        try:
            super().process_page_file(*input_files)
        except Image.DecompressionBombError as error:
            raise ValueError(
                _over_pixel_limit(pillow_bomb_size(error), self.settings.max_image_pixels)
            ) from None

    def process_page_pcgts(self, *input_pcgts: OcrdPage | None, page_id: str | None = None) -> OcrdPageResult:
        """Segment one page: its image through the model, the regions into its PAGE document."""
        # The model's dependencies load with the first page: --help and --dump-json stay quick.
        from docsam_cli.inputs.images import to_bgr
        from docsam_cli.ocrd.frame import ReadingFrame, affine_points, on_pixel_indices, to_page_frame
        from docsam_cli.ocrd.regions import add_regions
        from docsam_cli.writers.shapes import PageShapes
        from model.inference import segment_page

        pcgts, settings = input_pcgts[0], self.settings
        assert pcgts is not None and self.loaded is not None
        page = pcgts.get_Page()
        page_size = (page.get_imageWidth(), page.get_imageHeight())
        if min(page_size) <= 0:
            raise ValueError(
                f"PAGE imageWidth x imageHeight is {page_size[0]}x{page_size[1]}, not a page size"
            )
        _check_pixel_limit(page_size, settings.max_image_pixels)
        border = _border(page, page_size)  # checked before core crops the image to it
        image, coords, _ = self.workspace.image_from_page(
            page, page_id, feature_filter=AVOIDED_IMAGE_FEATURES
        )
        with self.loaded.autocast():
            instances = segment_page(
                self.loaded.model,
                to_bgr(image),
                list(settings.class_names),
                domain=settings.domain,
                geometry=self.geometry,
                batch_size=settings.batch_size,
            )
        frame = ReadingFrame.of(coords["transform"], page_size)
        # frame pixels → the derived image's
        to_image = on_pixel_indices(coords["transform"]) @ np.linalg.inv(frame.matrix)
        instances = to_page_frame(
            instances, to_image, frame.size, None if border is None else frame.from_page(border)
        )
        shapes = PageShapes(instances, within=_outline_limit(border, frame))
        added = add_regions(
            pcgts,
            shapes,
            settings.page_map,
            settings.existing_regions,
            frame.to_page,
            # A deskewed page is ordered on the derived image, where its columns and lines run level.
            upright=lambda points: affine_points(to_image, points),
        )
        self.logger.info("page %s: %d instances, %d regions added", page_id, len(instances), added)
        return OcrdPageResult(pcgts)


def _in_parameter_names(message: str, parameters: Iterable[str]) -> str:
    """A message of the checks `docsam segment` shares, naming the processor's parameters instead of the
    command-line options they stand for (`--model-config` → `model_config`). Only an option standing as a
    word is renamed, not `--` inside a path the message names (`runs/large--window-1024/`)."""
    names = set(parameters)

    def renamed(option: re.Match[str]) -> str:
        name = option[1].replace("-", "_")
        return name if name in names else option[0]

    return re.sub(r"(?<![^\s(])--([a-z]+(?:-[a-z]+)*)(?![\w/.\\-])", renamed, message)


def _check_pixel_limit(page_size: tuple[int, int], limit: int | None) -> None:
    """Raise ValueError for a page of more than `limit` pixels, before core decodes its image. Pillow's
    own check, which core's opens meet first, lets one pixel more through at an odd limit (it halves it)."""
    width, height = page_size
    if limit is not None and width * height > limit:
        raise ValueError(_over_pixel_limit(f"{width}x{height} = {width * height} pixels", limit))


def _over_pixel_limit(size: str, limit: int | None) -> str:
    """The one-line page error for a page image of `size` ("N pixels") over the limit."""
    return (
        f"the page image of {size} exceeds the decompression-bomb limit of {limit} pixels "
        "(raise the limit with the parameter max_image_pixels, 0 for none, if the file is trusted)"
    )


def _border(page: PageType, page_size: tuple[int, int]) -> np.ndarray | None:
    """The page's Border polygon in page pixels, if it has one. Raises ValueError for a Border that encloses
    no area of the (width, height) page (all its points equal, on one line, or off the page): OCR-D's
    validator counts it invalid, and core would crop the image to nothing, which failed the page with a
    message about an empty side. So does a Border without `Coords/@points` (PAGE 2010 gave them as `Point`
    elements, which OCR-D's object model does not read), where core failed on `None`."""
    border = page.get_Border()
    if border is None:
        return None
    coords = border.get_Coords()
    text = None if coords is None else coords.get_points()
    if not text:
        raise ValueError(
            "PAGE Border has no Coords/@points, so the page's area is unknown; correct or remove the Border"
        )
    points = np.asarray(polygon_from_points(text), dtype=np.float64)
    if _area_on_page(points, page_size) <= 0:
        width, height = page_size
        raise ValueError(
            f"PAGE Border '{text}' encloses no area of the {width}x{height} page, so there is nothing to "
            "segment; correct or remove the Border"
        )
    return points


def _outline_limit(border: np.ndarray | None, frame: ReadingFrame) -> np.ndarray | None:
    """The Border in the frame's pixels, which the regions' outlines are cut to (`PageShapes.within`); None
    without a Border, or for one that is no valid polygon (it crosses itself): shapely cannot cut to that,
    and OCR-D's validator checks no region against it."""
    import shapely

    if border is None or not shapely.is_valid(shapely.polygons(border)):
        return None
    return frame.from_page(border)


def _area_on_page(points: np.ndarray, page_size: tuple[int, int]) -> float:
    """Area of the polygon `points` (a self-crossing one's lobes counted) within the page's rectangle."""
    import shapely

    if len(points) < 3:
        return 0.0
    outline = shapely.make_valid(shapely.polygons(points))
    return float(shapely.intersection(outline, shapely.box(0, 0, *page_size)).area)


def _check_file_groups(input_groups: str | None, output_groups: str | None) -> None:
    """Refuse `-I`/`-O` lists of another number of groups than ocrd-tool.json declares, before the model
    loads: core asserts the counts only after setup, as an AssertionError with two tracebacks. Refuse
    either left out: core took a missing `-O` for one group named '', segmented every page, then failed to
    add each to the METS, and a missing `-I` was its traceback of "-I/--input-file-grp is required".
    Raises SetupError."""
    tool = DocsamSegment(None).ocrd_tool
    for option, groups, kind in (("-I", input_groups, "input"), ("-O", output_groups, "output")):
        declared = tool[f"{kind}_file_grp_cardinality"]  # an exact count here, as core reads a number
        if not groups:
            raise SetupError(f"{option} is missing: {EXECUTABLE} takes exactly {declared} {kind} file group")
        count = len(groups.split(","))
        if count != declared:
            raise SetupError(
                f"{option} {groups} names {count} {kind} file groups; {EXECUTABLE} takes exactly {declared}"
            )


def _core_refusal(error: Exception) -> str | None:
    """The one line for core's refusal of the file groups (`FILE_GROUPS_REFUSED`) or of the parameters
    (`PARAMETERS_REFUSED`: its report's errors, `; `-separated), None for any other failure."""
    lines = [line.strip() for line in str(error).splitlines()]
    if lines[:1] == [FILE_GROUPS_REFUSED]:
        return " ".join(lines)
    if lines[:1] == [PARAMETERS_REFUSED]:
        problems = re.findall(r"<error>(.*?)</error>", str(error), flags=re.DOTALL)
        return f"{PARAMETERS_REFUSED} {'; '.join(problem.strip() for problem in problems)}"
    return None


@click.command()
@ocrd_cli_options
def cli(*args, **kwargs):
    try:
        # No argument at all: core shows its help, as for --help.
        if sys.argv[1:] and not any(kwargs.get(option) for option in INFORMATION_OPTIONS):
            _check_file_groups(kwargs.get("input_file_grp"), kwargs.get("output_file_grp"))
        return ocrd_cli_wrap_processor(DocsamSegment, *args, **kwargs)
    except SetupError as error:
        raise click.ClickException(str(error)) from None  # "Error: <message>", exit status 1
    except Exception as error:  # core's refusal of the file groups or parameters, else left to core's report
        message = _core_refusal(error)
        if message is None:
            raise
        raise click.ClickException(message) from None
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, after the METS was saved: exit 130 as `docsam` does,
        click.echo("Error: interrupted; the pages done are listed in the METS", err=True)  # not click's 1
        raise click.exceptions.Exit(ExitCode.INTERRUPTED) from None
