"""Small helpers for COCO *instances* annotation files.

Conventions used throughout leansam:

* Masks are ``numpy`` arrays of shape ``(H, W)`` and dtype ``bool``, row-major,
  ``mask[y, x]``.
* Boxes are COCO ``XYWH`` in pixels: ``[x_min, y_min, width, height]`` where
  ``x_min``/``y_min`` are the left/top edges of the first covered pixel column/row
  and ``width``/``height`` count covered pixel columns/rows (so a single pixel at
  ``(x=3, y=5)`` has bbox ``[3, 5, 1, 1]``), exactly as ``pycocotools.mask.toBbox``.
* Compressed RLE is a dict ``{"size": [H, W], "counts": str}`` (column-major
  runs, LEB128-like ASCII string as written by pycocotools). ``encode_mask``
  always returns ``counts`` as ``str`` so the result is JSON-serialisable.

``load_coco`` reads and validates an annotation file into a :class:`CocoDataset`
with clear ``ValueError`` messages; ``decode_mask`` accepts every segmentation
encoding found in COCO files (compressed RLE with str or bytes counts,
uncompressed RLE with a list of counts, polygons).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .. import io as image_io
from .. import limits, validate
from ..io import InputError
from .schemas import COCO_INSTANCES

__all__ = [
    "CocoAnnotation",
    "CocoDataset",
    "CocoImage",
    "coco_from_data",
    "decode_mask",
    "encode_mask",
    "load_coco",
    "mask_bbox",
    "rle_area",
    "rle_bbox",
    "write_json_atomic",
]

Segmentation = Mapping[str, Any] | Sequence[Sequence[float]]


# --------------------------------------------------------------------------- RLE


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Encode an ``(H, W)`` boolean (or 0/1) mask as compressed COCO RLE.

    Returns ``{"size": [H, W], "counts": str}``; ``counts`` is an ASCII ``str``
    (not ``bytes``) so the dict can be dumped to JSON directly.
    """
    if mask.ndim != 2:
        raise ValueError(f"encode_mask expects a 2-D (H, W) mask, got shape {mask.shape}")
    if mask.size > image_io.LARGE_IMAGE_PIXELS:  # the same RLE, without a column-major copy of the mask
        from ..large_images import rle_counts

        h, w = mask.shape
        rle = mask_utils.frPyObjects({"size": [h, w], "counts": rle_counts(mask)}, h, w)
    else:
        rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    counts = rle["counts"]
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def _to_compressed_rle(seg: Segmentation, h: int, w: int) -> dict[str, Any]:
    """Any COCO segmentation -> one compressed RLE (``counts`` as bytes) of size ``(h, w)``."""
    if isinstance(seg, Mapping):
        if "counts" not in seg or "size" not in seg:
            raise ValueError("RLE segmentation must have 'size' and 'counts' keys")
        size = [int(s) for s in seg["size"]]
        if size != [h, w]:
            raise ValueError(f"RLE size {size} does not match the expected mask size [{h}, {w}]")
        counts = seg["counts"]
        if isinstance(counts, str):
            return {"size": size, "counts": counts.encode("ascii")}
        if isinstance(counts, bytes):
            return {"size": size, "counts": counts}
        if isinstance(counts, Sequence):  # uncompressed RLE: list of run lengths
            if sum(int(c) for c in counts) != h * w:
                raise ValueError(f"uncompressed RLE counts sum to {sum(counts)}, expected H*W = {h * w}")
            return mask_utils.frPyObjects({"size": size, "counts": [int(c) for c in counts]}, h, w)
        raise ValueError(f"unsupported RLE counts type {type(counts).__name__}")
    if isinstance(seg, Sequence) and not isinstance(seg, str | bytes):
        polys = [[float(v) for v in p] for p in seg]
        polys = [p for p in polys if len(p) >= 6]
        if not polys:  # empty / degenerate polygon list -> empty mask
            return mask_utils.encode(np.zeros((h, w), dtype=np.uint8, order="F"))
        for p in polys:
            if len(p) % 2:
                raise ValueError("polygon has an odd number of coordinates")
        return mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    raise ValueError(f"unsupported segmentation type {type(seg).__name__}")


