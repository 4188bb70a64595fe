"""Image decoding: every Pillow mode → upright BGR uint8, multi-page TIFF, one-line errors for bad files."""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from inputs_corpus import (
    exif_with_a_mistyped_tag,
    gif_with_partial_first_frame,
    planar_tiff,
    premultiplied_grey_alpha_tiff,
    sixteen_bit_png,
    subsampled_ycbcr_tiff,
    twelve_bit_tiff,
)
from lxml import etree
from PIL import Image, ImageFile, TiffImagePlugin

from docsam_cli.datasets.images import image_size
from docsam_cli.inputs import (
    InputError,
    LoadOptions,
    Page,
    PageTask,
    collect_documents,
    iter_page_tasks,
    max_image_pixels,
    parse_page_ranges,
    prefetch,
    set_max_image_pixels,
)
from docsam_cli.inputs.images import load_frame, open_image, upright_header


def tasks_for(*paths: Path, options: LoadOptions | None = None) -> list[PageTask | InputError]:
    return list(iter_page_tasks(collect_documents([str(path) for path in paths]), options))


def load(path: Path) -> Page:
    (task,) = tasks_for(path)
    assert isinstance(task, PageTask), task
    return task.load()


def failure(path: Path) -> InputError:
    """The InputError a file gives, whether found when listing its pages or when decoding them."""
    (item,) = tasks_for(path)
    if isinstance(item, InputError):
        return item
    with pytest.raises(InputError) as caught:
        item.load()
    return caught.value


def assert_one_line_naming(error: InputError, path: Path) -> None:
    assert str(error).startswith(f"{path}: ") or str(error).startswith(f"{path} (page")
    assert "\n" not in str(error) and "Traceback" not in str(error)


@pytest.fixture
def pixel_limit():
    """Restore the decompression-bomb limit after a test changes it."""
    saved = max_image_pixels()
    yield
    set_max_image_pixels(saved)


def check_page(page: Page, height: int, width: int) -> np.ndarray:
    assert page.image.dtype == np.uint8 and page.image.shape == (height, width, 3)
    assert page.image.flags.c_contiguous
    assert (page.height, page.width) == (height, width)
    return page.image


def test_rgb_comes_out_in_bgr_order(tmp_path):
    pixels = np.zeros((3, 5, 3), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 0)  # red
    pixels[2, 4] = (10, 20, 30)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    page = load(tmp_path / "rgb.png")
    image = check_page(page, 3, 5)
    assert image[0, 0].tolist() == [0, 0, 255] and image[2, 4].tolist() == [30, 20, 10]
    assert page.page is None and page.page_id == "rgb" and page.source == tmp_path / "rgb.png"


def test_one_bit_becomes_black_and_white(tmp_path):
    bits = Image.new("1", (4, 2), 0)
    bits.putpixel((1, 0), 1)
    bits.save(tmp_path / "bits.tif")
    image = check_page(load(tmp_path / "bits.tif"), 2, 4)
    assert image[0, 1].tolist() == [255, 255, 255] and image[1, 3].tolist() == [0, 0, 0]


