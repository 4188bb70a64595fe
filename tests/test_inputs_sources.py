"""Source expansion (files, directories, globs, stdin), output stems, page ranges."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from docsam_cli.inputs import Document, InputError, collect_documents, parse_page_ranges
from docsam_cli.inputs.sources import IMAGE_SUFFIXES, assign_stems, input_key, walk_folders
from docsam_cli.writers.page_outputs import page_folders


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def names(items: list[Document | InputError]) -> list[str]:
    return [item.path.name for item in items if isinstance(item, Document)]


def errors(items: list[Document | InputError]) -> list[InputError]:
    return [item for item in items if isinstance(item, InputError)]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in [
        "p10.png",
        "p2.png",
        "p1.PDF",
        "notes.txt",
        "page.xml",
        ".hidden.png",
        "sub/s1.tif",
        "sub/s2.jpg",
    ]:
        touch(tmp_path / "scans" / name)
    touch(tmp_path / "scans" / ".cache" / "c.png")
    return tmp_path / "scans"


def test_directory_gives_supported_files_in_natural_order_without_hidden_or_subdirectories(tree):
    assert names(collect_documents([str(tree)])) == ["p1.PDF", "p2.png", "p10.png"]


@pytest.mark.parametrize("given", ["scans", "scans/**/*.png"])
def test_names_alike_but_for_case_or_leading_zeros_come_in_one_order_however_the_folder_lists_them(
    tmp_path, monkeypatch, request, given
):
    """`p1.png`, `P1.png` and `p01.png` are one name in natural order, and came in the order the file
    system listed them (ext4 by a hash of each file system's own, tmpfs newest first): the same folder gave
    its pages, their COCO image ids and JSON lines in another order on another machine or after a copy.
    Such names come in code-point order."""
    for name in ["p01.png", "p1.png", "P1.png", "vol1/a.png", "Vol1/a.png", "vol01/a.png"]:
        touch(tmp_path / "scans" / name)
    monkeypatch.chdir(tmp_path)
    expected = ["P1.png", "p01.png", "p1.png", "Vol1/a.png", "vol01/a.png", "vol1/a.png"]

    def found() -> list[str]:
        documents = collect_documents([given], recursive=True)
        return [document.path.relative_to("scans").as_posix() for document in documents]

    assert found() == expected
    request.getfixturevalue("folders_listed_backwards")
    assert found() == expected


def test_folders_find_jpeg_2000_and_apng_under_every_suffix_pillow_reads_them_by(tmp_path):
    """JPX files are often named `.jpf` (Kakadu, Adobe), JPEG 2000 codestreams `.j2c` or `.jpc`: a folder
    of them was refused as holding no image, though each of them named on its own was read."""
    found = ["a.jp2", "b.j2k", "c.jpx", "d.jpf", "e.j2c", "f.JPC", "g.apng"]
    for name in found:
        touch(tmp_path / "scans" / name)
    assert names(collect_documents([str(tmp_path / "scans")])) == found
    assert names(collect_documents([str(tmp_path / "scans" / "*")])) == found


def test_folders_find_every_suffix_pillow_reads_docsams_formats_by():
    """A `.pfm` (PPM's float map, which docsam reads named on its own) was left out of folders and globs:
    the suffixes are every one Pillow registers for the formats docsam decodes, no fewer."""
    from PIL import Image

    from docsam_cli.inputs.images import IMAGE_FORMATS

    Image.init()
    registered = {suffix for suffix, name in Image.registered_extensions().items() if name in IMAGE_FORMATS}
    assert registered <= IMAGE_SUFFIXES


def test_recursive_directory_includes_subdirectories_but_not_hidden_ones(tree):
    assert names(collect_documents([str(tree)], recursive=True)) == [
        "p1.PDF",
        "p2.png",
        "p10.png",
        "s1.tif",
        "s2.jpg",
    ]


def test_explicit_files_keep_command_line_order_and_any_suffix(tree):
    items = collect_documents([str(tree / "p10.png"), str(tree / "notes.txt"), str(tree / "p2.png")])
    assert names(items) == ["p10.png", "notes.txt", "p2.png"]


def test_glob_filters_by_suffix_and_double_star_spans_directories(tree):
    assert names(collect_documents([str(tree / "p*")])) == ["p1.PDF", "p2.png", "p10.png"]
    assert names(collect_documents([str(tree / "**" / "*.tif")])) == ["s1.tif"]


def test_double_star_does_not_follow_a_link_loop(tmp_path, monkeypatch):
    """Python's glob follows links under `**`: a loop gave a 41-deep alias of the file (and two, below,
    made it run for ever); a link back into the folder walked is not followed, with -r likewise."""
    touch(tmp_path / "rec" / "sub" / "z.png")
    (tmp_path / "rec" / "sub" / "up").symlink_to("..")
    monkeypatch.chdir(tmp_path)
    for pattern in ["rec/**/*.png", "rec/**", "**/z.png"]:
        (document,) = collect_documents([pattern], recursive=True)
        assert isinstance(document, Document) and document.path == Path("rec/sub/z.png"), pattern
    (document,) = collect_documents(["rec"], recursive=True)
    assert document.path == Path("rec/sub/z.png")


def test_a_linked_folder_is_walked_once_under_its_first_name(tmp_path, monkeypatch):
    """A box of scans linked in from a NAS (`scans/box3 -> /mnt/nas/box3`) was left out of `-r` and `**`
    without a word, exit 0; it is walked, once however many links lead to it, and a loop through a link
    out and back ends."""
    touch(tmp_path / "nas" / "box3" / "b.png")
    (tmp_path / "nas" / "box3" / "back").symlink_to(tmp_path / "scans")
    touch(tmp_path / "scans" / "box1" / "a.png")
    (tmp_path / "scans" / "box3").symlink_to(tmp_path / "nas" / "box3")
    (tmp_path / "scans" / "box4").symlink_to(tmp_path / "nas" / "box3")
    monkeypatch.chdir(tmp_path)
    for given in ["scans", "scans/**/*.png", "scans/**"]:
        documents = collect_documents([given], recursive=True)
        assert [document.path for document in documents] == [
            Path("scans/box1/a.png"),
            Path("scans/box3/b.png"),
        ]


def test_double_star_ends_with_two_link_loops(tmp_path):
    touch(tmp_path / "rec" / "sub" / "z.png")
    (tmp_path / "rec" / "sub" / "up").symlink_to("..")
    (tmp_path / "rec" / "self").symlink_to("../rec")
    code = "from docsam_cli.inputs import collect_documents; print(collect_documents(['rec/**/*.png']))"
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert repr(Path("rec", "sub", "z.png")) in run.stdout, run.stderr


def test_folders_and_globs_skip_the_output_folder_but_named_files_are_taken(tmp_path):
    """A run writing into a folder it scans must not take its own outputs (overlays) for inputs."""
    touch(tmp_path / "X" / "page.jpg")
    overlay = touch(tmp_path / "X" / "out" / "overlay" / "page.png")
    out = tmp_path / "X" / "link-to-out"  # compared after resolving links
    out.symlink_to("out")
    for source in [tmp_path / "X", tmp_path / "X" / "**" / "*", tmp_path / "X" / "*" / "*" / "*.png"]:
        items = collect_documents(
            [str(source), str(tmp_path / "X" / "page.jpg")], recursive=True, skip_folders=page_folders(out)
        )
        assert names(items) == ["page.jpg"], source
    items = collect_documents([str(overlay)], skip_folders=page_folders(out))
    assert [item.path for item in items if isinstance(item, Document)] == [overlay]


def test_paths_on_stdin_in_the_output_folders_page_folders_are_left_out_with_a_warning(
    tmp_path, monkeypatch, caplog
):
    """`find scans -name '*.png' | docsam segment - -o scans/out`, run again (after an interruption, or on a
    grown folder), listed the first run's overlays and page images, and segmented them as pages of their
    own (`overlay/p0.png` as `p0_png`, whose overlay the next run took in turn). Such paths are left out as
    a folder's walk leaves them out, whether named by a relative path, an absolute one or through a link,
    and a warning counts them; the user's own pages, `overlay/` folders of their own included, are taken."""
    monkeypatch.chdir(tmp_path)
    pages = [touch(tmp_path / "scans" / "a.png"), touch(tmp_path / "scans" / "overlay" / "b.png")]
    own = [touch(tmp_path / "scans" / "out" / folder / "a.png") for folder in ("overlay", "image")]
    (tmp_path / "link").symlink_to("scans/out")
    listing = [
        *map(str, pages),
        "scans/out/overlay/a.png",
        str(own[1]),
        "link/image/a.png",
        "scans/out/image",
    ]
    with caplog.at_level("WARNING", logger="docsam_cli"):
        items = collect_documents(
            ["-"], stdin=io.StringIO("\n".join(listing)), skip_folders=page_folders(Path("scans/out"))
        )
    assert [item.path for item in items] == pages
    (record,) = caplog.records
    assert record.getMessage() == (
        "-: 4 paths on stdin lie in the output folder's page folders, which are never read as inputs: "
        "left out"
    )
    up = io.StringIO("scans/out/image/..")  # the output folder itself, not a page folder
    (item,) = collect_documents(["-"], stdin=up, skip_folders=page_folders(Path("scans/out")))
    assert str(item.path) == "scans/out/image/.."


def test_an_output_folder_at_or_above_the_scans_skips_only_its_page_files(tmp_path, monkeypatch):
    """`--out .` above the scans, or `--out` the scanned folder itself: the user's pages are inputs, the
    run's images and overlays are not."""
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "scans" / "a.png")
    touch(tmp_path / "scans" / "sub" / "b.png")
    touch(tmp_path / "overlay" / "a.png")  # written by an earlier run with --out .
    touch(tmp_path / "scans" / "overlay" / "a.png")  # ... and by one with --out scans
    touch(tmp_path / "scans" / "image" / "doc_p0001.png")

    def found(source: str, out: str) -> list[str]:
        items = collect_documents([source], recursive=True, skip_folders=page_folders(Path(out)))
        return [item.path.as_posix() for item in items if isinstance(item, Document)]

    assert found("scans/*.png", ".") == ["scans/a.png"]
    assert found("**/a.png", ".") == ["scans/a.png", "scans/overlay/a.png"]  # not this run's: a user's
    for source in ("scans", "scans/**/*.png"):
        assert found(source, "scans") == ["scans/a.png", "scans/sub/b.png"], source
    touch(tmp_path / "proj" / "image" / "a.png")
    (item,) = collect_documents(["proj"], recursive=True, skip_folders=page_folders(Path("proj")))
    assert str(item) == (
        "proj: directory contains no images or PDFs outside the output folder's page folders, which are "
        "never read as inputs"
    )