def decode_mask(ann: Segmentation | CocoAnnotation, h: int, w: int) -> np.ndarray:
    """Decode a COCO segmentation to an ``(h, w)`` bool mask.

    ``ann`` may be an annotation dict (its ``"segmentation"`` is used), a
    :class:`CocoAnnotation`, or a segmentation itself: compressed RLE
    (``counts`` as ``str`` or ``bytes``), uncompressed RLE (``counts`` a list
    of ints) or a list of polygons ``[[x0, y0, x1, y1, ...], ...]`` in pixel
    coordinates. Raises ``ValueError`` if an RLE's ``size`` is not ``[h, w]``.
    """
    seg: Any = ann.segmentation if isinstance(ann, CocoAnnotation) else ann
    if isinstance(seg, Mapping) and "segmentation" in seg:
        seg = seg["segmentation"]
    rle = _to_compressed_rle(seg, int(h), int(w))
    with warnings.catch_warnings():
        # pycocotools' Cython decode trips numpy 2's __array__(copy=...) DeprecationWarning; harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def rle_area(rle: Mapping[str, Any]) -> int:
    """Number of foreground pixels of a compressed RLE (``counts`` str or bytes)."""
    h, w = (int(s) for s in rle["size"])
    return int(mask_utils.area(_to_compressed_rle(rle, h, w)))


def rle_bbox(rle: Mapping[str, Any]) -> list[float]:
    """COCO ``XYWH`` box of a compressed RLE; ``[0, 0, 0, 0]`` for an empty mask."""
    h, w = (int(s) for s in rle["size"])
    return [float(v) for v in mask_utils.toBbox(_to_compressed_rle(rle, h, w))]


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO ``XYWH`` box of an ``(H, W)`` bool mask; ``[0, 0, 0, 0]`` if empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs[0]), float(ys[0]), float(xs[-1] - xs[0] + 1), float(ys[-1] - ys[0] + 1)]


# --------------------------------------------------------------------------- JSON


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as compact JSON to ``path`` atomically.

    The data goes to a temporary file in the same directory, is flushed and
    fsync'ed, then ``os.replace``'d onto ``path``: readers see either the old
    file or the complete new one, never a partial write. Keys keep insertion
    order, so equal inputs give byte-identical files.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, separators=(",", ":"), allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- dataset


class OutsideRootError(InputError):
    """An image path from an annotation file points outside the image folder."""


def check_inside(root: Path, name: str, where: str) -> None:
    """Refuses a relative file name ``name`` that leaves ``root`` (absolute, ``..``, or a symlink out).

    Raises:
        OutsideRootError: naming ``where`` and the opt-out flag.
    """
    hint = "(pass --allow-outside-images if the annotation file is trusted)"
    pure = PurePath(name)
    if pure.is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise OutsideRootError(f"{where} {name!r} is an absolute path, not inside the image folder {hint}")
    if ".." in pure.parts or ".." in PureWindowsPath(name).parts:
        raise OutsideRootError(f"{where} {name!r} climbs out of the image folder with '..' {hint}")
    try:
        real_root = root.resolve()
        real = (root / name).resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a NUL byte
        raise OutsideRootError(f"{where} {name!r} cannot be resolved: {e}") from None
    if not real.is_relative_to(real_root):
        raise OutsideRootError(f"{where} {name!r} is a symlink to {real}, outside {real_root} {hint}")


@dataclass(frozen=True)
class CocoImage:
    """One ``images`` entry. ``width``/``height`` in pixels."""

    id: int
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class CocoAnnotation:
    """One ``annotations`` entry.

    ``segmentation`` is kept as found in the file (RLE dict or polygon list);
    use :func:`decode_mask` / :meth:`CocoDataset.mask` to rasterise it.
    ``bbox`` is ``XYWH`` in pixels; ``area`` is the pixel count of the mask
    (computed from the segmentation when the file omits it).
    """

    id: int
    image_id: int
    category_id: int
    segmentation: Any
    area: float
    bbox: tuple[float, float, float, float]
    iscrowd: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class CocoDataset:
    """A validated COCO instances file.

    ``images`` maps image id -> :class:`CocoImage`; ``categories`` maps
    category id -> name; ``image_root`` is the folder ``file_name`` is relative to.
    """

    path: Path
    image_root: Path
    images: dict[int, CocoImage]
    annotations: list[CocoAnnotation]
    categories: dict[int, str]
    info: dict[str, Any] = field(default_factory=dict)
    allow_outside_root: bool = False
    _by_image: dict[int, list[CocoAnnotation]] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._by_image = {i: [] for i in self.images}
        for a in self.annotations:
            self._by_image[a.image_id].append(a)

    def __len__(self) -> int:
        return len(self.images)

    def image_ids(self) -> list[int]:
        """Image ids in file order."""
        return list(self.images)

    def annotations_for(self, image_id: int) -> list[CocoAnnotation]:
        """Annotations of one image, in file order."""
        return self._by_image[image_id]

    def image_path(self, image_id: int) -> Path:
        """Path of the image file, ``image_root / file_name``.

        Raises:
            OutsideRootError: unless ``allow_outside_root``, a ``file_name`` that is absolute, climbs
                with ``..`` or resolves (through symlinks) outside ``image_root``.
        """
        name = self.images[image_id].file_name
        path = self.image_root / name
        if not self.allow_outside_root:
            check_inside(self.image_root, name, f"{self.path.name}: image id {image_id}: file_name")
        return path

    def mask(self, ann: CocoAnnotation) -> np.ndarray:
        """Decode one annotation to an ``(H, W)`` bool mask of its image's size."""
        img = self.images[ann.image_id]
        return decode_mask(ann.segmentation, img.height, img.width)

    def masks(self, image_id: int) -> np.ndarray:
        """All masks of one image stacked as ``(N, H, W)`` bool (N may be 0)."""
        img = self.images[image_id]
        anns = self._by_image[image_id]
        if not anns:
            return np.zeros((0, img.height, img.width), dtype=bool)
        return np.stack([decode_mask(a.segmentation, img.height, img.width) for a in anns])


