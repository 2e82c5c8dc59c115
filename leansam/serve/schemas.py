"""Request and response bodies of the HTTP API (pydantic models; they also make the OpenAPI page).

Coordinates are pixels of the original image, x to the right and y down, origin at the top-left
corner of the top-left pixel (as :class:`leansam.SamPredictor` takes them).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Point = tuple[float, float, int]
Box = tuple[float, float, float, float]
ModelName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageInfo(_Strict):
    """An image the server holds: its id (SHA-256 of the file's bytes) and size."""

    id: str = Field(description="SHA-256 of the image file's bytes, 64 hex digits")
    width: int
    height: int


class FolderListing(_Strict):
    images: list[str] = Field(description="relative names of the image files under --images")


class FolderOpen(_Strict):
    name: str = Field(min_length=1, max_length=4096, description="a name from GET /api/folder")


class ModelRow(_Strict):
    name: str
    family: str
    available: bool = Field(description="weights are bundled or already in the local cache")


class ModelListing(_Strict):
    default: str
    loaded: list[str]
    models: list[ModelRow]


class PromptRequest(_Strict):
    """Prompts for one image: points and/or boxes and/or a previous low-res mask.

    With B boxes the points are added to each box and B results come back (one per box).
    """

    model: ModelName | None = Field(None, description="registry name; default: the server's --model")
    points: list[Point] = Field(
        default_factory=list, max_length=256, description="[x, y, label]: 1 foreground, 0 background"
    )
    boxes: list[Box] = Field(default_factory=list, max_length=64, description="[x0, y0, x1, y1] each")
    mask_input: str | None = Field(
        None,
        max_length=1 << 20,
        description="base64 of little-endian float32 low-res logits, 4x the model's embedding "
        "grid (256 x 256 for SAM): a previous response's low_res_logits from the same model",
    )
    multimask: bool | None = Field(
        None, description="3 candidate masks per prompt; default: true for a single point only"
    )
    png: bool = Field(False, description="also return each mask as a base64 PNG")
    return_low_res: bool = Field(False, description="also return each mask's low-res logits")

    @field_validator("points")
    @classmethod
    def _check_points(cls, pts: list[Point]) -> list[Point]:
        for x, y, label in pts:
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError(f"point ({x}, {y}) is not finite")
            if label not in (0, 1):
                raise ValueError(f"point label must be 1 (foreground) or 0 (background), not {label}")
        return pts

    @field_validator("boxes")
    @classmethod
    def _check_boxes(cls, boxes: list[Box]) -> list[Box]:
        for b in boxes:
            if not all(math.isfinite(v) for v in b):
                raise ValueError(f"box {list(b)} is not finite")
            if not (b[0] < b[2] and b[1] < b[3]):
                raise ValueError(f"box {list(b)} is empty: need x0 < x1 and y0 < y1")
        return boxes


class EverythingRequest(_Strict):
    model: ModelName | None = None
    strategy: Literal["grid", "hierarchical"] = Field(
        "grid",
        description="grid: every point of the n x n grid; hierarchical (TinySAM): a sparse grid first, "
        "then only the dense points that its confident masks leave uncovered (needs n >= 4)",
    )
    points_per_side: int = Field(16, ge=1, le=64, description="prompt grid of n x n points")
    high_score_thresh: float | None = Field(
        None,
        ge=-100,
        le=100,
        description="hierarchical: a sparse mask covers the points where its logit exceeds this; "
        "default: the model's",
    )
    pred_iou_thresh: float | None = Field(None, ge=0, le=1, description="default: the model's")
    stability_score_thresh: float | None = Field(None, ge=0, le=1, description="default: the model's")
    stability_score_offset: float | None = Field(None, gt=0, le=100, description="default: the model's")
    box_nms_thresh: float | None = Field(None, ge=0, le=1, description="default: the model's")
    png: bool = False

    def generator_options(self) -> dict:
        """The :class:`leansam.AutomaticMaskGenerator` options of this request (None: the model's)."""
        return self.model_dump(exclude={"model", "strategy", "png"})

    @model_validator(mode="after")
    def _check_generator_options(self) -> EverythingRequest:
        from ..everything import AutomaticMaskGenerator

        AutomaticMaskGenerator.check_options(self.strategy, **self.generator_options())  # ValueError: 422
        return self


class Rle(_Strict):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="compressed COCO RLE (pycocotools' string form)")


class MaskRecord(_Strict):
    segmentation: Rle
    score: float = Field(description="predicted IoU")
    area: int
    bbox: list[float] = Field(description="[x, y, width, height] of the mask, COCO convention")
    png: str | None = Field(None, description="base64 PNG (0/255), when png was requested")
    low_res_logits: str | None = Field(
        None, description="base64 little-endian float32 low-res logits (row-major), when requested"
    )
    low_res_size: list[int] | None = Field(None, description="[h, w] of low_res_logits")


class PromptResult(_Strict):
    masks: list[MaskRecord]
    best: int = Field(description="index of the highest-scoring mask")


class PromptResponse(_Strict):
    image_id: str
    model: str
    width: int
    height: int
    results: list[PromptResult] = Field(description="one per box (one when there are no boxes)")


class EverythingResponse(_Strict):
    image_id: str
    model: str
    width: int
    height: int
    masks: list[MaskRecord]
    prompts_decoded: int = Field(description="prompts sent to the mask decoder")
