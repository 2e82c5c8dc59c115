"""Images the server knows: uploads kept by content hash, and a read-only ``--images`` folder.

Image ids are the SHA-256 of the file's bytes. Two clients who send the same bytes get the same
id and share its cached embedding; an id reveals nothing beyond the content its holder already
has, and the server keeps no per-client state (masks are computed from each request's prompts
and returned, never stored), so clients never see each other's masks.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..io import InputError, load_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MEDIA_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".bmp": "image/bmp",
    ".gif": "image/gif",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".webp": "image/webp",
}


class NotFound(LookupError):
    """An unknown image id or folder name (HTTP 404)."""


class Forbidden(PermissionError):
    """A folder name that points outside the folder (HTTP 403)."""


def content_id(data: bytes) -> str:
    """The image id of a file's bytes: its SHA-256 as 64 hex digits."""
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decodes image bytes to H x W x 3 uint8 RGB with :func:`leansam.io.load_image`'s rules.

    Raises InputError for non-images, corrupt data and more than ``max_pixels`` pixels
    (checked from the header, before the pixels are decompressed).
    """
    fd, tmp = tempfile.mkstemp(prefix="leansam-serve-", suffix=".img")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            return load_image(tmp, max_pixels=max_pixels)
        except InputError as e:
            raise InputError(str(e).replace(tmp, "the image")) from None
    finally:
        os.unlink(tmp)


class ImageStore:
    """Decoded images by id, in an LRU bounded by ``max_bytes`` of pixels."""

    def __init__(self, max_pixels: int, max_bytes: int = 1 << 30) -> None:
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, data: bytes) -> tuple[str, np.ndarray]:
        """Decodes and stores ``data``; returns (id, H x W x 3 image). Raises InputError."""
        image_id = content_id(data)
        with self._lock:
            if image_id in self._images:
                self._images.move_to_end(image_id)
                return image_id, self._images[image_id]
        image = decode_image(data, self.max_pixels)
        with self._lock:
            if image_id not in self._images:
                self._images[image_id] = image
                self._bytes += image.nbytes
                while self._bytes > self.max_bytes and len(self._images) > 1:
                    _, old = self._images.popitem(last=False)
                    self._bytes -= old.nbytes
        return image_id, image

    def get(self, image_id: str) -> np.ndarray:
        """The image of ``image_id``; NotFound if it was never uploaded or was evicted."""
        with self._lock:
            image = self._images.get(image_id)
            if image is None:
                raise NotFound(f"unknown image id {image_id!r}: upload the image first (POST /api/images)")
            self._images.move_to_end(image_id)
            return image


class ImageFolder:
    """Read-only access to the image files under ``root`` and nothing else.

    Names are relative POSIX paths. Absolute names, ``..`` parts, backslashes, NUL bytes and
    names whose resolved path (symlinks followed) leaves ``root`` are refused.
    """

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"--images {root}: not a folder")
        self.root = root.resolve()

    def _inside(self, path: Path) -> bool:
        return path.is_relative_to(self.root)

    def list(self) -> list[str]:
        """Image file names under the folder (recursive, sorted), skipping links that lead outside."""
        names = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for fn in filenames:
                p = Path(dirpath) / fn
                if p.suffix.lower() in IMAGE_SUFFIXES and self._inside(p.resolve()) and p.is_file():
                    names.append(p.relative_to(self.root).as_posix())
        return sorted(names)

    def resolve(self, name: str) -> Path:
        """The file for ``name``. Raises Forbidden (outside the folder) or NotFound."""
        if not name or "\x00" in name or "\\" in name or name.startswith("/") or ":" in name:
            raise Forbidden(f"image name {name!r} is not a relative path inside the folder")
        if any(part in ("..", ".") for part in name.split("/")):
            raise Forbidden(f"image name {name!r} may not contain '.' or '..' parts")
        path = (self.root / name).resolve()
        if not self._inside(path):
            raise Forbidden(f"image name {name!r} leads outside the folder")
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise NotFound(f"no image named {name!r} in the folder")
        return path

    def read(self, name: str) -> tuple[bytes, str]:
        """(file bytes, media type) of ``name``."""
        path = self.resolve(name)
        return path.read_bytes(), MEDIA_TYPES[path.suffix.lower()]
