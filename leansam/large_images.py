"""Bounded-memory steps for large images, each giving exactly what the plain step gives.

A 108-megapixel photo is 324 MB as an H x W x 3 uint8 array. The plain steps hold extra full-size
copies of it: Pillow stores RGB at 4 bytes per pixel, so decoding, resizing with Pillow and writing a
PNG with Pillow each hold one more (432 MB) next to the array. Above a size threshold the callers
(:func:`leansam.io.load_image`, :func:`leansam.io.write_png`, :func:`leansam.transforms.preprocess`,
:func:`leansam.data.coco.encode_mask`) switch to these steps; tests/test_large_images.py checks
each against the plain step on small images.

* :func:`decode_jpeg`: OpenCV decodes an RGB JPEG straight into one array (Pillow reads it first at
  1/8 scale, so truncated or corrupt files fail as with Pillow); EXIF orientation as Pillow's.
* :func:`resize_bilinear`: Pillow's bilinear resize, its horizontal pass one band of rows at a time.
* :func:`write_png_streamed`: a PNG whose rows are filtered and compressed one band at a time.
* :func:`rle_counts`: a mask's COCO run lengths, one block of columns at a time.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image

#: Bytes of image data a band holds (about 4 MB).
BAND_BYTES = 1 << 22

#: EXIF orientation -> the displayed view of the stored H x W x C pixels, as ``ImageOps.exif_transpose``.
_ORIENTATIONS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
    3: lambda a: a[::-1, ::-1],  # ROTATE_180
    4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
    5: lambda a: a.transpose(1, 0, 2),  # TRANSPOSE
    6: lambda a: a.transpose(1, 0, 2)[:, ::-1],  # ROTATE_270 (clockwise)
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],  # TRANSVERSE
    8: lambda a: a.transpose(1, 0, 2)[::-1],  # ROTATE_90 (counter-clockwise)
}


def _band_rows(row_bytes: int, band_bytes: int) -> int:
    return max(1, band_bytes // max(1, row_bytes))


def decode_jpeg(path: str | Path, img: Image.Image, band_bytes: int = BAND_BYTES) -> np.ndarray | None:
    """An RGB JPEG as one H x W x 3 uint8 RGB array, EXIF orientation applied; None if OpenCV cannot
    read it (the caller then decodes with Pillow).

    ``img`` is the file opened by Pillow (header read, nothing decoded; mode RGB). Pillow first reads
    all of the compressed data at 1/8 scale, so a truncated or corrupt file raises the error Pillow
    raises; then OpenCV decodes at full size into one array (3 bytes per pixel, no Pillow copy).
    Orientation follows ``img.getexif()`` (EXIF, else XMP), as ``ImageOps.exif_transpose`` does; a
    rotated image costs one more full-size array while it is transposed.
    """
    import cv2

    w, h = img.size
    orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    img.draft("RGB", (max(1, w // 8), max(1, h // 8)))
    img.load()
    bgr = np.empty((h, w, 3), np.uint8)
    try:  # decoded into ``bgr`` itself (OpenCV's own result would be copied into a new array)
        bgr = cv2.imread(str(path), bgr, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:  # above OpenCV's own pixel limit, or an OpenCV without imread(file, dst)
        return None
    if bgr is None or bgr.shape != (h, w, 3) or bgr.dtype != np.uint8:
        return None
    rows = _band_rows(3 * w, band_bytes)
    for y in range(0, h, rows):  # BGR -> RGB in place, one band at a time
        band = bgr[y : y + rows]
        band[:] = band[..., ::-1]
    view = _ORIENTATIONS.get(orientation)
    return bgr if view is None else np.ascontiguousarray(view(bgr))


def resize_bilinear(image: np.ndarray, size: tuple[int, int], band_bytes: int = BAND_BYTES) -> np.ndarray:
    """``Image.fromarray(image).resize((w, h), Image.BILINEAR)`` as an h x w x 3 uint8 array, for an
    H x W x 3 uint8 ``image``, without Pillow's full-size copy of it.

    Pillow resizes in two passes, horizontal then vertical, rounding to 8 bits in between, and each
    row's horizontal pass reads only that row. So the rows are resized horizontally one band at a
    time (each band is a Pillow image of its own, with the same column weights), and the narrow
    H x w result is resized vertically in one call (the same row weights): the same pixels.
    """
    h, w = size
    rows = _band_rows(4 * image.shape[1], band_bytes)
    narrow = np.empty((image.shape[0], w, 3), np.uint8)
    for y in range(0, image.shape[0], rows):
        band = Image.fromarray(image[y : y + rows])
        narrow[y : y + rows] = np.asarray(band.resize((w, band.height), Image.BILINEAR))
    return np.asarray(Image.fromarray(narrow).resize((w, h), Image.BILINEAR))


def rle_counts(mask: np.ndarray, band_bytes: int = BAND_BYTES) -> np.ndarray:
    """The uncompressed COCO RLE of an H x W bool (or 0/1) mask, as ``pycocotools.mask.encode``
    counts it: run lengths in column-major order, the first one of 0s (possibly empty); uint32.

    Read one block of columns at a time, so there is no column-major copy of the whole mask.
    """
    h, w = mask.shape
    starts = []  # column-major positions where a run starts
    prev = np.zeros(1, bool)
    cols = _band_rows(h, band_bytes)
    for c in range(0, w, cols):
        flat = np.ascontiguousarray(mask[:, c : c + cols].T, dtype=bool).ravel()
        starts.append(np.flatnonzero(flat != np.concatenate([prev, flat[:-1]])) + c * h)
        prev = flat[-1:]
    return np.diff(np.concatenate([[0], *starts, [h * w]])).astype(np.uint32)


def _chunk(f: BinaryIO, kind: bytes, data: bytes) -> None:
    f.write(struct.pack(">I", len(data)) + kind + data)
    f.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))


def _paeth(rows: np.ndarray, above: np.ndarray, bpp: int) -> np.ndarray:
    """PNG filter type 4 of n x L uint8 scanlines whose previous scanline is ``above`` (L)."""
    x = rows.astype(np.int16)
    b = np.concatenate([above[None].astype(np.int16), x[:-1]])
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    c = np.zeros_like(x)
    c[:, bpp:] = b[:, :-bpp]
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    return (x - pred).astype(np.uint8)


def write_png_streamed(f: BinaryIO, array: np.ndarray, band_bytes: int = BAND_BYTES) -> None:
    """Writes an H x W (bool -> 0/255, or uint8) or H x W x 3 uint8 RGB array to ``f`` as an 8-bit
    PNG, filtering (Paeth) and compressing (zlib level 6) one band of rows at a time.

    The pixels read back are the array's; the bytes differ from Pillow's encoder (which chooses a
    filter per row).
    """
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"expected an H x W or H x W x 3 array, got shape {array.shape}")
    if array.dtype not in (np.bool_, np.uint8):
        raise ValueError(f"expected a bool or uint8 array, got {array.dtype}")
    h, w = array.shape[:2]
    bpp = 1 if array.ndim == 2 else 3
    f.write(b"\x89PNG\r\n\x1a\n")
    _chunk(f, b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0 if bpp == 1 else 2, 0, 0, 0))
    comp = zlib.compressobj(6)
    above = np.zeros(w * bpp, np.uint8)
    rows = _band_rows(4 * w * bpp, band_bytes)
    for y in range(0, h, rows):
        band = array[y : y + rows]
        lines = (band.view(np.uint8) * np.uint8(255) if band.dtype == np.bool_ else band).reshape(
            len(band), -1
        )
        filtered = np.empty((len(lines), 1 + w * bpp), np.uint8)
        filtered[:, 0] = 4
        filtered[:, 1:] = _paeth(lines, above, bpp)
        above = lines[-1].copy()
        data = comp.compress(filtered.tobytes())
        if data:
            _chunk(f, b"IDAT", data)
    _chunk(f, b"IDAT", comp.flush())
    _chunk(f, b"IEND", b"")