def test_glob_matching_a_directory_expands_it(tree):
    assert names(collect_documents([str(tree / "su*")])) == ["s1.tif", "s2.jpg"]


def test_missing_path_unmatched_glob_and_empty_directory_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    items = collect_documents([str(tmp_path / "nope.png"), str(tmp_path / "*.jpg"), str(tmp_path / "empty")])
    reasons = [(error.path.name, error.reason) for error in errors(items)]
    assert reasons == [
        ("nope.png", "no such file or directory"),
        ("*.jpg", "no image or PDF matches this pattern"),
        ("empty", "directory contains no images or PDFs"),
    ]
    assert all("\n" not in str(error) and str(error).startswith(str(error.path)) for error in errors(items))


def test_stdin_lists_paths_one_per_line_taken_literally(tree):
    listing = f"{tree / 'p2.png'}\n\n{tree / 'sub'}\r\n{tree / 'p*'}\n"
    items = collect_documents(["-"], stdin=io.StringIO(listing))
    assert names(items) == ["p2.png", "s1.tif", "s2.jpg"]
    assert [error.path.name for error in errors(items)] == ["p*"]  # no glob expansion on stdin


def test_a_list_saved_with_a_byte_order_mark_names_its_first_file(tree):
    """A CRLF list written on Windows (Notepad, PowerShell's UTF-8) starts with a byte order mark, which
    made its first path a missing file."""
    listing = f"\ufeff{tree / 'p2.png'}\r\n{tree / 'p10.png'}\r\n".encode()
    assert names(collect_documents(["-"], stdin=io.BytesIO(listing))) == ["p2.png", "p10.png"]