def _req(entry: Any, where: str, key: str, typ: type | tuple[type, ...]) -> Any:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    if key not in entry:
        raise ValueError(f"{where}: missing key {key!r}")
    val = entry[key]
    if isinstance(val, bool) or not isinstance(val, typ):
        names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise ValueError(f"{where}: {key!r} must be {names}, got {type(val).__name__} {val!r:.40}")
    return val


def _check_segmentation(seg: Any, where: str, h: int, w: int) -> None:
    """Checks what the schema cannot: an RLE of the image's size whose runs cover it exactly, and
    polygons near the image whose rasterisation fits :data:`leansam.limits.MEMORY`."""
    if isinstance(seg, Mapping):
        size = [int(seg["size"][0]), int(seg["size"][1])]
        if size != [h, w]:
            raise ValueError(f"{where}: mask size {size} (H, W) does not match its image entry [{h}, {w}]")
        counts = seg["counts"]
        total = sum(counts) if isinstance(counts, list) else _rle_string_total(counts, where)
        if total != h * w:
            raise ValueError(
                f"{where}: RLE counts cover {total} pixels, expected height x width = {h} x {w} = {h * w}"
            )
        return
    for k, p in enumerate(seg):
        if len(p) % 2 or len(p) < 6:
            raise ValueError(
                f"{where}: segmentation[{k}]: a polygon is a flat list of >= 3 (x, y) pairs, got {len(p)} numbers"
            )
    _check_polygons(seg, where, h, w)


def _check_polygons(polys: list[list[float]], where: str, h: int, w: int) -> None:
    """Polygon vertices must lie within one image size of the image (beyond that no pixel of the
    mask can change); pycocotools rasterises them at 5x along every edge, so the memory is estimated
    from the edge lengths."""
    steps = 0.0
    for k, p in enumerate(polys):
        xy = np.asarray(p, dtype=np.float64).reshape(-1, 2)
        bad = np.flatnonzero((xy[:, 0] < -w) | (xy[:, 0] > 2 * w) | (xy[:, 1] < -h) | (xy[:, 1] > 2 * h))
        if len(bad):
            j = int(bad[0])
            raise ValueError(
                f"{where}: segmentation[{k}][{2 * j}]: vertex ({xy[j, 0]:g}, {xy[j, 1]:g}) is far outside "
                f"the {w} x {h} image (allowed: x in [{-w}, {2 * w}], y in [{-h}, {2 * h}])"
            )
        d = np.abs(np.diff(np.vstack([xy, xy[:1]]), axis=0)).max(axis=1)
        steps += float(5 * d.sum() + len(xy))
    # Two int32 coordinate arrays per edge step (x2 for pycocotools' copies), plus the mask.
    limits.check(limits.MEMORY, 16 * steps + 2 * h * w, f"{where}: rasterising its polygons")


