"""`convert-dataset`: read sources, clean each page, write the unified layout, publish it in one rename.

The output is assembled in a hidden folder beside `--out` and renamed into place only when complete, so
an interrupted or failed run never leaves a half-written dataset; pages that fail are reported and
left out, the rest is published.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from docsam_cli.atomic import RANDOM_HEX_DIGITS, hidden_head, random_hex, remove_replaced, swap_folder
from docsam_cli.datasets import layout, rectify, split
from docsam_cli.datasets.classes import ClassFilter, map_option
from docsam_cli.datasets.convert import read_sources
from docsam_cli.datasets.convert.base import PDF_PAGE_DPI, Format, ReadContext
from docsam_cli.datasets.images import image_size, within
from docsam_cli.datasets.records import Instance, Note, SourcePage
from docsam_cli.datasets.report import REPORT_FILE, ConversionReport
from docsam_cli.errors import InputError, WrongFormat
from docsam_cli.inputs.images import DEFAULT_MAX_IMAGE_PIXELS, set_max_image_pixels, turned_note
from docsam_cli.inputs.sources import portable_stem, stem_key
from docsam_cli.interruption import interrupts_held
from docsam_cli.names import display_path, output_text
from docsam_cli.presets import read_alike, repeated_classes

_POOL = ".images"  # staging folder of images before they are placed into their split
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class ConvertOptions:
    fmt: Format
    sources: list[Path]
    out: Path
    levels: frozenset[str]
    classes: ClassFilter
    dataset_name: str
    split: dict[str, float] | None = None
    seed: int = 0
    symlink: bool = False
    overwrite: bool = False
    images: Path | None = None
    class_list: Path | None = None
    dpi: float = PDF_PAGE_DPI
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS  # images and PDF pages read; None: no limit


class OutputExists(Exception):
    """`--out` cannot be written: a file, a folder holding a source or the current folder, or non-empty
    without `--overwrite`."""


class NothingConverted(Exception):
    """No image could be read, so nothing was published; `str()` is the line to show, `report` lists the
    files that failed (none: the sources hold nothing of the format, a usage error)."""

    def __init__(self, message: str, report: ConversionReport) -> None:
        super().__init__(message)
        self.report = report


class InterruptedAfterPublishing(Exception):
    """Ctrl-C (or SIGTERM) once the new dataset was in place, while it was renamed there or while an
    `--overwrite` was removing the previous dataset: `previous` is what is left of the old one (None: there
    was none), which the next conversion into `--out` removes (`_remove_abandoned`)."""

    def __init__(self, report: ConversionReport, previous: Path | None) -> None:
        super().__init__(f"interrupted once the dataset was in place (previous one: {previous})")
        self.report = report
        self.previous = previous


def check_output(options: ConvertOptions) -> None:
    """Refuse to replace data unless asked, and never a folder holding what the run reads (a source, the
    `--images` folder, the `--classes` file) or the current folder: publishing renames the existing folder
    away and deletes it. Raises OutputExists. `options.out` is absolute."""
    out = options.out
    inputs = [("the source", source) for source in options.sources]
    inputs += [("the --images folder", options.images)] if options.images is not None else []
    inputs += [("the --classes file", options.class_list)] if options.class_list is not None else []
    for what, path in inputs:
        if within(path, out):
            raise OutputExists(f"{out} holds {what} {path}: choose another output folder")
    if out.is_dir() and within(Path.cwd(), out):
        raise OutputExists(f"{out} holds the current folder: choose another output folder")
    if out.is_file() or out.is_symlink():
        raise OutputExists(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not options.overwrite:
        raise OutputExists(f"{out} is not empty (use --overwrite to replace it)")


def convert(options: ConvertOptions, progress: Callable[[str], None] | None = None) -> ConversionReport:
    """Run a conversion; returns its report (errors included). Raises OutputExists or NothingConverted."""
    options = replace(options, out=Path(os.path.abspath(options.out)))  # `.`, `..`: a name to rename by
    out = options.out
    check_output(options)
    set_max_image_pixels(options.max_image_pixels)
    with _writing(out):  # a read-only place, a file in the way: nothing can be written there
        out.parent.mkdir(parents=True, exist_ok=True)
        kept = _remove_abandoned(out)
        staging, held = _staging_folder(out)
    try:
        report = _build(options, staging, progress)
        _publish(staging, out, report, overwrite=options.overwrite, kept=kept)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if held is not None:
            os.close(held)
    return report


def _publish(
    staging: Path, out: Path, report: ConversionReport, *, overwrite: bool, kept: list[Path]
) -> None:
    """Rename the finished `staging` to `out`; with --overwrite an existing `out` is renamed away first and
    removed last, without it `out` must still be absent or empty (`_rename_into_empty`). Then the previous
    datasets `_remove_abandoned` `kept` are removed: an `--overwrite` killed between its two renames had
    been asked to replace them, and a rerun that published left each, a full-size hidden copy, until the
    next conversion. Ctrl-C, SIGTERM and SIGHUP are held back during the renames: one between them left the
    previous dataset hidden and no `out`, one just after them was said to have written nothing. Raises
    InterruptedAfterPublishing for an interrupt once the new dataset is in place, KeyboardInterrupt
    before."""
    previous = None
    try:
        with interrupts_held(), _writing(out):
            if overwrite:
                previous = swap_folder(staging, out)
            else:
                _rename_into_empty(staging, out)
        for folder in (previous, *kept):
            _remove_previous(folder, report)
    except KeyboardInterrupt:
        if staging.exists():  # not published
            raise
        raise InterruptedAfterPublishing(report, previous) from None


def _rename_into_empty(staging: Path, out: Path) -> None:
    """Rename `staging` to `out` where `out` is absent or an empty folder, in one step: `check_output` found
    it so as the conversion started, but another conversion into it (the same command in two terminals, two
    jobs) may have published its dataset there since, which only --overwrite replaces. Raises OutputExists
    when `out` is taken."""
    with contextlib.suppress(OSError):
        out.rmdir()  # an empty folder, which a rename does not replace on every system
    try:
        os.rename(staging, out)
    except OSError as error:
        if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            raise
        raise OutputExists(
            f"{out} was written by another run while this conversion ran; nothing was written (use "
            "--overwrite to replace it)"
        ) from None


def _staging_folder(out: Path) -> tuple[Path, int | None]:
    """A new, empty `.<name>.<random>.partial` beside `out`, made as any new folder is (0777 less the umask):
    it becomes the dataset, whose folders should all be alike, private under umask 077 and open to the group
    under 002 (`tempfile.mkdtemp` makes a private one). Returned with the descriptor holding its lock, which
    tells a later run that it is at work (None where there are no locks)."""
    while True:
        staging = out.with_name(f".{hidden_head(out.name)}.{random_hex()}.partial")
        try:
            staging.mkdir()
        except FileExistsError:
            continue
        try:
            return staging, _lock_folder(staging)
        except (BlockingIOError, FileNotFoundError):  # another run's clean-up took it since it was made
            continue


def _remove_abandoned(out: Path) -> list[Path]:
    """Remove what conversions into `out` killed outright (SIGKILL, the system's out-of-memory killer, a
    power cut) left beside it, hidden, which nothing else would ever remove: their staging folders, with
    copies of the images converted so far (one whose lock is held is a conversion still at work), and the
    previous dataset that an `--overwrite` was removing (`swap_folder`'s `.<name>.<pid>.<random>.old`, or
    an earlier version's `.<name>.<pid>.old`). Where `out` is missing those are kept and returned, for
    `_publish` to remove once this run has published: killed between its two renames, such a folder is
    the only copy of the data until a new dataset is in place."""
    head, random = re.escape(hidden_head(out.name)), rf"[0-9a-f]{{{RANDOM_HEX_DIGITS}}}"
    staged = re.compile(rf"\.{head}\.{random}\.partial")
    replaced = re.compile(rf"\.{head}\.[0-9]+(?:\.{random})?\.old")
    try:
        named = [
            path
            for path in out.parent.iterdir()
            if staged.fullmatch(path.name) or replaced.fullmatch(path.name)
        ]
    except OSError:  # a folder that may be written but not listed: nothing to tell
        return []
    folders = [path for path in named if path.is_dir() and not path.is_symlink()]
    previous = [folder for folder in folders if replaced.fullmatch(folder.name)]
    if out.is_dir():
        for folder in previous:
            shutil.rmtree(folder, ignore_errors=True)
        previous = []
    for candidate in (folder for folder in folders if staged.fullmatch(folder.name)):
        try:
            held = _lock_folder(candidate)
        except (BlockingIOError, FileNotFoundError):  # at work, or gone (published, or another's clean-up)
            continue
        if held is not None:
            try:
                shutil.rmtree(candidate, ignore_errors=True)
            finally:
                os.close(held)
    return previous


def _remove_previous(previous: Path | None, report: ConversionReport) -> None:
    """Remove a previous dataset once the new one is in `--out`; one that cannot be removed (its files
    read-only, say) is a warning naming what is left of it, hidden, for good."""
    try:
        remove_replaced(previous)
    except OSError as error:
        report.warnings.append(
            f"the previous dataset could not be removed ({error.strerror or type(error).__name__}): what "
            f"is left of it is in {display_path(previous)}; remove it by hand"
        )


def _lock_folder(folder: Path) -> int | None:
    """The descriptor of `folder` holding its exclusive lock (`flock`, dropped by the kernel with the process
    that holds it); None where locks cannot be taken (Windows, a file system without them): a run is then
    never told from an abandoned one. Raises BlockingIOError when another process holds it, and
    FileNotFoundError when it is gone (another run's clean-up removed it, or it was published)."""
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    try:
        handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        raise
    except OSError:
        os.close(handle)
        return None
    return handle


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """A write into `out` that fails (read-only, a full disk or quota, links refused for --symlink) raises
    OutputExists: the output cannot be written, which is no bug (the readers report what they cannot read)."""
    try:
        yield
    except OSError as error:
        raise OutputExists(f"{out}: cannot write there ({error.strerror or type(error).__name__})") from None


def _build(
    options: ConvertOptions, staging: Path, progress: Callable[[str], None] | None
) -> ConversionReport:
    report = ConversionReport()
    pool = staging / _POOL
    pool.mkdir()
    names = _NameAllocator()
    pages: list[layout.LayoutPage] = []
    skipped: list[WrongFormat] = []  # files of another format found by the walk
    converted: dict[str, Path] = {}  # image file (real path) → the annotation file it was converted from

    contexts: list[ReadContext] = []

    def context_for(root: Path) -> ReadContext:
        context = ReadContext(
            root, options.levels, options.images, options.class_list, options.dpi, skip=options.out
        )
        contexts.append(context)
        return context

    for item in read_sources(
        options.sources, options.fmt, context_for, skip=options.out, skipped=skipped.append
    ):
        if isinstance(item, InputError):
            report.add_error(item)
            continue
        try:
            _check_not_converted(item, converted)
            width, height, data = _image(item)
            instances = _instances(item, width, height, options.classes, report)
            name = names.allocate(item.image.name)
            with _writing(options.out):
                _place_image(item, data, pool / name, options.symlink)
        except InputError as error:
            report.add_error(error)
            continue
        if item.image.path is not None:
            converted[os.path.realpath(item.image.path)] = item.source
        pages.append(layout.LayoutPage(name, width, height, instances))
        if progress is not None:
            progress(name)
    report.warnings += [warning for context in contexts for warning in context.warnings]
    if not pages:
        raise NothingConverted(_nothing_read(options, report, len(skipped)), report)
    with _writing(options.out):
        _write(options, staging, pool, pages, report)
    return report


def _nothing_read(options: ConvertOptions, report: ConversionReport, skipped: int) -> str:
    """Why no image was read: the files that failed, and those of another format (a wrong `--from`)."""
    sources = ", ".join(display_path(source) for source in options.sources)
    other = f"{skipped} {'file' if skipped == 1 else 'files'} skipped as another format"
    if report.errors:
        why = f"{len(report.errors)} failed, listed above; {other}"
    else:
        why = f"nothing in the {options.fmt.name} format there, {other}: check --from"
    return f"no image read from {sources} ({why}); nothing written to {display_path(options.out)}"


def _check_not_converted(page: SourcePage, converted: dict[str, Path]) -> None:
    """Refuse a page whose image file an earlier annotation file (or entry) was converted with, as `evaluate`
    refuses a second ground truth of an image: two copies of the scan, each without the other's regions,
    would teach the model that those are background, and could land in different splits. Raises
    InputError."""
    image = os.path.realpath(page.image.path) if page.image.path is not None else None
    first = converted.get(image) if image is not None else None
    if first is not None:
        raise InputError(
            page.source,
            f"image {display_path(Path(image))} was converted already, with {display_path(first)} "
            "(one annotation per image: merge them, or convert them separately)",
        )


def _image(page: SourcePage) -> tuple[int, int, bytes | None]:
    """Size of the page image (decoded completely), and its bytes when it is made rather than copied."""
    image = page.image
    if image.path is None and image.load is None:
        raise InputError(page.source, page.image_problem or "image not found")
    data = image.load() if image.load is not None else None
    try:
        width, height = image_size(path=image.path, data=data)
    except ValueError as error:
        raise InputError(image.path or page.source, str(error)) from None
    return width, height, data


def _instances(
    page: SourcePage, width: int, height: int, classes: ClassFilter, report: ConversionReport
) -> list[Instance]:
    instances = page.instances
    if page.relative:
        if not page.width or not page.height:
            raise InputError(page.source, "no page size to scale the coordinates from")
        instances = rectify.scale(instances, width / page.width, height / page.height)
    else:
        stated = (
            page.width if page.width is not None else width,
            page.height if page.height is not None else height,
        )
        if stated != (width, height):
            raise InputError(
                page.source,
                f"image {page.image.name} is {width}x{height} but the annotation says "
                f"{stated[0]:g}x{stated[1]:g}"
                + (turned_note(page.image.path, stated) if page.image.path else ""),
            )
    instances, notes = rectify.rectify(instances, width, height)
    kept = []
    for instance in instances:
        category = classes.apply(instance.category)
        if category is None:
            notes.append(Note("dropped", f"class '{instance.category}' left out", instance.where))
        else:
            kept.append(replace(instance, category=category))
    for note in [*page.notes, *notes]:
        report.add_note(page.source, note)
    return kept


def _place_image(page: SourcePage, data: bytes | None, target: Path, symlink: bool) -> None:
    if data is not None:
        target.write_bytes(data)
    elif symlink:
        os.symlink(page.image.path.absolute(), target)
    else:
        _copy_image(page.image.path, target)


def _copy_image(source: Path, target: Path) -> None:
    """Copy `source` to `target`. A source that cannot be read, gone since it was read for its size (a
    folder cleaned up meanwhile, a network share that dropped), raises InputError naming it, no copy left:
    that page fails, as an image not found does; it was taken for `--out` being unwritable, which stopped
    the whole conversion. A target that cannot be written raises OSError."""
    try:
        with open(source, "rb") as reader, open(target, "wb") as writer:
            while chunk := _read(reader, source):
                writer.write(chunk)
    except InputError:
        target.unlink(missing_ok=True)
        raise
    except OSError as error:
        if error.filename is not None and Path(error.filename) == source:  # opening it
            raise InputError(source, f"cannot read: {error.strerror or error}") from None
        raise


def _read(reader: BinaryIO, source: Path) -> bytes:
    try:
        return reader.read(_COPY_CHUNK)
    except OSError as error:
        raise InputError(source, f"cannot read: {error.strerror or error}") from None


class _NameAllocator:
    """Unique output file names, valid UTF-8 (undecodable bytes of a source name percent-encoded, as the
    json names them); stems are compared ignoring case and Unicode normalization (`stem_key`: the dataset
    may be copied where names are told apart by neither; per-image json is `<stem>.json`) and cut as
    `segment` cuts them (`portable_stem`), so that `<stem>-2.json` still fits in a file name. Leading dots
    (a hidden file) and whitespace at either end are dropped: the trainer, `evaluate` and the reference
    read `list.txt` with each line stripped, and would look for ` scan.png` as `scan.png`, as the trainer
    and `evaluate` would for a name opening with a byte order mark, U+FEFF (`layout.list_names`)."""

    def __init__(self) -> None:
        self._stems: set[str] = set()
        # (stem, suffix) → the counter of the name last given for it, all before it taken: the thousandth
        # `0001.tif` (a page number in each of a thousand volumes) starts there, not at `0001.tif` again
        self._counters: dict[tuple[str, str], int] = {}

    def allocate(self, preferred: str) -> str:
        name = "".join("_" if char in '/\\\n\r\t"' else char for char in output_text(preferred))
        name = re.sub(r"^[.\s\ufeff]+", "", name).rstrip() or "image"
        stem, suffix = portable_stem(Path(name).stem), Path(name).suffix
        counter = self._counters.get((stem, suffix), 1)
        candidate = stem + suffix if counter == 1 else f"{stem}-{counter}{suffix}"
        while stem_key(Path(candidate).stem) in self._stems:
            counter += 1
            candidate = f"{stem}-{counter}{suffix}"
        self._counters[(stem, suffix)] = counter
        self._stems.add(stem_key(Path(candidate).stem))
        return candidate


def _write(
    options: ConvertOptions,
    staging: Path,
    pool: Path,
    pages: list[layout.LayoutPage],
    report: ConversionReport,
) -> None:
    class_names = sorted({instance.category for page in pages for instance in page.instances})
    background = layout.background_prompt(options.dataset_name)
    by_name = {page.name: page for page in pages}
    if options.split is None:
        groups = {"": [page.name for page in pages]}
    else:
        groups = split.assign([page.name for page in pages], options.split, options.seed)
    ids = {"image": 1, "annotation": 1}
    for group, names in groups.items():
        folder = staging / group
        (folder / "image").mkdir(parents=True, exist_ok=True)
        for name in names:
            os.replace(pool / name, folder / "image" / name)
        layout.write_split(folder, [by_name[name] for name in names], class_names, background, ids)
        if group:
            report.splits[group] = len(names)
    pool.rmdir()
    report.images = len(pages)
    report.empty_images = sum(1 for page in pages if not page.instances)
    for page in pages:
        report.instances.update(instance.category for instance in page.instances)
    report.warnings += _dataset_warnings(options, groups, by_name, class_names)
    extra = {"format": options.fmt.name, "levels": sorted(options.levels), "splits": report.splits}
    layout.write_dataset_file(staging, options.dataset_name, class_names, extra)
    (staging / REPORT_FILE).write_text(_json(report.to_json()), encoding="utf-8")


def _dataset_warnings(
    options: ConvertOptions,
    groups: dict[str, list[str]],
    pages: dict[str, SourcePage],
    class_names: list[str],
) -> list[str]:
    """What to warn of in the dataset written: class options that matched nothing, splits left empty, classes
    the train split lacks, class names the model would read as one, and a loss the reference's loader
    would cause."""
    warnings = [f"{option} matched no class" for option in options.classes.unused()]
    warnings += [
        f"split '{group}' has no image ({len(pages)} images are too few for its fraction "
        f"{options.split[group]:.3g})"
        for group, names in groups.items()
        if group and not names and options.split[group] > 0  # a fraction of 0 asks for an empty split
    ]
    warnings += _untrained_classes(groups, pages, class_names)
    warnings += [
        f"the classes name a class twice: {name!r}{read_alike(earlier, name)}; train, finetune and evaluate "
        f"--weights refuse such a dataset: merge them with {map_option(name, earlier)}"
        for earlier, name in repeated_classes(class_names)
    ]
    if "table" in class_names and "text word" in class_names:
        warnings.append("the reference loader drops 'text word' when 'table' exists (rename one)")
    return warnings


def _untrained_classes(
    groups: dict[str, list[str]], pages: dict[str, SourcePage], class_names: list[str]
) -> list[str]:
    """A warning per class of which the `train` split got no instance (a rare class the random split put
    in val alone): every split lists every class, so training prompts with it but only ever as absent,
    and `finetune --val` cannot tell (the class is in the training split's list)."""
    train = groups.get("train")
    if not train:
        return []
    present = {instance.category for name in train for instance in pages[name].instances}
    return [
        f"split 'train' holds no instance of class {name!r}: training would teach the model that it is "
        "never there (convert again with another --seed or a larger share for train)"
        for name in class_names
        if name not in present
    ]


def _json(document: dict) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
