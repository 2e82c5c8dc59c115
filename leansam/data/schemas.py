"""Schemas of the JSON files leansam reads (see :mod:`leansam.validate`).

* :data:`COCO_INSTANCES`: a COCO / LVIS instances file (``images``, ``annotations``, ``categories``).
* :data:`DETECTIONS`: a COCO results file, the detector boxes of ``leansam eval --detections``.
* :data:`BOXES`: the boxes file of ``leansam everything --strategy boxes`` (a results file whose
  entries need only ``bbox``).

Boxes are COCO ``[x, y, width, height]`` in pixels; coordinates must be finite and within
:data:`MAX_COORD` in magnitude (no image is that large), widths and heights non-negative.
Checks that need the image (a polygon inside it, an RLE summing to its pixel count) are in
:mod:`leansam.data.coco`.
"""

from __future__ import annotations

from typing import Any

from ..validate import ANY, Arr, Num, Obj, OneOf, Schema, Str, ValidationError, describe

#: Largest coordinate magnitude accepted in a box or polygon (pixels).
MAX_COORD = 1e8
#: Largest image side an annotation may declare (pixels).
MAX_SIDE = 1 << 20

INT_ID = Num(integer=True, min=-(2**63), max=2**63 - 1)
COORD = Num(min=-MAX_COORD, max=MAX_COORD)
SIZE = Num(integer=True, min=1, max=MAX_SIDE)


class Box(Schema):
    """``[x, y, width, height]``: four finite coordinates, width and height >= 0."""

    expected = "[x, y, width, height] (4 finite numbers, width and height >= 0)"

    def check(self, v: Any, path: str, source: str) -> Any:
        Arr(COORD, length=4, what="[x, y, width, height], a list").check(v, path, source)
        for i in (2, 3):
            if v[i] < 0:
                raise ValidationError(source, f"{path}[{i}]", f"expected a size >= 0, got {describe(v[i])}")
        return v


class Numbers(Schema):
    """A flat list of coordinates; checked in bulk (polygons can hold millions of them)."""

    expected = "a list of numbers"

    def check(self, v: Any, path: str, source: str) -> Any:
        if not isinstance(v, list):
            self.fail(v, path, source)
        lo, hi = -MAX_COORD, MAX_COORD
        if all(type(x) is float or type(x) is int for x in v) and all(lo <= x <= hi for x in v):
            return v  # NaN fails the range test, so finite numbers only
        for i, x in enumerate(v):
            COORD.check(x, f"{path}[{i}]", source)
        return v  # pragma: no cover - the loop raises


POLYGON = Arr(Numbers(), what="a list of polygons")
RLE = Obj(
    required={
        "size": Arr(SIZE, length=2, what="[height, width], a list"),
        "counts": OneOf(
            Str(max_len=1 << 31),
            Arr(Num(integer=True, min=0), what="a list of run lengths"),
            expected="a compressed RLE string or a list of run lengths",
        ),
    }
)
SEGMENTATION = OneOf(RLE, POLYGON, expected="an RLE object or a list of polygons")

COCO_INSTANCES = Obj(
    required={
        "images": Arr(
            Obj(
                required={"id": INT_ID, "height": SIZE, "width": SIZE},
                optional={"file_name": Str(nonempty=True), "coco_url": Str()},
            )
        ),
        "annotations": Arr(
            Obj(
                required={
                    "id": INT_ID,
                    "image_id": INT_ID,
                    "category_id": INT_ID,
                    "segmentation": SEGMENTATION,
                },
                optional={
                    "bbox": Box(),
                    "area": Num(min=0),
                    "iscrowd": Num(integer=True, min=0, max=1),
                },
            )
        ),
        "categories": Arr(Obj(required={"id": INT_ID, "name": Str()})),
    },
    optional={"info": ANY},
)

DETECTION = Obj(
    required={"image_id": INT_ID, "bbox": Box(), "score": Num()},
    optional={"category_id": INT_ID},
)
DETECTIONS = Arr(DETECTION, what="a list of detections")

BOXES = Arr(
    Obj(
        required={"bbox": Box()},
        optional={"score": Num(), "image_id": OneOf(INT_ID, Str(), expected="an integer or a string")},
    ),
    what="a list of detections",
)
