"""Image sources of a dataset run: a folder, a glob pattern or a list file, read lazily.

Every source yields :class:`ImageItem` (``key``, ``path``) in a fixed order, so that two runs
over the same files plan the same shards. The ``key`` names the image in the results: the path
relative to the folder, the path as the glob matched it, or the line of the list file.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..io import InputError

#: File name endings a folder or glob source takes as images (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: File name endings read as list files (one image path per line).
LIST_SUFFIXES = (".txt", ".lst", ".list")
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class ImageItem:
    """One image of a dataset: ``key`` (its name in the results) and the ``path`` to read."""

    key: str
    path: str


def source_kind(spec: str) -> str:
    """``folder``, ``list``, ``glob`` or ``image`` (a single file, or a path that does not exist)."""
    p = Path(spec)
    if p.is_dir():
        return "folder"
    if p.is_file():
        return "list" if p.suffix.lower() in LIST_SUFFIXES else "image"
    if any(c in spec for c in _GLOB_CHARS):
        return "glob"
    return "image"


def is_dataset_input(spec: str) -> bool:
    """Whether a command's image argument names a dataset (folder, glob, list file)."""
    return source_kind(str(spec)) != "image"


def iter_images(spec: str) -> Iterator[ImageItem]:
    """The images of ``spec`` in a fixed order, each once (later duplicates of a key are dropped).

    Folders are walked recursively, each directory's entries in sorted order, taking files with an
    :data:`IMAGE_SUFFIXES` ending; globs (``**`` recurses) yield their matches sorted; list files
    yield their non-empty lines that do not start with ``#``, relative paths taken from the list
    file's folder.

    Raises:
        InputError: a list file entry names a file that does not exist (raised when reached).
    """
    kind = source_kind(spec)
    if kind == "folder":
        items: Iterator[ImageItem] = _walk(Path(spec))
    elif kind == "glob":
        items = (
            ImageItem(m, m)
            for m in sorted(glob.iglob(spec, recursive=True))
            if Path(m).is_file() and m.lower().endswith(IMAGE_SUFFIXES)
        )
    elif kind == "list":
        items = _list_file(Path(spec))
    else:
        raise InputError(f"{spec} is a single image, not a folder, glob or list file")
    seen: set[str] = set()
    for item in items:
        if item.key not in seen:
            seen.add(item.key)
            yield item


def _walk(root: Path) -> Iterator[ImageItem]:
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            raise InputError(f"cannot list {folder}: {e.strerror or e}") from None
        subdirs = []
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir():
                subdirs.append(Path(e.path))
            elif e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file():
                yield ImageItem(Path(e.path).relative_to(root).as_posix(), e.path)
        stack.extend(reversed(subdirs))


def _list_file(path: Path) -> Iterator[ImageItem]:
    base = path.parent
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115 (closed by the with below; streamed)
    except OSError as e:
        raise InputError(f"cannot read list file {path}: {e.strerror or e}") from None
    with f:
        for n, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            target = Path(line) if Path(line).is_absolute() else base / line
            if not target.is_file():
                raise InputError(f"{path} line {n} names {line}, which is not a file")
            yield ImageItem(line, str(target))