def _rle_string_total(counts: str | bytes, where: str) -> int:
    """Sum of the run lengths of a compressed RLE string (pycocotools' LEB128-like encoding)."""
    data = counts.encode("ascii", "replace") if isinstance(counts, str) else counts
    runs: list[int] = []
    p, n = 0, len(data)
    while p < n:
        x = k = 0
        more = True
        while more:
            if p >= n:
                raise ValueError(f"{where}: RLE counts string ends in the middle of a run length")
            c = data[p] - 48
            if not 0 <= c < 64:
                raise ValueError(f"{where}: RLE counts string has a character outside '0'..'o' at {p}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            raise ValueError(f"{where}: RLE counts string decodes to a negative run length")
        runs.append(x)
    return sum(runs)


def load_coco(path: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None) -> CocoDataset:
    """Read and validate a COCO instances JSON file (LVIS files in COCO layout too).

    ``image_root`` defaults to ``<json dir>/images`` if that folder exists
    (the layout :func:`leansam.data.synth.generate` writes), else the JSON's
    directory. Missing ``area``/``bbox`` are computed from the segmentation.

    Raises ``ValueError`` (with the offending entry in the message) for files
    that are not COCO instances JSON, entries with missing/ill-typed keys,
    duplicate ids, RLE masks whose size differs from their image entry, and
    annotations referencing unknown image or category ids.
    """
    path = Path(path)
    return coco_from_data(validate.read_json(path, "annotations"), path, image_root)


def coco_from_data(
    data: Any, path: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None
) -> CocoDataset:
    """:func:`load_coco` on JSON already read from ``path`` (``path`` names the file in messages).

    LVIS's layout is accepted: an image without ``file_name`` takes the last path component of
    its ``coco_url`` (``.../val2017/000000397133.jpg`` -> ``000000397133.jpg``).
    """
    path = Path(path)
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: not a COCO instances file (top level is {type(data).__name__}, not an object)"
        )
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"{path}: not a COCO instances file, missing top-level key(s) {missing}")
    validate.check(data, COCO_INSTANCES, str(path))
    categories = _read_categories(data["categories"])
    images = _read_images(data["images"])
    anns = _read_annotations(data["annotations"], images, categories)
    if image_root is None:
        root = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    else:
        root = Path(image_root)
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    return CocoDataset(path, root, images, anns, categories, dict(info))


def _read_categories(entries: list) -> dict[int, str]:
    categories: dict[int, str] = {}
    for i, c in enumerate(entries):
        where = f"categories[{i}]"
        cid = _req(c, where, "id", int)
        if cid in categories:
            raise ValueError(f"{where}: duplicate category id {cid}")
        categories[cid] = _req(c, where, "name", str)
    return categories


def _read_images(entries: list) -> dict[int, CocoImage]:
    images: dict[int, CocoImage] = {}
    for i, im in enumerate(entries):
        where = f"images[{i}]"
        iid = _req(im, where, "id", int)
        if iid in images:
            raise ValueError(f"{where}: duplicate image id {iid}")
        h = _req(im, where, "height", int)
        w = _req(im, where, "width", int)
        if h <= 0 or w <= 0:
            raise ValueError(f"{where}: width/height must be positive, got {w}x{h}")
        # A mask of the image is decoded (uint8, then bool) for every annotation of it.
        limits.check(limits.MEMORY, 2 * h * w, f"{where}: a mask of the {w} x {h} image")
        if "file_name" not in im and isinstance(im.get("coco_url"), str):  # LVIS
            file_name = im["coco_url"].rstrip("/").rsplit("/", 1)[-1]
        else:
            file_name = _req(im, where, "file_name", str)
        images[iid] = CocoImage(iid, file_name, w, h)
    return images


_ANN_KEYS = frozenset({"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"})


def _read_annotations(
    entries: list, images: dict[int, CocoImage], categories: dict[int, str]
) -> list[CocoAnnotation]:
    anns: list[CocoAnnotation] = []
    seen: set[int] = set()
    for i, a in enumerate(entries):
        aid = _req(a, f"annotations[{i}]", "id", int)
        where = f"annotations[{i}] (id {aid})"
        if aid in seen:
            raise ValueError(f"{where}: duplicate annotation id")
        seen.add(aid)
        img_id = _req(a, where, "image_id", int)
        if img_id not in images:
            raise ValueError(f"{where}: references unknown image_id {img_id}")
        cat_id = _req(a, where, "category_id", int)
        if cat_id not in categories:
            raise ValueError(f"{where}: references unknown category_id {cat_id}")
        if "segmentation" not in a:
            raise ValueError(f"{where}: missing key 'segmentation'")
        img = images[img_id]
        seg = a["segmentation"]
        _check_segmentation(seg, where, img.height, img.width)
        box, area = _box_and_area(a, where, seg, img)
        extra = {k: v for k, v in a.items() if k not in _ANN_KEYS}
        anns.append(CocoAnnotation(aid, img_id, cat_id, seg, area, box, int(a.get("iscrowd", 0)), extra))
    return anns


def _box_and_area(
    a: dict, where: str, seg: Segmentation, img: CocoImage
) -> tuple[tuple[float, float, float, float], float]:
    """The annotation's ``bbox`` and ``area``, computed from the segmentation when absent."""
    if "bbox" in a:
        bbox = a["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ValueError(f"{where}: 'bbox' must be [x, y, width, height]")
        box = (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))
    else:
        b = mask_utils.toBbox(_to_compressed_rle(seg, img.height, img.width))
        box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
    if "area" in a:
        area = float(_req(a, where, "area", (int, float)))
    else:
        area = float(mask_utils.area(_to_compressed_rle(seg, img.height, img.width)))
    return box, area
