"""Option values shared by the model-running commands: sizes, geometry, devices, output formats."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from docsam_cli.app import load_command
from docsam_cli.errors import UsageError
from docsam_cli.runtime import GeometryOptions, check_device_name, parse_size, pick_device
from docsam_cli.weights import ResolvedWeights, find_entry
from docsam_cli.writers.formats import FORMATS, parse_formats
from model.inference import Geometry
from model.inference.geometry import resized_size


def test_sizes_are_one_number_or_two():
    assert parse_size("640", "--window") == (640, 640)
    assert parse_size(" 640 , 800 ", "--window") == (640, 800)
    assert parse_size(None, "--window") is None
    for bad in ("0", "-1", "a", "1,2,3", "", "640,", "6.5"):
        with pytest.raises(ValueError, match=r"^--window takes N or A,B"):
            parse_size(bad, "--window")
    with pytest.raises(ValueError, match="--short-side values must be at most 32768"):
        parse_size("99999999999", "--short-side")  # built 10^18 windows until memory ran out


def test_geometry_options_fill_in_the_reference_and_the_registry_defaults():
    assert GeometryOptions.parse().resolve(None) == Geometry()
    entry = find_entry("docsam-large-keepsize")
    assert entry is not None and entry.keep_size
    keep_size = ResolvedWeights(Path("keepsize.pth"), entry)
    assert GeometryOptions.parse().resolve(keep_size) == Geometry.keep_size_default()
    assert GeometryOptions.parse(keep_size=False).resolve(keep_size) == Geometry()
    given = GeometryOptions.parse("700,900", "512,480", "256", None).resolve(keep_size)
    assert given == Geometry(short_range=(700, 900), patch=(512, 480), stride=(256, 256), keep_size=True)


@pytest.mark.parametrize("command", ["segment", "evaluate"])
def test_the_short_side_help_says_what_a_range_is_under_the_keep_size_rule(command):
    """`--short-side LOW,HIGH` was said to resize the short side to (LOW+HIGH)//2, which the keep-size rule
    (the keep-size model's own, or --keep-size) does not do: a page whose short side is in the range keeps
    its size, one outside it is brought to the nearer end."""
    keep_size = GeometryOptions.parse("700,900", keep_size=True).resolve(None)
    assert resized_size((750, 1000), keep_size) == (750, 1000)  # not (800, 1067)
    assert resized_size((600, 1000), keep_size) == (700, 1167)
    (short_side,) = [param for param in load_command(command).params if param.name == "short_side"]
    said = "with the keep-size rule, a short side in LOW..HIGH is kept, else brought into it"
    assert said in short_side.help


def test_a_short_side_range_must_not_be_reversed():
    assert GeometryOptions.parse("800").short_side == (800, 800)
    with pytest.raises(ValueError, match="LOW <= HIGH"):
        GeometryOptions.parse("900,700")


def test_a_one_pixel_window_side_needs_a_stride():
    """The default stride is half the window: a 1-pixel side would give stride 0, which divided by zero on
    every page; it is refused up front (with a stride given, it runs)."""
    for window in ("1", "1,64", "64,1"):
        with pytest.raises(ValueError, match="--window sides must be at least 2"):
            GeometryOptions.parse(window=window)
    assert GeometryOptions.parse(window="1", stride="1").resolve(None).window_stride == (1, 1)
    with pytest.raises(ValueError, match="patch sides must be at least 2"):
        Geometry(patch=(1, 1))


def test_a_stride_longer_than_the_window_is_refused():
    """`--window 256 --stride 320` (a smaller window tried, the stride of 640-px windows kept) left a band of
    64 px between windows that no window saw: regions there were found on the page's thumbnail alone,
    without a word. Both given, such a stride is refused naming them; a stride of the window runs."""
    for window, stride in (("256", "320"), ("256,512", "200,600"), ("256", "300,100")):
        with pytest.raises(ValueError, match=rf"^--stride {stride} is longer than --window {window}: "):
            GeometryOptions.parse(window=window, stride=stride)
    assert GeometryOptions.parse(window="256,512", stride="256,512").resolve(None).window_stride == (256, 512)


def test_a_stride_alone_longer_than_the_window_it_runs_with_is_refused():
    """`--stride 700` without `--window` ran with the reference's 640-px windows, 60 px between them seen by
    no window, without a word; it is refused once the window is known, the weights' included (a fine-tuned
    model's 800-px windows take a stride of 700)."""
    with pytest.raises(
        UsageError, match=r"^--stride 700,700 is longer than the window, 640x640 without --window"
    ):
        GeometryOptions.parse(stride="700").resolve(None)
    assert GeometryOptions.parse(stride="640").resolve(None).window_stride == (640, 640)
    entry = find_entry("docsam-large-m6doc")
    assert entry is not None and entry.patch_size == 800
    fine_tuned = ResolvedWeights(Path("docsam_large_m6doc.pth"), entry)
    assert GeometryOptions.parse(stride="700").resolve(fine_tuned).window_stride == (700, 700)


def test_device_names():
    for name in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert check_device_name(name) == name
    assert check_device_name("CPU") == "cpu" and check_device_name("Cuda:1") == "cuda:1"  # as choices are
    for name in ("gpu", "cuda:", "cuda:x", "mps", "cuda:0,1", ""):
        with pytest.raises(ValueError, match=r"auto .*cpu, cuda or cuda:N"):
            check_device_name(name)
    assert pick_device("cpu") == torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    expected = "CUDA is not available" if count == 0 else f"this machine has {count} CUDA devices"
    with pytest.raises(UsageError, match=f"^--device cuda:{count}: {expected}"):
        pick_device(f"cuda:{count}")


def test_output_formats_are_a_comma_list_of_known_names():
    assert parse_formats("coco") == {"coco"}
    assert parse_formats(" PAGE, jsonl ,") == {"page", "jsonl"}
    assert parse_formats(",".join(FORMATS)) == set(FORMATS)
    with pytest.raises(ValueError, match=r"^'pdf' is not an output format; choose any of coco, page"):
        parse_formats("coco,pdf")
    with pytest.raises(ValueError, match="no output format given"):
        parse_formats(" , ")