def test_grayscale_is_replicated_to_three_channels(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    image = check_page(load(tmp_path / "gray.png"), 3, 4)
    assert (image == gray[:, :, None]).all()


def test_palette_maps_to_its_colours_and_transparent_entries_to_white(tmp_path):
    palette = Image.new("P", (3, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * 759)
    palette.putdata([0, 1, 2])
    palette.save(tmp_path / "palette.png")
    image = check_page(load(tmp_path / "palette.png"), 1, 3)
    assert image[0].tolist() == [[0, 0, 255], [255, 0, 0], [0, 255, 0]]
    palette.save(tmp_path / "palette-transparent.png", transparency=1)
    image = check_page(load(tmp_path / "palette-transparent.png"), 1, 3)
    assert image[0].tolist() == [[0, 0, 255], [255, 255, 255], [0, 255, 0]]


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0] = [(255, 0, 0, 255), (255, 0, 0, 128), (0, 0, 255, 0)]
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    image = check_page(load(tmp_path / "rgba.png"), 1, 3)
    assert image[0, 0].tolist() == [0, 0, 255]
    assert image[0, 2].tolist() == [255, 255, 255]
    blue, green, red = image[0, 1].tolist()
    assert red == 255 and abs(green - 127) <= 1 and abs(blue - 127) <= 1
    gray_alpha = Image.fromarray(np.array([[[0, 255], [0, 0]]], dtype=np.uint8), mode="LA")
    gray_alpha.save(tmp_path / "la.png")
    image = check_page(load(tmp_path / "la.png"), 1, 2)
    assert image[0].tolist() == [[0, 0, 0], [255, 255, 255]]


def test_grey_with_premultiplied_alpha_is_composited_on_white(tmp_path):
    """A grey TIFF with associated (premultiplied) alpha, which Pillow 13 opens in mode "La", failed with
    "cannot decode: ValueError: conversion from La to L not supported"; it is composited on white as every
    alpha is. (Earlier Pillows cannot open it: one error line, as for any TIFF they cannot read.)"""
    samples = np.array([[[0, 255], [0, 0], [64, 128]]], np.uint8)  # black, transparent, half-covering grey
    (tmp_path / "grey.tif").write_bytes(premultiplied_grey_alpha_tiff(samples))
    try:
        Image.open(tmp_path / "grey.tif").close()
    except OSError:
        pytest.skip("this Pillow cannot read grey with associated alpha")
    image = check_page(load(tmp_path / "grey.tif"), 1, 3)
    assert image[0, :2].tolist() == [[0, 0, 0], [255, 255, 255]]
    assert abs(image[0, 2, 0] - 191) <= 1  # grey 127 at half cover over white


def test_sixteen_bit_grayscale_keeps_the_top_eight_bits(tmp_path):
    deep = np.array([[0, 0x1234, 0x80FF, 0xFFFF]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    image = check_page(load(tmp_path / "deep.png"), 1, 4)
    assert image[0, :, 0].tolist() == [0x00, 0x12, 0x80, 0xFF]
    assert (image[..., 0] == image[..., 2]).all()


def test_sixteen_bit_grayscale_transparency_is_composited_on_white(tmp_path):
    """A 16-bit grey PNG's transparent grey level (tRNS) is white, as every other transparency: Pillow's
    conversion to RGBA does not reach 16-bit modes, and a transparent background came out as stored
    (grey level 1000 of 65535: black)."""
    deep = np.array([[0, 1000, 0x80FF, 0xFFFF]], dtype=np.uint16)
    (tmp_path / "deep.png").write_bytes(sixteen_bit_png(deep, (1000,)))
    assert Image.open(tmp_path / "deep.png").info["transparency"] == 1000
    image = check_page(load(tmp_path / "deep.png"), 1, 4)
    assert image[0, :, 1].tolist() == [0x00, 0xFF, 0x80, 0xFF]


def test_sixteen_bit_rgb_transparency_is_composited_on_white(tmp_path):
    """A 16-bit RGB PNG's transparent colour (tRNS) is white: Pillow states it in 16-bit values but hands
    the pixels over in 8 bits, so it matched none of them (any key above 0xFF, left as stored) or wrong ones
    (a key of 0x00FF blue matched the 8-bit blue 0xFF, from 0xFF00 to 0xFFFF). The key is matched on the
    16-bit samples, with the EXIF orientation applied to it as to the pixels."""
    pixels = np.array([[[0xFFFF, 0xFFFF, 0xFFFF], [0, 0, 0xFFFF], [0x1234, 0x5678, 0x9ABC]]], np.uint16)
    (tmp_path / "keyed.png").write_bytes(sixteen_bit_png(pixels, (0x1234, 0x5678, 0x9ABC)))
    image = check_page(load(tmp_path / "keyed.png"), 1, 3)
    assert image[0].tolist() == [[255, 255, 255], [255, 0, 0], [255, 255, 255]]
    (tmp_path / "blue.png").write_bytes(sixteen_bit_png(pixels, (0, 0, 0xFF), orientation=3))
    image = check_page(load(tmp_path / "blue.png"), 1, 3)
    assert image[0].tolist() == [[0x9A, 0x56, 0x12], [255, 0, 0], [255, 255, 255]]
    (tmp_path / "turned.png").write_bytes(sixteen_bit_png(pixels, (0, 0, 0xFFFF), orientation=3))
    image = check_page(load(tmp_path / "turned.png"), 1, 3)
    assert image[0].tolist() == [[0x9A, 0x56, 0x12], [255, 255, 255], [255, 255, 255]]


def test_twelve_bit_tiffs_keep_their_top_eight_bits(tmp_path):
    """Pillow hands a 12-bit grey TIFF over in a 16-bit mode but with its values as stored, 0..4095:
    taking the top 8 of 16 bits made a white page (4095) grey 15, almost black."""
    (tmp_path / "deep.tif").write_bytes(twelve_bit_tiff(np.array([[0, 0x123, 0x800, 0xFFF]])))
    assert Image.open(tmp_path / "deep.tif").mode == "I;16"
    image = check_page(load(tmp_path / "deep.tif"), 1, 4)
    assert image[0, :, 1].tolist() == [0x00, 0x12, 0x80, 0xFF]


def test_white_is_zero_tiffs_come_out_as_viewers_show_them_at_every_depth(tmp_path):
    """PhotometricInterpretation 0 (WhiteIsZero): 0 is white. Pillow writes 16-bit and float samples as
    given and reads them back as stored (a white page came out black); 8-bit ones it inverts both ways,
    so they come back as saved and must not be inverted twice."""
    samples = {
        "deep.tif": (np.array([[0, 0x1234, 0xFFFF]], dtype=np.uint16), [0xFF, 0xED, 0x00]),
        "float.tif": (np.array([[0.0, 0.5, 1.0]], dtype=np.float32), [255, 127, 0]),
        "grey.tif": (np.array([[0, 0x12, 0xFF]], dtype=np.uint8), [0x00, 0x12, 0xFF]),
    }
    for name, (values, expected) in samples.items():
        for compression in ("raw", "tiff_lzw"):
            Image.fromarray(values).save(tmp_path / name, tiffinfo={262: 0}, compression=compression)
            assert Image.open(tmp_path / name).tag_v2[262] == 0
            assert check_page(load(tmp_path / name), 1, 3)[0, :, 1].tolist() == expected, (name, compression)


def test_thirty_two_bit_integers_are_read_by_their_range_and_sixteen_bit_pgm_by_its_top_bits(tmp_path):
    """Pillow opens 32-bit integer TIFF and 16-bit PGM in the same mode "I": the TIFF's values 0..255 are
    8-bit grey (they came out black), 16-bit ones keep their top bits, wider ones are scaled to their
    maximum; the PGM keeps its top 8 bits."""
    for values, expected in (([0, 100, 255], [0, 100, 255]), ([0, 0x1234, 0xFFFF], [0, 0x12, 0xFF])):
        Image.fromarray(np.array([values], dtype=np.int32)).save(tmp_path / "wide.tif")
        assert Image.open(tmp_path / "wide.tif").mode == "I"
        assert check_page(load(tmp_path / "wide.tif"), 1, 3)[0, :, 1].tolist() == expected
    Image.fromarray(np.array([[0, 1 << 20, 1 << 24]], dtype=np.int32)).save(tmp_path / "wide.tif")
    assert check_page(load(tmp_path / "wide.tif"), 1, 3)[0, :, 1].tolist() == [0, 15, 255]
    samples = np.array([[0, 0x1234, 0xFFFF]], dtype=">u2")
    (tmp_path / "deep.pgm").write_bytes(b"P5\n3 1\n65535\n" + samples.tobytes())
    assert Image.open(tmp_path / "deep.pgm").mode == "I"
    assert check_page(load(tmp_path / "deep.pgm"), 1, 3)[0, :, 1].tolist() == [0, 0x12, 0xFF]


def test_sixteen_bit_colour_keeps_the_top_eight_bits(tmp_path):
    deep = np.array([[[0x0102, 0x8000, 0xFFFF]]], dtype=np.uint16)  # OpenCV order: B, G, R
    cv2.imwrite(str(tmp_path / "deep-colour.png"), deep)
    image = check_page(load(tmp_path / "deep-colour.png"), 1, 1)
    assert image[0, 0].tolist() == [0x01, 0x80, 0xFF]


def test_cmyk_is_converted_to_rgb(tmp_path):
    Image.new("CMYK", (2, 2), (255, 0, 0, 0)).save(tmp_path / "cyan.jpg", quality=100)
    image = check_page(load(tmp_path / "cyan.jpg"), 2, 2)
    blue, green, red = image[0, 0].tolist()
    assert blue > 240 and green > 240 and red < 15


def test_float_images_read_as_unit_range(tmp_path):
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F").save(tmp_path / "float.tif")
    image = check_page(load(tmp_path / "float.tif"), 1, 3)
    assert image[0, :, 1].tolist() == [0, 128, 255]


def test_float_images_past_the_unit_range_are_read_as_0_to_255_and_clipped(tmp_path):
    values = np.array([[-3.0, 0.0, 100.0, 255.0, 300.0]], dtype=np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    image = check_page(load(tmp_path / "float.tif"), 1, 5)
    assert image[0, :, 1].tolist() == [0, 0, 100, 255, 255]


def test_a_gif_frame_that_covers_part_of_its_screen_leaves_the_rest_white(tmp_path):
    """A GIF whose first frame covers part of its logical screen came out with the rest in palette colour
    0 (Pillow's fill; black here) where viewers show nothing, the screen before any frame: it is white now,
    as every transparency is; a transparent colour inside the frame still is too."""
    frame = Image.new("P", (10, 6), 1)
    frame.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])
    frame.putpixel((0, 0), 2)
    (tmp_path / "partial.gif").write_bytes(gif_with_partial_first_frame(frame, (40, 20), (12, 5)))
    image = check_page(load(tmp_path / "partial.gif"), 20, 40)
    assert image[5, 12].tolist() == [255, 0, 0] and image[5:11, 13:22].tolist() == [[[0, 0, 255]] * 9] * 6
    inside = np.zeros((20, 40), bool)
    inside[5:11, 12:22] = True
    assert (image[~inside] == 255).all()
    frame.info["transparency"] = 2
    (tmp_path / "clear.gif").write_bytes(gif_with_partial_first_frame(frame, (40, 20), (12, 5)))
    image = check_page(load(tmp_path / "clear.gif"), 20, 40)
    assert image[5, 12].tolist() == [255, 255, 255] and (image[~inside] == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((2, 4, 3), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display after turning 90° clockwise
    Image.fromarray(pixels).save(tmp_path / "phone.png", exif=exif)
    image = check_page(load(tmp_path / "phone.png"), 4, 2)
    assert image[0, 1].tolist() == [0, 0, 255]  # the top-left corner went to the top right
    assert image[..., 2].sum() == 255


def test_an_exif_block_pillow_cannot_rewrite_still_turns_the_page(tmp_path):
    """Pillow's `exif_transpose` turns the pixels and then rewrites the EXIF block, which fails on some
    cameras' blocks (a tag of another type than TIFF says): the page came out as stored, sideways, while
    its header size (`evaluate`, ALTO units) and its resolution were taken turned, as viewers show it."""
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:5, :5] = 255
    Image.fromarray(pixels).save(tmp_path / "camera.jpg", exif=exif_with_a_mistyped_tag(6), quality=100)
    page = load(tmp_path / "camera.jpg")
    assert (page.width, page.height) == (40, 60) and page.unlike_file
    assert page.image[:5, -5:].min() > 200  # the top-left corner went to the top right
    with open_image(tmp_path / "camera.jpg") as image:
        assert upright_header(image)[0] == (40, 60)
    assert image_size(tmp_path / "camera.jpg") == (40, 60)


def _png_with_a_chunk_after_its_pixels(path: Path, kind: bytes, data: bytes) -> Path:
    """A 60x40 PNG with a chunk of `kind` holding `data` after its IDAT (where the PNG specification allows
    metadata too; Pillow writes it before, ImageMagick its dates after)."""
    Image.new("RGB", (60, 40), "white").save(path)
    png = path.read_bytes()
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    end = png.rindex(b"IEND") - 4
    path.write_bytes(png[:end] + chunk + png[end:])
    return path


def test_a_png_is_sized_from_its_header_unless_exif_follows_its_pixels(tmp_path, monkeypatch):
    """Pillow decodes a whole PNG whose header holds no EXIF to look for one after the pixels, so reading an
    orientation from the header (evaluate's ground-truth sizes, pre-resized copies, ALTO units) decoded every
    such scan; only a PNG with EXIF or XMP after its pixels needs that, and its orientation still turns it."""
    exif = Image.Exif()
    exif[274] = 6
    xmp = b'XML:com.adobe.xmp\0\0\0\0\0<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    for kind, data in ((b"eXIf", exif.tobytes()[6:]), (b"iTXt", xmp)):  # EXIF: no JPEG "Exif\0\0" here
        turned = _png_with_a_chunk_after_its_pixels(tmp_path / f"{kind.decode()}.png", kind, data)
        assert load(turned).image.shape[:2] == (60, 40), kind
        assert image_size(turned, decode=False) == (40, 60), kind
    dated = _png_with_a_chunk_after_its_pixels(tmp_path / "dated.png", b"tEXt", b"date:create\x002026-12-07")
    plain = tmp_path / "plain.png"
    Image.new("RGB", (60, 40), "white").save(plain)

    def decode(image: ImageFile.ImageFile) -> None:
        raise AssertionError(f"{image.filename} decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)
    for path in (plain, dated):
        assert image_size(path, decode=False) == (60, 40), path
        with open_image(path) as image:
            assert upright_header(image)[0] == (60, 40), path


def test_a_turned_tiff_pages_resolution_is_turned_with_it(tmp_path):
    """A TIFF page stored on its side (Orientation 6) at 300 x 150 dpi is 150 dpi across once upright; its
    `image/<id>.png` said 300, as Pillow turns a TIFF as it decodes it and drops the tag that said so."""
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[274] = 6
    frames = [Image.new("L", (60, 30), 200), Image.new("L", (60, 30), 100)]
    frames[0].save(
        tmp_path / "fax.tif", save_all=True, append_images=frames[1:], tiffinfo=tags, dpi=(300, 150)
    )
    pages = [task.load() for task in tasks_for(tmp_path / "fax.tif")]
    assert [page.image.shape[:2] for page in pages] == [(60, 30), (60, 30)]
    assert [page.dpi for page in pages] == [(150, 300), (150, 300)]


def test_each_tiff_page_has_the_resolution_its_own_tags_state(tmp_path):
    """Pillow keeps a page's dpi for the later pages whose tags state none in inches or centimetres:
    a page at 200 in no absolute unit (ResolutionUnit 1) after one at 300 dpi was said to be 300 dpi in
    its `image/<id>.png`."""
    unitless = TiffImagePlugin.ImageFileDirectory_v2()
    unitless[282], unitless[283], unitless[296] = 200.0, 200.0, 1
    with TiffImagePlugin.AppendingTiffWriter(tmp_path / "pages.tif", new=True) as tiff:
        for options in ({"dpi": (300, 300)}, {"tiffinfo": unitless}, {}, {"dpi": (118, 59)}):
            Image.new("L", (8, 8), 200).save(tiff, format="TIFF", **options)
            tiff.newFrame()
    dpis = [task.load().dpi for task in tasks_for(tmp_path / "pages.tif")]
    assert dpis == [(300, 300), None, None, (118, 59)]


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_turned_tiff_is_read_as_a_turned_jpeg_is(tmp_path, orientation):
    """A TIFF's Orientation tag turns it as EXIF's turns a JPEG: its header's size and resolution
    (`evaluate`'s pre-resized copies, ALTO's units) are the upright page's, and the page is not the pixels
    the file stores (saved upright for PAGE, ALTO and COCO to name). Both were taken as stored: Pillow turns
    a TIFF as it decodes it, drops the tag, and reports the turned size in the header already."""
    pixels = np.zeros((30, 60), np.uint8)
    pixels[:5, :5] = 255
    turned = {6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90, 3: Image.Transpose.ROTATE_180}
    expected = Image.fromarray(pixels).transpose(turned[orientation]) if orientation in turned else None
    jpeg = tmp_path / "scan.jpg"
    exif = Image.Exif()
    exif[274] = orientation
    Image.fromarray(pixels).save(jpeg, exif=exif.tobytes(), dpi=(300, 150), quality=100)
    tiff = tmp_path / "scan.tif"
    Image.fromarray(pixels).save(tiff, tiffinfo={274: orientation}, dpi=(300, 150))
    for path in (jpeg, tiff):
        page = load(path)
        with open_image(path) as image:
            assert upright_header(image) == ((page.width, page.height), page.dpi), path
        assert page.unlike_file == (orientation != 1), path
        if expected is not None:
            assert (page.width, page.height) == expected.size
            assert page.dpi == ((150, 300) if orientation in (6, 8) else (300, 150))
    assert (load(tiff).image[..., 0] == np.asarray(expected or Image.fromarray(pixels))).all()


@pytest.mark.parametrize("name", ["anim.gif", "anim.webp", "anim.png"])
def test_an_animated_image_gives_its_first_frame_and_says_how_many_it_leaves_out(tmp_path, caplog, name):
    """An animated GIF, WebP or PNG (APNG) gave its first frame only, without a word: a user who scanned
    to an animation (or was handed one) learnt nothing of the frames left out."""
    frames = [Image.new("RGB", (40, 20), colour) for colour in ("red", "green", "blue")]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=100, lossless=True)
    Image.new("RGB", (40, 20), "red").save(tmp_path / f"still-{name}")
    with caplog.at_level("WARNING", logger="docsam_cli"):
        page = load(tmp_path / name)
        load(tmp_path / f"still-{name}")
    assert page.page is None and page.image[0, 0].tolist() == [0, 0, 255]
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith(f"{tmp_path / name}: an animated ")
    assert record.getMessage().endswith("of 3 frames: only its first is read (2 frames left out)")
    if name.endswith(".gif"):  # cut in the second frame's header (Pillow: IndexError): the first is the page
        data = (tmp_path / name).read_bytes()
        control = b"\x21\xf9\x04"  # a frame's graphic control extension
        (tmp_path / "cut.gif").write_bytes(data[: data.index(control, data.index(control) + 1) + 3])
        assert load(tmp_path / "cut.gif").image[0, 0].tolist() == [0, 0, 255]


@pytest.mark.parametrize(
    ("name", "kind"), [("two.gif", "GIF"), ("two.webp", "WEBP"), ("two.png", "PNG (APNG)")]
)
def test_the_warning_names_the_kind_of_animation_and_one_frame_left_out_in_the_singular(
    tmp_path, caplog, name, kind
):
    frames = [Image.new("RGB", (40, 20), colour) for colour in ("red", "green")]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=100, lossless=True)
    with caplog.at_level("WARNING", logger="docsam_cli"):
        load(tmp_path / name)
    (record,) = caplog.records
    assert record.getMessage() == (
        f"{tmp_path / name}: an animated {kind} of 2 frames: only its first is read (1 frame left out)"
    )


def test_multi_page_tiff_gives_one_page_per_frame(tmp_path):
    frames = [
        Image.new("RGB", (6, 4), (255, 0, 0)),
        Image.new("L", (3, 5), 77),
        Image.new("1", (2, 2), 1),
    ]
    frames[0].save(tmp_path / "book.tif", save_all=True, append_images=frames[1:])
    tasks = tasks_for(tmp_path / "book.tif")
    assert [(task.page, task.page_id) for task in tasks] == [
        (1, "book_p0001"),
        (2, "book_p0002"),
        (3, "book_p0003"),
    ]
    pages = [task.load() for task in tasks]
    assert [page.image.shape for page in pages] == [(4, 6, 3), (5, 3, 3), (2, 2, 3)]
    assert pages[0].image[0, 0].tolist() == [0, 0, 255]
    assert (pages[1].image == 77).all() and (pages[2].image == 255).all()
    selected = tasks_for(tmp_path / "book.tif", options=LoadOptions(pages=parse_page_ranges("2-")))
    assert [task.page for task in selected] == [2, 3]


def test_page_selection_does_not_apply_to_single_images(tmp_path):
    Image.new("RGB", (2, 2)).save(tmp_path / "one.png")
    (task,) = tasks_for(tmp_path / "one.png", options=LoadOptions(pages=parse_page_ranges("3")))
    assert task.page is None and task.page_id == "one"


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    error = failure(tmp_path / "empty.png")
    assert error.reason == "empty file (0 bytes)"
    assert_one_line_naming(error, tmp_path / "empty.png")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("these are notes, not pixels\n" * 10)
    error = failure(tmp_path / "notes.png")
    assert "not an image" in error.reason
    assert_one_line_naming(error, tmp_path / "notes.png")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_truncated_image(tmp_path, suffix):
    noise = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / f"full{suffix}")
    data = (tmp_path / f"full{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    error = failure(tmp_path / f"cut{suffix}")
    assert "truncated" in error.reason or "corrupt" in error.reason
    assert_one_line_naming(error, tmp_path / f"cut{suffix}")


@pytest.mark.parametrize("cut", [2000, 0.7])
def test_a_cut_multi_page_tiff_is_one_line_naming_it_and_no_pillow_warning(shared_data, tmp_path, cut):
    """Pillow warned "Corrupt EXIF data" (two raw lines on stderr), then the file was "not an image" or
    "cannot read image header: TypeError: Missing dimensions". Cut in its first page, the file is one
    error; cut later, the pages before the cut are still read and the rest is one error."""
    data = (shared_data / "pdfs/pdf-docling-tests/tests/data/tiff/sources/2206.01062.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: cut if isinstance(cut, int) else int(len(data) * cut)])
    with warnings.catch_warnings(record=True) as shown:
        if isinstance(cut, int):
            errors, pages = [failure(tmp_path / "cut.tif")], []
        else:
            *tasks, last = tasks_for(tmp_path / "cut.tif")
            errors, pages = [last], [task.load() for task in tasks[:1]]
            assert isinstance(last, InputError) and last.page == len(tasks) + 1
    for error in errors:
        assert error.reason.startswith("truncated or corrupt TIFF")
        assert_one_line_naming(error, tmp_path / "cut.tif")
    if isinstance(cut, int):  # Pillow cannot tell a cut header from a kind of TIFF it does not read
        assert "or a kind of TIFF Pillow cannot read" in errors[0].reason
    assert [str(warning.message) for warning in shown] == []
    assert all(page.image.size for page in pages)


def test_pages_selected_past_the_cut_of_a_multi_page_tiff_are_the_cut_s_error_alone(shared_data, tmp_path):
    """`--pages` naming only pages after the damaged directory: the error is the damage, once, not "none of
    the selected pages exists" (the listing cannot tell how many pages there were)."""
    data = (shared_data / "pdfs/pdf-docling-tests/tests/data/tiff/sources/2206.01062.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: int(len(data) * 0.7)])
    readable = len(tasks_for(tmp_path / "cut.tif")) - 1
    options = LoadOptions(pages=parse_page_ranges(f"{readable + 2}-{readable + 4}"))
    (error,) = tasks_for(tmp_path / "cut.tif", options=options)
    assert isinstance(error, InputError) and error.page == readable + 1
    assert error.reason.startswith("truncated or corrupt TIFF (page directory")


def test_tiff_thumbnails_and_masks_are_no_pages(tmp_path):
    """TIFF 6.0 marks a reduced-resolution copy (NewSubfileType bit 0) and a transparency mask (bit 2):
    they are not pages of the document."""
    page = Image.new("RGB", (60, 40), (255, 0, 0))
    thumbnail = TiffImagePlugin.ImageFileDirectory_v2()
    thumbnail[254] = 1
    mask = TiffImagePlugin.ImageFileDirectory_v2()
    mask[254] = 4
    with TiffImagePlugin.AppendingTiffWriter(tmp_path / "scan.tif", True) as tiff:
        page.save(tiff, format="TIFF")
        tiff.newFrame()
        page.resize((15, 10)).save(tiff, format="TIFF", tiffinfo=thumbnail)
        tiff.newFrame()
    (task,) = tasks_for(tmp_path / "scan.tif")
    assert (task.page, task.page_id, task.load().image.shape) == (None, "scan", (40, 60, 3))
    with TiffImagePlugin.AppendingTiffWriter(tmp_path / "thumbnail-first.tif", True) as tiff:
        page.resize((15, 10)).save(tiff, format="TIFF", tiffinfo=thumbnail)
        tiff.newFrame()
        page.save(tiff, format="TIFF")
        tiff.newFrame()
    first = tmp_path / "thumbnail-first.tif"
    (task,) = tasks_for(first)
    assert (task.page, task.frame, task.load().image.shape) == (None, 1, (40, 60, 3))
    assert load_frame(first).shape == (40, 60, 3)  # training and evaluate read a file's first page
    assert image_size(first) == (60, 40)  # convert-dataset checks annotations against it
    with TiffImagePlugin.AppendingTiffWriter(tmp_path / "book.tif", True) as tiff:
        for frame, info in ((page.resize((15, 10)), thumbnail), (page, None), (page.convert("1"), mask)):
            frame.save(tiff, format="TIFF", **({"tiffinfo": info} if info is not None else {}))
            tiff.newFrame()
        Image.new("L", (30, 20), 9).save(tiff, format="TIFF")
        tiff.newFrame()
    tasks = tasks_for(tmp_path / "book.tif")
    assert [(task.page, task.page_id) for task in tasks] == [(1, "book_p0001"), (2, "book_p0002")]
    assert [task.load().image.shape for task in tasks] == [(40, 60, 3), (20, 30, 3)]


def test_unreadable_file(tmp_path, monkeypatch):
    Image.new("RGB", (2, 2)).save(tmp_path / "locked.png")
    real_open = os.open

    def refuse(path, *args, **kwargs):  # chmod 000 does not stop root, who may run the tests
        if os.fspath(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    error = failure(tmp_path / "locked.png")
    assert error.reason == "cannot read: Permission denied"
    assert_one_line_naming(error, tmp_path / "locked.png")


def test_file_gone_before_decoding(tmp_path):
    Image.new("RGB", (2, 2)).save(tmp_path / "gone.png")
    (task,) = tasks_for(tmp_path / "gone.png")
    (tmp_path / "gone.png").unlink()
    with pytest.raises(InputError, match="no such file or directory") as caught:
        task.load()
    assert_one_line_naming(caught.value, tmp_path / "gone.png")


def test_decompression_bomb_is_a_clear_error_and_the_limit_can_be_raised(tmp_path, pixel_limit):
    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    set_max_image_pixels(6_000)  # 10,000 pixels: above the limit, below twice it (Pillow would only warn)
    error = failure(tmp_path / "big.png")
    assert "10000 pixels exceeds the decompression-bomb limit of 6000" in error.reason
    assert "--max-image-pixels" in error.reason
    assert_one_line_naming(error, tmp_path / "big.png")
    set_max_image_pixels(1_000)  # above twice the limit: Pillow's own check, the same message
    assert failure(tmp_path / "big.png").reason.startswith(
        "100x100 = 10000 pixels exceeds the decompression-bomb limit of 1000 pixels"
    )
    set_max_image_pixels(10_000)
    check_page(load(tmp_path / "big.png"), 100, 100)


def test_each_page_of_a_multi_page_tiff_is_held_to_the_limit_on_its_own(tmp_path, pixel_limit):
    """Pillow checks the first page's size when it opens the file, and before Pillow 11 each page's as it
    seeks to it: that page is refused, not the file."""
    big, small = Image.new("L", (100, 100)), Image.new("L", (20, 30))
    big.save(tmp_path / "big_first.tif", save_all=True, append_images=[small, big])
    set_max_image_pixels(1_000)  # 10,000 pixels: Pillow would refuse the file at open
    first, second, third = tasks_for(tmp_path / "big_first.tif")
    for task in (first, third):
        with pytest.raises(InputError) as caught:
            task.load()
        assert caught.value.page == task.page
        assert caught.value.reason.startswith("100x100 = 10000 pixels exceeds the decompression-bomb limit")
    check_page(second.load(), 30, 20)


@pytest.mark.parametrize(
    ("image", "ground_truth"),
    [
        (  # 1-bit TIFF, 600 dpi
            "ocrd-gt-structure-text/data/bebel_frau_1879/GT-PAGE/bebel_frau_1879_0186.tif",
            "ocrd-gt-structure-text/data/bebel_frau_1879/GT-PAGE/bebel_frau_1879_0186.xml",
        ),
        (  # grayscale JPEG, a comma in the name
            "kraken-test-pages/tests/resources/170025120000003,0074.jpg",
            "kraken-test-pages/tests/resources/170025120000003,0074.xml",
        ),
    ],
)
def test_real_scans_decode_to_the_size_their_ground_truth_states(shared_data, image, ground_truth):
    page_element = etree.parse(str(shared_data / "pages" / ground_truth)).find(".//{*}Page")
    size = int(page_element.get("imageHeight")), int(page_element.get("imageWidth"))
    image = check_page(load(shared_data / "pages" / image), *size)
    assert image.min() == 0 and image.max() == 255


def test_uncompressed_sixteen_bit_tiff_stored_plane_by_plane_is_refused_not_garbled(tmp_path):
    """Pillow reads such planes as 8-bit samples: a garbled page, no error. Refused in one line."""
    planes = np.zeros((3, 4, 6), dtype=np.uint16)
    planes[0] = 0xFF00
    (tmp_path / "planar.tif").write_bytes(planar_tiff(planes))
    assert Image.open(tmp_path / "planar.tif").size == (6, 4)  # Pillow opens it
    error = failure(tmp_path / "planar.tif")
    assert_one_line_naming(error, tmp_path / "planar.tif")
    assert "PlanarConfiguration 2" in error.reason and "16-bit" in error.reason


def test_an_uncompressed_tiff_with_subsampled_chroma_is_refused_as_a_kind_pillow_cannot_read(tmp_path):
    """An uncompressed YCbCr TIFF whose chroma is subsampled (YCbCrSubsampling 2x2) is one Pillow reads as
    if it were not, and runs out of data: it was reported as "truncated or corrupt image data", sending
    the user after a damaged file that any viewer opens."""
    (tmp_path / "ycc.tif").write_bytes(subsampled_ycbcr_tiff(8, 4))
    error = failure(tmp_path / "ycc.tif")
    assert_one_line_naming(error, tmp_path / "ycc.tif")
    assert "truncated" not in error.reason and "YCbCrSubsampling 2x2" in error.reason
    with pytest.raises(ValueError, match="YCbCrSubsampling 2x2"):
        image_size(tmp_path / "ycc.tif")


def test_an_uncompressed_ycbcr_tiff_without_subsampled_chroma_is_read(tmp_path):
    """YCbCrSubsampling 1x1 (as Pillow writes YCbCr) is a chroma sample per pixel, which Pillow reads."""
    Image.new("RGB", (4, 2), (200, 30, 30)).convert("YCbCr").save(tmp_path / "ycc.tif")
    blue, green, red = check_page(load(tmp_path / "ycc.tif"), 2, 4)[0, 0].tolist()
    assert abs(red - 200) <= 2 and abs(green - 30) <= 2 and abs(blue - 30) <= 2


@pytest.mark.parametrize("compression", ["tiff_lzw", "tiff_adobe_deflate"])
def test_a_damaged_compressed_tiff_strip_is_one_error_and_nothing_from_libtiff(tmp_path, capfd, compression):
    """libtiff printed its own message ("LZWDecode: Not enough data at scanline 0 (short 1 bytes).")
    straight to the process's stderr, without the file's name, beside the page's error line."""
    noise = np.random.default_rng(1).integers(0, 255, (120, 160), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.tif", compression=compression)
    data = bytearray((tmp_path / "full.tif").read_bytes())
    data[len(data) // 3 : len(data) // 3 + 64] = bytes(64)  # inside the strip, which Pillow writes first
    (tmp_path / "damaged.tif").write_bytes(bytes(data))
    capfd.readouterr()
    error = failure(tmp_path / "damaged.tif")
    assert_one_line_naming(error, tmp_path / "damaged.tif")
    assert "corrupt" in error.reason
    assert capfd.readouterr() == ("", "")


def _open_descriptors(path: Path) -> int:
    folder = Path("/proc/self/fd")
    return sum(1 for fd in folder.iterdir() if os.path.realpath(fd) == os.path.realpath(path))


def test_the_pages_of_a_long_tiff_cost_the_same_at_its_end_as_at_its_start(tmp_path, monkeypatch):
    """Pillow reaches frame N by reading the N frame directories before it: a TIFF opened anew for each
    page read N²/2 directories in all (a 1000-page TIFF: 27 ms a page at its end)."""
    count = 40
    frames = [Image.new("L", (4, 3), page) for page in range(count)]
    frames[0].save(tmp_path / "register.tif", save_all=True, append_images=frames[1:])
    tasks = tasks_for(tmp_path / "register.tif")
    reads = []
    load_directory = TiffImagePlugin.ImageFileDirectory_v2.load
    monkeypatch.setattr(
        TiffImagePlugin.ImageFileDirectory_v2,
        "load",
        lambda self, fp: reads.append(1) or load_directory(self, fp),
    )
    pages = list(prefetch(tasks))
    assert [int(page.image[0, 0, 0]) for page in pages] == list(range(count))
    assert len(reads) < 8 * count  # a few per page, not one per page before it
    assert _open_descriptors(tmp_path / "register.tif") == 0  # closed once the pages are read


def test_a_tiff_saved_anew_between_its_pages_gives_the_new_pages(tmp_path):
    path = tmp_path / "register.tif"
    frames = [Image.new("L", (4, 3), value) for value in (10, 20, 30)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    first, second, _ = tasks_for(path)
    assert int(first.load().image[0, 0, 0]) == 10
    frames = [Image.new("L", (5, 3), value) for value in (40, 50, 60)]
    frames[0].save(tmp_path / "new.tif", save_all=True, append_images=frames[1:])
    os.replace(tmp_path / "new.tif", path)
    page = second.load()
    assert page.image.shape == (3, 5, 3) and int(page.image[0, 0, 0]) == 50


def test_a_tiff_page_that_fails_leaves_no_file_open(tmp_path, pixel_limit):
    path = tmp_path / "register.tif"
    frames = [Image.new("L", (4, 3), value) for value in (10, 20)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    tasks = tasks_for(path)
    set_max_image_pixels(5)
    with pytest.raises(InputError, match="exceeds the decompression-bomb limit"):
        tasks[1].load()
    assert _open_descriptors(path) == 0


def test_a_tiff_replaced_by_one_of_the_same_size_and_time_gives_the_new_pages(tmp_path):
    """An uncompressed rescan of the same geometry has the same size; `cp -p`, `rsync -t` or an archive
    keep its time: the TIFF left open for its next page was read instead, its old pages given as new."""
    path = tmp_path / "register.tif"
    frames = [Image.new("L", (4, 3), value) for value in (10, 20, 30)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    before = os.stat(path)
    first, second, _ = tasks_for(path)
    assert int(first.load().image[0, 0, 0]) == 10
    frames = [Image.new("L", (4, 3), value) for value in (40, 50, 60)]
    frames[0].save(tmp_path / "new.tif", save_all=True, append_images=frames[1:])
    os.utime(tmp_path / "new.tif", ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(tmp_path / "new.tif", path)
    assert os.stat(path).st_size == before.st_size
    assert int(second.load().image[0, 0, 0]) == 50
