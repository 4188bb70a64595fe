"""Hostile inputs made on the fly: decompression bombs, oversized PDF pages, headers that lie.

Each writer makes a small file (kilobytes) whose decoded size would be huge, so a test or benchmark can
show it is refused without ever holding it in memory.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

BOMB_SIDE = 20_000  # 400 million pixels: about 1.2 GB as RGB, 18 GB at the peak of an unguarded run
HUGE_PAGE_POINTS = 14_400  # 200 inches; at 200 dpi 40000 x 40000 pixels, more than poppler can allocate


def write_bomb_png(path: Path, side: int = BOMB_SIDE) -> Path:
    """A valid 1-bit PNG of side x side white pixels, a few dozen KB on disk (compressed row by row)."""
    row = b"\x00" + b"\xff" * ((side + 7) // 8)  # filter byte "none", then the packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    chunks = _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def sixteen_bit_png(pixels: np.ndarray, key: tuple[int, ...], orientation: int = 1) -> bytes:
    """A 16-bit PNG, grey of (H, W) `pixels` or RGB of (H, W, 3), whose tRNS makes the grey level or colour
    `key` transparent, with EXIF `orientation` (eXIf): Pillow cannot write a 16-bit RGB one, nor before
    Pillow 10.3 a 16-bit grey one with a tRNS."""
    height, width = pixels.shape[:2]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    exif = Image.Exif()
    exif[274] = orientation
    colour_type = 2 if pixels.ndim == 3 else 0
    chunks = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
    chunks += _png_chunk(b"tRNS", struct.pack(f">{len(key)}H", *key))
    chunks += _png_chunk(b"eXIf", exif.tobytes()[6:])
    chunks += _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def exif_with_a_mistyped_tag(orientation: int) -> bytes:
    """A JPEG's EXIF block (APP1 payload) stating `orientation` and a ResolutionUnit stored as three BYTEs
    where TIFF says one SHORT, as some cameras and editors write: Pillow reads it, but cannot write it back
    (`ImageOps.exif_transpose` raises struct.error)."""
    entries = struct.pack("<HHIHH", 274, 3, 1, orientation, 0) + struct.pack(
        "<HHI4s", 296, 1, 3, b"\x01\x02\x03"
    )
    return b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 2) + entries + struct.pack("<I", 0)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_pdf(path: Path, width: float, height: float, page_entries: str = "") -> Path:
    """A one-page PDF with the given MediaBox (points) and a filled square on it, written by hand."""
    content = b"0 0 1 rg 10 10 50 50 re f"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width} {height}] {page_entries} "
        f"/Contents 4 0 R /Resources << >> >>".encode(),
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
    ]
    path.write_bytes(pdf_file(objects))
    return path


def pdf_file(objects: list[bytes]) -> bytes:
    """A PDF of these objects (numbered from 1, the first the catalog) with its cross-reference table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def write_gif_with_oversized_frame(path: Path, screen: int = 10, frame: int = 30_000) -> Path:
    """A GIF whose logical screen is small but whose first frame claims frame x frame pixels."""
    data = b"GIF89a" + struct.pack("<HHBBB", screen, screen, 0, 0, 0)
    data += b"," + struct.pack("<HHHHB", 0, 0, frame, frame, 0) + b"\x02\x02\x4c\x01\x00;"
    path.write_bytes(data)
    return path


def gif_with_partial_first_frame(frame: Image.Image, screen: tuple[int, int], at: tuple[int, int]) -> bytes:
    """A GIF whose logical screen is `screen` (width, height) and whose only frame, `frame` (mode P), covers
    part of it from `at`: Pillow's GIF of the frame, its screen and frame position rewritten."""
    buffer = io.BytesIO()
    frame.save(buffer, format="GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = struct.pack("<HH", *screen)
    descriptor = b"," + struct.pack("<HHHH", 0, 0, *frame.size)
    start = data.index(descriptor)
    data[start + 1 : start + 5] = struct.pack("<HH", *at)
    return bytes(data)


def write_tiff_with_oversized_frame(path: Path, side: int = BOMB_SIDE) -> Path:
    """A two-page TIFF: page 1 a real 8 x 8 image, page 2 an 8 x 8 strip whose IFD claims side x side."""
    buffer = io.BytesIO()
    pages = [Image.new("L", (8, 8), 200), Image.new("L", (8, 8), 50)]
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:])
    data = bytearray(buffer.getvalue())
    assert data[:4] == b"II*\x00", "Pillow writes little-endian TIFF"
    first = struct.unpack_from("<I", data, 4)[0]
    second = struct.unpack_from("<I", data, first + 2 + 12 * struct.unpack_from("<H", data, first)[0])[0]
    for index in range(struct.unpack_from("<H", data, second)[0]):
        entry = second + 2 + 12 * index
        tag, kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength
            struct.pack_into("<H" if kind == 3 else "<I", data, entry + 8, side)
    path.write_bytes(bytes(data))
    return path


