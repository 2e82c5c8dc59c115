"""Reading images and writing results safely.

``load_image`` turns any file PIL can read into the H x W x 3 uint8 RGB array the
models expect, in the orientation a viewer displays (EXIF rotation applied), and
raises :class:`InputError` with one readable sentence for everything else.
Writers go through a temporary file and an atomic rename, so an interrupted
run never leaves a half-written output; output folders are :class:`leansam.outputs.OutputDir`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 2^28 pixels (~16k x 16k) by default: well above any camera, below a decompression bomb.
DEFAULT_MAX_PIXELS = 1 << 28

#: Images above this many pixels are decoded (RGB JPEGs) and written (PNGs) by the bounded-memory
#: steps of :mod:`leansam.large_images`.
LARGE_IMAGE_PIXELS = 1 << 24


def one_line(e: BaseException) -> str:
    """An exception's message on one line (its lines joined by `` | ``), for an ``error:`` line."""
    text = str(e).strip()
    return " | ".join(line.strip() for line in text.splitlines()) if text else type(e).__name__


class InputError(ValueError):
    """Bad user input (file, image, prompt, option). The CLI prints it as ``error: ...`` and exits 2."""


_PILLOW_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def pillow_pixel_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's decompression-bomb check follows ``max_pixels`` while the block runs.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and refuses above twice that; leansam's own
    check against ``max_pixels`` is the one users see, so the warning is silenced and the hard
    limit moved to ``2 * max_pixels``. Pillow checks while opening a file, so hold this briefly.
    """
    with _PILLOW_LIMIT_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Opens an image file lazily (header only) with Pillow's bomb check at ``max_pixels``.

    Raises:
        InputError: missing file, not an image, a header or metadata chunk Pillow cannot read
            (e.g. a PNG text chunk inflating past Pillow's limit), or more than ``max_pixels`` pixels.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if not path.is_file():
        raise InputError(f"not a file: {path}")
    try:
        with pillow_pixel_limit(max_pixels):
            img = Image.open(path)
    except UnidentifiedImageError:
        raise InputError(f"{path} is not an image file (or its format is not supported)") from None
    except Image.DecompressionBombError:
        raise InputError(
            f"{path} is more than 2x above the limit of {max_pixels} pixels "
            "(a decompression bomb, or raise the limit with --max-pixels)"
        ) from None
    except Exception as e:  # any failure while parsing untrusted headers is a bad file
        raise InputError(f"cannot read {path}: {_reason(e)}") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        img.close()
        raise InputError(f"{path} has zero size ({w} x {h})")
    if w * h > max_pixels:
        img.close()
        raise InputError(
            f"{path} is {w} x {h} = {w * h} pixels, above the limit of {max_pixels} "
            f"(a decompression bomb, or raise the limit with --max-pixels)"
        )
    return img


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Reads an image file as H x W x 3 uint8 RGB, EXIF orientation applied.

    Grayscale, palette, RGBA/LA (composited over white), CMYK and 16-bit images
    are converted; 16-bit values are scaled to 8 bits (v / 257, rounded). ``max_pixels`` is the
    only size limit (Pillow's own bomb check follows it). RGB JPEGs above :data:`LARGE_IMAGE_PIXELS`
    are decoded straight into the array (:func:`leansam.large_images.decode_jpeg`: the same pixels,
    without Pillow's 4-bytes-per-pixel copy).

    Raises:
        InputError: missing file, not an image, truncated/corrupt data, zero size,
            or more than ``max_pixels`` pixels (decompression bomb).
    """
    img = open_image(path, max_pixels)
    w, h = img.size
    straight = img.format == "JPEG" and img.mode == "RGB" and w * h > LARGE_IMAGE_PIXELS
    array = _decode(path, img, max_pixels, straight)
    if array is None:  # OpenCV could not read what Pillow can: decode with Pillow
        array = _decode(path, open_image(path, max_pixels), max_pixels, False)
    return array


def _decode(path: str | Path, img: Image.Image, max_pixels: int, straight: bool) -> np.ndarray | None:
    """``img`` (opened by :func:`open_image`) as H x W x 3 uint8 RGB; closes it. ``straight``: with
    :func:`leansam.large_images.decode_jpeg` (None if OpenCV cannot read the file)."""
    w, h = img.size
    try:
        with img, pillow_pixel_limit(max_pixels):
            if straight:
                from .large_images import decode_jpeg

                return decode_jpeg(path, img)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            return _to_rgb8(img)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"not enough memory to decode {path} ({w} x {h})") from None
    except Exception as e:  # corrupt or truncated data, in whichever way the decoder notices
        raise InputError(f"{path} is truncated or corrupt: {_reason(e)}") from None


def _to_rgb8(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        if mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
            lo, hi = float(arr.min()), float(arr.max())
            arr8 = ((arr - lo) * (255.0 / max(hi - lo, 1.0))).round()
        else:
            arr8 = (arr.astype(np.float64) / 257.0).round()
        gray = np.clip(arr8, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        gray = np.clip(np.nan_to_num(arr * scale), 0, 255).round().astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if mode != "RGB":
        img = img.convert("RGB")
    return _rgb_array(img)


def _rgb_array(img: Image.Image, band_pixels: int = 1 << 22) -> np.ndarray:
    """An RGB image as a writable H x W x 3 uint8 array, copied in row bands so that only one
    full-size copy exists besides Pillow's own."""
    w, h = img.size
    out = np.empty((h, w, 3), dtype=np.uint8)
    rows = max(1, band_pixels // max(w, 1))
    for y in range(0, h, rows):
        out[y : y + rows] = np.asarray(img.crop((0, y, w, min(h, y + rows))))
    return out


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yields a temporary path next to ``dest``; renames it onto ``dest`` only on success."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def torch_save(obj: object, f: BinaryIO) -> None:
    """``torch.save(obj, f)`` that raises the OSError of a failed write (a full disk): torch hides
    it behind a RuntimeError while closing the archive."""
    import torch

    try:
        torch.save(obj, f)
    except RuntimeError as e:
        if isinstance(e.__context__, OSError):
            raise e.__context__ from None
        raise


def write_json(dest: str | Path, obj: object) -> None:
    """Writes JSON atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(obj, indent=1) + "\n")


def write_png(dest: str | Path, array: np.ndarray) -> None:
    """Writes an H x W (bool / uint8) or H x W x 3 uint8 RGB array as PNG, atomically.

    Arrays above :data:`LARGE_IMAGE_PIXELS` pixels are written band by band
    (:func:`leansam.large_images.write_png_streamed`: the same pixels, no full-size copy).
    """
    if array.shape[0] * array.shape[1] > LARGE_IMAGE_PIXELS:
        from .large_images import write_png_streamed

        with atomic_path(dest) as tmp, open(tmp, "wb") as f:
            write_png_streamed(f, array)
        return
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    with atomic_path(dest) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def __getattr__(name: str) -> object:
    """``leansam.io.OutputDir`` still names :class:`leansam.outputs.OutputDir` (imported lazily:
    that module needs :class:`InputError` from this one)."""
    if name == "OutputDir":
        from .outputs import OutputDir

        return OutputDir
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