def test_each_file_appears_once_however_often_it_is_named(tree):
    items = collect_documents([str(tree / "p2.png"), str(tree), str(tree / "." / "p2.png")])
    assert names(items) == ["p2.png", "p1.PDF", "p10.png"]


def test_a_hard_link_is_another_name_of_the_same_file(tree, tmp_path):
    """A file and its hard link (snapshots made with `cp -al`, deduplicated archives) were two inputs, the
    page segmented twice under two ids; a file is now known by its identity on disk, as a symbolic link."""
    os.link(tree / "p2.png", tmp_path / "again.png")
    items = collect_documents([str(tree / "p2.png"), str(tmp_path / "again.png"), str(tree)])
    assert names(items) == ["p2.png", "p1.PDF", "p10.png"]


def test_stems_are_plain_when_unique_and_disambiguated_when_not(tmp_path):
    paths = [
        touch(tmp_path / "vol1" / "0001.tif"),
        touch(tmp_path / "vol2" / "0001.tif"),
        touch(tmp_path / "a" / "scan.png"),
        touch(tmp_path / "a" / "scan.jpg"),
        touch(tmp_path / "b" / "report.pdf"),
        touch(tmp_path / "b" / "report_p0002.png"),
        touch(tmp_path / "c" / "Page.png"),
        touch(tmp_path / "c" / "page.png"),
        touch(tmp_path / "d" / "unique.png"),
    ]
    stems = assign_stems(paths)
    assert stems[:6] == ["vol1__0001", "vol2__0001", "scan_png", "scan_jpg", "report_pdf", "report_p0002_png"]
    assert stems[8] == "unique"
    assert len({stem.lower() for stem in stems}) == len(stems)
    assert stems[6].startswith("Page_") and stems[7].startswith("page_")  # differ only by case: hashed
    assert assign_stems(paths) == stems  # the same inputs give the same names on a re-run


