"""Reading what ``leansam eval`` is given: COCO/LVIS annotations, an image folder, detections.

Every problem a user can fix is raised as :class:`leansam.io.InputError` with one sentence
naming the file and the entry (the CLI prints it as ``error: ...`` and exits 2).

LVIS files in COCO layout are accepted: images without ``file_name`` take the last path
component of ``coco_url`` (``.../val2017/000000397133.jpg`` -> ``000000397133.jpg``), and
annotations without ``iscrowd`` count as not crowd. (AP on LVIS is then COCO-style AP from
pycocotools, not LVIS's federated AP.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.coco import CocoDataset, coco_from_data
from ..data.schemas import DETECTIONS
from ..io import InputError, open_image
from ..validate import check, read_json

_EXIF_ORIENTATION = 0x0112


@dataclass
class Detection:
    """One detector box: ``bbox`` COCO XYWH in pixels, ``score``, ``category_id``; ``index`` in the file."""

    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    score: float
    index: int


@dataclass
class EvalData:
    """A validated evaluation set.

    Attributes:
        dataset: the annotations (images, masks, categories); ``dataset.image_root`` = the image folder.
        gt: the annotation JSON as a dict (for pycocotools), LVIS fields normalised.
        detections: image id -> detections in file order (empty when none were given).
    """

    dataset: CocoDataset
    gt: dict[str, Any]
    detections: dict[int, list[Detection]] = field(default_factory=dict)


def load_annotations(
    annotations: str | Path, images: str | Path, allow_outside: bool = False
) -> tuple[CocoDataset, dict]:
    """Validated annotations whose images live in ``images``: (dataset, JSON dict).

    Image paths stay inside ``images`` (see :meth:`CocoDataset.image_path`) unless ``allow_outside``.

    Raises:
        InputError: missing file or folder, not JSON, not a COCO instances file, entries with
            missing keys, masks whose size differs from their image entry, no images listed.
    """
    path, root = Path(annotations), Path(images)
    data = read_json(path, "annotations")
    if not root.exists():
        raise InputError(f"image folder not found: {root}")
    if not root.is_dir():
        raise InputError(f"--images must be a folder, not a file: {root}")
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise InputError(
            f"{path} is not a COCO instances file (need top-level 'images', 'annotations' and 'categories')"
        )
    try:
        dataset = coco_from_data(data, path, image_root=root)
    except ValueError as e:
        msg = str(e)
        raise InputError(
            f"bad annotations: {msg if msg.startswith(str(path)) else f'{path}: {msg}'}"
        ) from None
    if not len(dataset):
        raise InputError(f"{path} lists no images")
    dataset.allow_outside_root = allow_outside
    return dataset, data


def load_detections(path: str | Path, dataset: CocoDataset) -> dict[int, list[Detection]]:
    """Detector boxes from a COCO results JSON (a list of ``{image_id, category_id, bbox, score}``).

    A dict with an ``annotations`` list is accepted too. Boxes with zero width or height are
    kept (the model still gets them). Returns image id -> detections in file order.

    Raises:
        InputError: not JSON / not a results list, entries with missing or ill-typed keys,
            non-finite or negative box sizes, image ids or category ids the annotations do not have.
    """
    path = Path(path)
    data = read_json(path, "detections")
    if isinstance(data, Mapping) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if not isinstance(data, list):
        raise InputError(
            f"{path} is not a COCO results file (expected a JSON list of {{image_id, category_id, bbox, score}})"
        )
    check(data, DETECTIONS, str(path))
    out: dict[int, list[Detection]] = {}
    unknown_images: set[int] = set()
    unknown_cats: set[int] = set()
    for i, d in enumerate(data):
        image_id, cat = d["image_id"], d.get("category_id", 1)
        if image_id not in dataset.images:
            unknown_images.add(image_id)
            continue
        if cat not in dataset.categories:
            unknown_cats.add(cat)
            continue
        x, y, bw, bh = (float(v) for v in d["bbox"])
        img = dataset.images[image_id]
        if x + bw < 0 or y + bh < 0 or x > img.width or y > img.height:
            raise InputError(
                f"{path}: [{i}].bbox: box {d['bbox']} (XYWH) is entirely outside its {img.width} x "
                f"{img.height} image {img.file_name} (image_id {image_id}): wrong image_id, or boxes in "
                "another image size?"
            )
        out.setdefault(image_id, []).append(Detection(image_id, cat, (x, y, bw, bh), float(d["score"]), i))
    if unknown_images:
        ids = sorted(unknown_images)
        raise InputError(
            f"{path} has detections for {len(ids)} image id(s) that are not in {dataset.path.name}: "
            f"{_fmt_ids(ids)} (detections and annotations must come from the same split)"
        )
    if unknown_cats:
        ids = sorted(unknown_cats)
        raise InputError(
            f"{path} has detections with {len(ids)} category id(s) that are not in {dataset.path.name}: "
            f"{_fmt_ids(ids)} (is the detector's label map 0-based or for another data set?)"
        )
    return out


def _fmt_ids(ids: list[int], limit: int = 8) -> str:
    head = ", ".join(str(i) for i in ids[:limit])
    return head + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def image_header_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file as displayed (EXIF rotation applied), from its header only.

    Raises:
        InputError: missing file, or not an image PIL can identify.
    """
    if not path.is_file():
        raise InputError(f"image file not found: {path}")
    with open_image(path) as img:
        w, h = img.size
        try:
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        except Exception:  # a broken EXIF block: PIL ignores it when decoding too
            orientation = 1
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return h, w
