"""Per-image box prompts of a dataset run, from a COCO-style JSON (e.g. a detector's boxes).

The file is a COCO dict: ``images`` (``id``, ``file_name``) and ``annotations`` (``image_id``,
``bbox`` XYWH in pixels, optional ``score`` and ``category_id``). An image of the run takes the
boxes of the entry whose ``file_name`` equals its key, or else whose ``file_name`` equals its
key's file name (when only one entry has that name).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..io import InputError


@dataclass(frozen=True)
class Detection:
    """One box prompt: ``box`` XYXY in pixels of the original image, its detector score and category."""

    box: tuple[float, float, float, float]
    score: float | None = None
    category_id: int | None = None


@dataclass
class PromptTable:
    """Box prompts per image, and the image ids of the file (see the module docstring)."""

    by_name: dict[str, tuple[int, list[Detection]]] = field(default_factory=dict)
    by_base: dict[str, list[str]] = field(default_factory=dict)

    def lookup(self, key: str) -> tuple[int | None, list[Detection]]:
        """(image id, its boxes) for the image named ``key``; (None, []) when the file has no entry."""
        if key in self.by_name:
            return self.by_name[key]
        names = self.by_base.get(PurePosixPath(key).name, [])
        if len(names) == 1:
            return self.by_name[names[0]]
        return None, []


def load_prompt_table(path: str | Path) -> PromptTable:
    """Reads a COCO-style prompts file (see the module docstring).

    Raises:
        InputError: unreadable JSON, no ``images`` / ``annotations`` lists, or a malformed entry
            (message names the entry).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read prompts file {path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"prompts file {path}: expected a COCO dict with 'images' and 'annotations' lists")
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise InputError(f"prompts file {path}: 'annotations' must be a list")
    names: dict[Any, str] = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("file_name"), str) or "id" not in img:
            raise InputError(f"prompts file {path}: images[{i}] needs 'id' and 'file_name'")
        names[img["id"]] = img["file_name"]
    boxes: dict[Any, list[Detection]] = defaultdict(list)
    for i, ann in enumerate(anns):
        boxes[_image_of(ann, names, path, i)].append(_detection(ann, path, i))
    table = PromptTable()
    for image_id, name in names.items():
        table.by_name[name] = (image_id, boxes.get(image_id, []))
        table.by_base.setdefault(PurePosixPath(name).name, []).append(name)
    return table


def _image_of(ann: Any, names: dict[Any, str], path: Path, i: int) -> Any:
    if not isinstance(ann, dict) or "image_id" not in ann:
        raise InputError(f"prompts file {path}: annotations[{i}] needs 'image_id' and 'bbox'")
    if ann["image_id"] not in names:
        raise InputError(
            f"prompts file {path}: annotations[{i}] names image_id {ann['image_id']!r}, not in 'images'"
        )
    return ann["image_id"]


def _detection(ann: dict, path: Path, i: int) -> Detection:
    bbox = ann.get("bbox")
    ok = isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)
    if not ok or not all(math.isfinite(v) for v in bbox) or bbox[2] <= 0 or bbox[3] <= 0:
        raise InputError(f"prompts file {path}: annotations[{i}] bbox must be [x, y, w, h] with w, h > 0")
    x, y, w, h = (float(v) for v in bbox)
    score = ann.get("score")
    cat = ann.get("category_id")
    return Detection(
        (x, y, x + w, y + h),
        float(score) if isinstance(score, (int, float)) else None,
        int(cat) if isinstance(cat, int) else None,
    )