def test_stems_equal_but_for_unicode_normalization_are_disambiguated(tmp_path):
    """`café` composed (NFC, Linux input methods) and decomposed (NFD, as macOS wrote it) are two files on
    Linux but one name on macOS, and look the same everywhere: their outputs must not share a name."""
    composed = touch(tmp_path / "caf\u00e9.png")
    decomposed = touch(tmp_path / "cafe\u0301.png")
    stems = assign_stems([composed, decomposed])
    assert len({unicodedata.normalize("NFC", stem) for stem in stems}) == 2
    assert assign_stems([composed]) == ["caf\u00e9"]  # alone, a name keeps its plain stem


def test_files_keep_the_stems_earlier_runs_gave_them_and_others_avoid_those(tmp_path):
    """A folder that has grown (or a rerun naming fewer files): each file keeps its stem, and a new file
    never takes one an earlier run gave another file, whatever files this run names."""
    scan = touch(tmp_path / "inc" / "scan.png")
    (first,) = assign_stems([scan])
    assert first == "scan"
    earlier = {input_key(scan): first}
    grown = [scan, touch(tmp_path / "inc" / "b" / "scan.png"), touch(tmp_path / "inc" / "scan_p0002.png")]
    stems = assign_stems(grown, earlier)
    assert stems[0] == "scan" and len({stem.lower() for stem in stems}) == 3
    assert stems[1] != "scan" and stems[2] != "scan_p0002"  # that would read as a page of `scan`
    assert assign_stems(grown[1:], earlier) == stems[1:]  # without the first file: theirs are kept free
    assert assign_stems(grown) != stems  # (a fresh folder would lengthen `scan` too)
    link = tmp_path / "link.png"
    link.symlink_to(scan)
    assert assign_stems([link], earlier) == ["scan"]  # the same file under another name


def test_a_hard_link_keeps_the_stem_an_earlier_run_gave_its_file(tmp_path):
    """A file done as `a/scan.png`, named in a rerun first through its hard link `b/scan.png`: the run takes
    the link's name (the file once), which got a new stem, `scan_png`, and the page was done again."""
    scan = touch(tmp_path / "a" / "scan.png")
    (tmp_path / "b").mkdir()
    os.link(scan, tmp_path / "b" / "scan.png")
    earlier = {input_key(scan): "scan"}
    items = collect_documents([str(tmp_path / "b"), str(tmp_path / "a")], earlier_stems=earlier)
    assert [(item.path, item.stem) for item in items] == [(tmp_path / "b" / "scan.png", "scan")]


def test_an_input_is_known_by_its_path_as_named_unless_dotdot_after_a_link_misleads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page = touch(tmp_path / "real" / "imgs" / "page0.png")
    (tmp_path / "real" / "deep").mkdir()
    (tmp_path / "lnk").symlink_to("real/deep")
    (tmp_path / "current").symlink_to("real/imgs")
    assert input_key(Path("current/page0.png")) == str(tmp_path / "current" / "page0.png")  # a link stays
    assert input_key(Path("lnk/../imgs/page0.png")) == str(page)  # the text would say tmp/imgs/page0.png


def test_collect_documents_assigns_the_stems(tmp_path):
    first, second = touch(tmp_path / "x" / "a.png"), touch(tmp_path / "y" / "a.png")
    items = collect_documents([str(first), str(second), str(touch(tmp_path / "b.png"))])
    assert [item.stem for item in items if isinstance(item, Document)] == ["x__a", "y__a", "b"]


