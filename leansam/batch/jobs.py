"""The per-image job of a dataset run: segment-everything, or box / point prompts per image.

:class:`JobSpec` says what to run (plain data, so that it travels to Ray workers);
:class:`Labeler` holds one model and turns one image into one result line::

    {"file": KEY, "status": "ok", "height": H, "width": W, ["image_id": ID,] "masks": [MASK, ...]}
    {"file": KEY, "status": "failed", "error": "REASON"}

Each ``MASK`` has ``segmentation`` (COCO compressed RLE ``{"size": [H, W], "counts": str}``),
``area`` (pixels), ``bbox`` (COCO XYWH of the mask, in pixels of the original image: width
``x_max - x_min + 1``, as pycocotools) and ``score`` (the model's
predicted IoU), plus per task: everything: ``stability_score``, ``point_coords`` ([[x, y]])
or ``prompt_box`` (XYWH); segment: ``prompt_index`` and the prompt (``box`` XYXY, ``points``
[[x, y, label]]), ``det_score`` / ``category_id`` when the prompts file gives them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..io import DEFAULT_MAX_PIXELS, InputError, load_image
from .prompts import Detection, PromptTable, load_prompt_table
from .sources import ImageItem

TASKS = ("everything", "segment")


@dataclass(frozen=True)
class JobSpec:
    """What every image of a run gets (identical on every worker).

    Attributes:
        task: ``everything`` or ``segment``.
        model: registry name; checkpoint: weights file (None: the official / bundled weights).
        trust_pickle, device, threads: as the commands' options (threads None: torch's default).
        max_pixels: larger images are recorded as failed.
        strategy, generator: everything: the strategy and AutomaticMaskGenerator options.
        points: segment: (x, y, label) clicks added to every prompt of every image.
        boxes: segment: XYXY boxes for every image (one prompt each).
        prompts: COCO-style JSON of per-image boxes (segment, or everything's boxes strategy).
        multimask: segment: decode 3 candidates per prompt and keep the best.
        batch_size: prompts per decoder call (segment).
    """

    task: str
    model: str
    checkpoint: str | None = None
    trust_pickle: bool = False
    device: str = "cpu"
    threads: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    strategy: str = "grid"
    generator: dict[str, Any] = field(default_factory=dict)
    points: tuple[tuple[float, float, int], ...] = ()
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    prompts: str | None = None
    multimask: bool = False
    batch_size: int = 64

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        d = dict(d)
        d["points"] = tuple(tuple(p) for p in d.get("points", ()))
        d["boxes"] = tuple(tuple(b) for b in d.get("boxes", ()))
        return cls(**d)


class Labeler:
    """One model, applied to images one at a time (see the module docstring)."""

    def __init__(self, spec: JobSpec) -> None:
        from ..checkpoints import load_model
        from ..predictor import SamPredictor

        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.spec = spec
        model, _ = load_model(spec.model, spec.checkpoint, trust_pickle=spec.trust_pickle, progress=False)
        self.model = model.to(spec.device).eval()
        self.table: PromptTable | None = load_prompt_table(spec.prompts) if spec.prompts else None
        self.generator = None
        if spec.task == "everything":
            from ..everything import AutomaticMaskGenerator

            opts = {**spec.generator, "output_mode": "coco_rle", "progress": False}
            self.generator = AutomaticMaskGenerator(self.model, spec.strategy, **opts)
        else:
            self.predictor = SamPredictor(self.model)

    def label(self, item: ImageItem) -> dict[str, Any]:
        """The result line of one image; unreadable images and bad prompts give a ``failed`` line."""
        try:
            image = load_image(item.path, max_pixels=self.spec.max_pixels)
        except InputError as e:
            return {"file": item.key, "status": "failed", "error": str(e)}
        h, w = image.shape[:2]
        image_id, dets = self.table.lookup(item.key) if self.table is not None else (None, [])
        try:
            with torch.inference_mode():
                masks = self._everything(image, dets) if self.generator else self._segment(image, dets)
        except InputError as e:
            return {"file": item.key, "status": "failed", "error": str(e)}
        line: dict[str, Any] = {"file": item.key, "status": "ok", "height": h, "width": w}
        if image_id is not None:
            line["image_id"] = image_id
        line["masks"] = masks
        return line

    def _everything(self, image: np.ndarray, dets: list[Detection]) -> list[dict[str, Any]]:
        boxes = None
        if self.spec.strategy == "boxes":
            if not dets:
                return []
            boxes = np.array([d.box for d in dets], dtype=np.float32)
        try:
            records = self.generator.generate(image, boxes=boxes)
        except ValueError as e:  # boxes outside the image
            raise InputError(str(e)) from None
        records.sort(key=lambda r: -r["area"])  # stable: ties keep the generator's order
        return [_everything_mask(r) for r in records]

    def _segment(self, image: np.ndarray, dets: list[Detection]) -> list[dict[str, Any]]:
        from ..data.coco import encode_mask, mask_bbox
        from ..eval.gt_prompts import InstancePrompts
        from ..eval.predict import predict_instances

        h, w = image.shape[:2]
        prompts, meta = _prompts(self.spec, dets, h, w)
        if len(meta) == 0:
            return []
        with torch.inference_mode():
            self.predictor.set_image(image)
        masks, scores = predict_instances(
            self.predictor, InstancePrompts(*prompts, multimask=self.spec.multimask), self.spec.batch_size
        )
        out = []
        for i, m in enumerate(masks):
            rec = {
                "segmentation": encode_mask(m),
                "area": int(m.sum()),
                "bbox": mask_bbox(m),
                "score": float(scores[i]),
                "prompt_index": i,
                **meta[i],
            }
            out.append(rec)
        return out


def _everything_mask(r: dict[str, Any]) -> dict[str, Any]:
    from ..data.coco import rle_bbox

    seg = r["segmentation"]
    counts = seg["counts"]
    rle = {
        "size": [int(s) for s in seg["size"]],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }
    rec: dict[str, Any] = {
        "segmentation": rle,
        "area": int(r["area"]),
        "bbox": rle_bbox(rle),  # COCO's box (pycocotools), not segment_anything's inclusive one
        "score": float(r["predicted_iou"]),
        "stability_score": float(r["stability_score"]),
    }
    if "prompt_box" in r:
        rec["prompt_box"] = [float(v) for v in r["prompt_box"]]
    elif all(math.isfinite(float(v)) for v in r["point_coords"][0]):
        rec["point_coords"] = [[float(v) for v in r["point_coords"][0]]]
    return rec


def _prompts(
    spec: JobSpec, dets: list[Detection], h: int, w: int
) -> tuple[tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None], list[dict[str, Any]]]:
    """(boxes B x 4 XYXY, points B x P x 2, labels B x P) and each prompt's record fields."""
    meta: list[dict[str, Any]] = []
    if spec.prompts is not None:
        boxes = [d.box for d in dets]
        for d in dets:
            m: dict[str, Any] = {"box": list(d.box)}
            if d.score is not None:
                m["det_score"] = d.score
            if d.category_id is not None:
                m["category_id"] = d.category_id
            meta.append(m)
    else:
        boxes = list(spec.boxes)
        meta = [{"box": list(b)} for b in boxes] or [{}]
    for x0, y0, x1, y1 in boxes:
        if x0 < -1 or y0 < -1 or x1 > w + 1 or y1 > h + 1:
            raise InputError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is outside the {w} x {h} image")
    for x, y, _ in spec.points:
        if not (0 <= x <= w and 0 <= y <= h):
            raise InputError(f"point ({x:g}, {y:g}) is outside the {w} x {h} image")
    n = len(meta) if boxes or spec.points else 0
    box_arr = np.array(boxes, dtype=np.float32).reshape(-1, 4) if boxes else None
    pts = lab = None
    if spec.points and n:
        pts = np.repeat(np.array([p[:2] for p in spec.points], dtype=np.float32)[None], n, axis=0)
        lab = np.repeat(np.array([p[2] for p in spec.points], dtype=np.int64)[None], n, axis=0)
        clicks = [[float(x), float(y), int(lab_)] for x, y, lab_ in spec.points]
        for m in meta:
            m["points"] = clicks
    return (box_arr, pts, lab), meta[:n]