def planar_tiff(planes: np.ndarray) -> bytes:
    """An uncompressed little-endian TIFF of (samples, H, W) 16-bit planes stored plane by plane
    (PlanarConfiguration 2), one strip a plane: Pillow cannot write one."""
    samples, height, width = planes.shape
    data = planes.astype("<u2").tobytes()
    plane = height * width * 2
    arrays = 8 + len(data)  # bits per sample, strip offsets, strip byte counts
    tables = struct.pack(
        f"<{samples}H{samples}I{samples}I",
        *[16] * samples,
        *[8 + index * plane for index in range(samples)],
        *[plane] * samples,
    )
    entries = [
        (256, 3, 1, width),
        (257, 3, 1, height),
        (258, 3, samples, arrays),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, samples, arrays + 2 * samples),
        (277, 3, 1, samples),
        (278, 3, 1, height),
        (279, 4, samples, arrays + 6 * samples),
        (284, 3, 1, 2),
    ]
    directory = struct.pack("<H", len(entries))
    directory += b"".join(struct.pack("<HHII", *entry) for entry in entries) + struct.pack("<I", 0)
    return b"II" + struct.pack("<HI", 42, arrays + len(tables)) + data + tables + directory


def subsampled_ycbcr_tiff(width: int, height: int) -> bytes:
    """An uncompressed little-endian YCbCr TIFF of mid grey whose chroma is subsampled 2x2 (YCbCrSubsampling
    2, 2: each 2x2 block stored as its four Y samples, then Cb and Cr), as some scanners write: Pillow
    cannot write one, nor read it."""
    data = bytes([128, 128, 128, 128, 128, 128]) * ((width + 1) // 2) * ((height + 1) // 2)
    entries = [
        (256, 3, 1, width),
        (257, 3, 1, height),
        (258, 3, 3, 8 + len(data)),
        (259, 3, 1, 1),
        (262, 3, 1, 6),
        (273, 4, 1, 8),
        (277, 3, 1, 3),
        (278, 3, 1, height),
        (279, 4, 1, len(data)),
        (530, 3, 2, 2 | 2 << 16),
    ]
    directory = struct.pack("<H", len(entries))
    directory += b"".join(struct.pack("<HHII", *entry) for entry in entries) + struct.pack("<I", 0)
    tables = struct.pack("<3H", 8, 8, 8)
    return b"II" + struct.pack("<HI", 42, 8 + len(data) + len(tables)) + data + tables + directory


def premultiplied_grey_alpha_tiff(samples: np.ndarray) -> bytes:
    """An uncompressed little-endian TIFF of (H, W, 2) grey and alpha samples, 16-bit where `samples` are
    uint16, else 8-bit, the grey premultiplied by the alpha (ExtraSamples 1, associated alpha): Pillow
    cannot write one (nor read the 16-bit kind)."""
    height, width, _ = samples.shape
    bits = 16 if samples.dtype == np.uint16 else 8
    data = samples.astype(f"<u{bits // 8}").tobytes()
    entries = [
        (256, 3, 1, width),
        (257, 3, 1, height),
        (258, 3, 2, bits | bits << 16),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8),
        (277, 3, 1, 2),
        (278, 3, 1, height),
        (279, 4, 1, len(data)),
        (338, 3, 1, 1),
    ]
    directory = struct.pack("<H", len(entries))
    directory += b"".join(struct.pack("<HHII", *entry) for entry in entries) + struct.pack("<I", 0)
    return b"II" + struct.pack("<HI", 42, 8 + len(data)) + data + directory


def twelve_bit_tiff(values: np.ndarray) -> bytes:
    """An uncompressed little-endian grey TIFF of 12-bit samples (BitsPerSample 12, packed most
    significant bit first, each row padded to a byte), as some scanners and cameras write: Pillow cannot
    write one."""
    height, width = values.shape
    bits = np.unpackbits(values.astype(">u2").view(np.uint8).reshape(height, width, 2), axis=2)[:, :, 4:]
    data = np.packbits(bits.reshape(height, width * 12), axis=1).tobytes()
    entries = [
        (256, 3, 1, width),
        (257, 3, 1, height),
        (258, 3, 1, 12),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8),
        (277, 3, 1, 1),
        (278, 3, 1, height),
        (279, 4, 1, len(data)),
    ]
    directory = struct.pack("<H", len(entries))
    directory += b"".join(struct.pack("<HHII", *entry) for entry in entries) + struct.pack("<I", 0)
    return b"II" + struct.pack("<HI", 42, 8 + len(data)) + data + directory