@pytest.mark.parametrize(
    ("spec", "count", "pages"),
    [
        ("1-3,7", 10, [1, 2, 3, 7]),
        ("7, 1-3", 10, [1, 2, 3, 7]),
        ("2-2,2", 5, [2]),
        ("4-", 6, [4, 5, 6]),
        ("-2", 6, [1, 2]),
        ("3-9", 4, [3, 4]),
        ("8", 4, []),
    ],
)
def test_page_ranges_select_existing_pages_in_order(spec, count, pages):
    assert parse_page_ranges(spec).select(count) == pages


@pytest.mark.parametrize("spec", ["", "0", "3-1", "a", "1,,2", "-", "1 2", "1-2-3", "0-4"])
def test_invalid_page_ranges_are_rejected(spec):
    with pytest.raises(ValueError, match="page range"):
        parse_page_ranges(spec)


def test_a_directory_that_cannot_be_listed_is_one_error_naming_it(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    touch(locked / "a.png")
    refuse_listing(locked, monkeypatch)
    (error,) = collect_documents([str(locked)])
    assert isinstance(error, InputError)
    assert str(error) == f"{locked}: cannot list directory: Permission denied"


def unlisted_box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`box1/a.png` and `box2/b.png` under `tmp_path`, `box2` refusing to be listed (chmod 000 does not
    stop root, who may run the tests); returns `box2`."""
    touch(tmp_path / "box1" / "a.png")
    locked = tmp_path / "box2"
    touch(locked / "b.png")
    refuse_listing(locked, monkeypatch)
    return locked


def refuse_listing(locked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`os.scandir` refusing to list the folder `locked` (chmod 000 does not stop root, who may run the
    tests). A file descriptor (`shutil.rmtree` removing the test's folder after it) is listed as ever."""
    real_scandir = os.scandir

    def refuse(path="."):
        if not isinstance(path, int) and Path(path) == locked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)


@pytest.mark.parametrize("pattern", ["**/*.png", "**"])
def test_a_folder_under_double_star_that_cannot_be_listed_is_an_error_not_left_out(
    tmp_path, monkeypatch, pattern
):
    """`'scans/**/*.png'` left a folder it could not list out without a word (exit 0, its pages never
    done), where `scans --recursive` names it; the glob now names it too."""
    locked = unlisted_box(tmp_path, monkeypatch)
    items = collect_documents([f"{tmp_path}/{pattern}"])
    assert [str(error) for error in errors(items)] == [f"{locked}: cannot list directory: Permission denied"]
    assert names(items) == ["a.png"]
    only_locked = collect_documents([f"{locked}/**/*.png"])
    assert [str(error) for error in only_locked] == [f"{locked}: cannot list directory: Permission denied"]


@pytest.mark.parametrize("pattern", ["box2/*.png", "*/*.png", "box[12]/*.png", "*/**/*.png"])
def test_a_folder_a_plain_pattern_lists_and_cannot_is_an_error_not_left_out(tmp_path, monkeypatch, pattern):
    """`'locked/*.png'` said "no image or PDF matches this pattern", and `'scans/*/*.png'` left the folder
    out without a word, where the truth is Permission denied; as under `**`, the folder is now named."""
    locked = unlisted_box(tmp_path, monkeypatch)
    items = collect_documents([f"{tmp_path}/{pattern}"])
    assert [str(error) for error in errors(items)] == [f"{locked}: cannot list directory: Permission denied"]
    assert names(items) == ([] if pattern.startswith("box2") else ["a.png"])


def test_stdin_that_cannot_be_read_is_one_error_giving_the_system_s_reason(tmp_path):
    """`docsam segment - < folder`: the shell opens a folder as stdin, and reading it fails."""

    class FolderAsStdin(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))

    (error,) = collect_documents(["-"], stdin=FolderAsStdin())
    assert isinstance(error, InputError)
    assert str(error) == "-: cannot read the list of paths on stdin: Is a directory"


def test_a_folder_linked_in_twice_or_linking_to_itself_is_walked_once(tmp_path):
    """A box of scans linked in from a NAS, under two names, and holding a link to itself: each real folder
    is walked once, under the first of its names the walk meets."""
    outside = tmp_path / "nas"
    touch(outside / "a.png")
    (outside / "again").symlink_to(outside)
    root = tmp_path / "scans"
    root.mkdir()
    (root / "box1").symlink_to(outside)
    (root / "box2").symlink_to(outside)
    walked = [os.path.relpath(folder, root) for folder, _ in walk_folders(root, True, frozenset())]
    assert walked == [".", "box1"]
