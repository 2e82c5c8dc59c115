"""Minimal held-out evaluation used by the training recipe and the distillation comparison.

(The general evaluation harness is ``leansam.eval``; this module only needs mIoU with one GT
box or one centre click per instance, student/teacher agreement, and encoder latency, and
keeps the training package independent of it.)

Protocol of :func:`evaluate_gt`, per instance of every image of the source:

* box: the tight GT box (XYXY = x, y, x + w, y + h of the mask's pixel extent), single-mask output;
* point: one foreground click at the mask's centre (:func:`leansam.train.prompts.centre_points`),
  multimask output, the candidate with the highest predicted IoU is kept (no oracle).

IoU is computed at the original image resolution; mIoU is the mean over instances.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from ..models.sam import Sam
from ..predictor import SamPredictor
from .prompts import centre_points


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a, b: N x H x W bool -> N IoUs (1 where both are empty)."""
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """N x H x W bool -> N x 4 XYXY pixel-extent boxes (x1 = last column + 1)."""
    out = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        out[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return out


@torch.no_grad()
def predict_instances(model: Sam, image: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Box and centre-point predictions for every GT mask: {"box": N x H x W, "point": N x H x W} bool."""
    pred = SamPredictor(model)
    pred.set_image(image)
    dev = model.device
    boxes = torch.from_numpy(tight_boxes(masks)).to(dev)
    box_masks, _, _ = pred.predict_torch(None, None, boxes, multimask_output=False, original_coords=True)
    pts = torch.from_numpy(centre_points(masks)).float()[:, None].to(dev)
    labels = torch.ones((len(masks), 1), dtype=torch.long, device=dev)
    pt_masks, scores, _ = pred.predict_torch(pts, labels, None, multimask_output=True, original_coords=True)
    best = scores.argmax(1)
    pt_best = pt_masks[torch.arange(len(masks)), best]
    return {"box": box_masks[:, 0].cpu().numpy(), "point": pt_best.cpu().numpy()}


def evaluate_gt(model: Sam, source: Sequence, max_images: int | None = None) -> dict:
    """mIoU against ground truth with a GT box and with the centre click (module docstring).

    Returns {"box_miou", "point_miou", "n_instances", "n_images", "per_category": {id: {...}}}.
    """
    model.eval()
    ious: dict[str, list[float]] = {"box": [], "point": []}
    per_cat: dict[int, dict[str, list[float]]] = defaultdict(lambda: {"box": [], "point": []})
    n_img = 0
    for i in range(len(source) if max_images is None else min(max_images, len(source))):
        s = source[i]
        if len(s.masks) == 0:
            continue
        n_img += 1
        out = predict_instances(model, s.image, s.masks)
        cats = s.category_ids or [0] * len(s.masks)
        for kind in ("box", "point"):
            v = _iou(out[kind], s.masks)
            ious[kind] += v.tolist()
            for c, x in zip(cats, v):
                per_cat[int(c)][kind].append(float(x))
    return {
        "box_miou": float(np.mean(ious["box"])),
        "point_miou": float(np.mean(ious["point"])),
        "n_instances": len(ious["box"]),
        "n_images": n_img,
        "per_category": {
            c: {
                "box_miou": float(np.mean(d["box"])),
                "point_miou": float(np.mean(d["point"])),
                "n": len(d["box"]),
            }
            for c, d in sorted(per_cat.items())
        },
    }


def agreement(student: Sam, teacher: Sam, source: Sequence, max_images: int | None = None) -> dict:
    """How closely the student follows the teacher on held-out images.

    Returns {"box_agree": mean IoU(student mask, teacher mask) with GT-box prompts,
    "point_agree": the same with centre clicks, "embed_mse": mean squared embedding difference}.
    """
    student.eval()
    teacher.eval()
    res: dict[str, list[float]] = {"box": [], "point": []}
    mse = []
    for i in range(len(source) if max_images is None else min(max_images, len(source))):
        s = source[i]
        if len(s.masks) == 0:
            continue
        a = predict_instances(student, s.image, s.masks)
        b = predict_instances(teacher, s.image, s.masks)
        for kind in res:
            res[kind] += _iou(a[kind], b[kind]).tolist()
        with torch.no_grad():
            es = student.encode_image(student.preprocess(s.image)).embed
            et = teacher.encode_image(teacher.preprocess(s.image)).embed
        mse.append(float(((es - et) ** 2).mean()))
    return {
        "box_agree": float(np.mean(res["box"])),
        "point_agree": float(np.mean(res["point"])),
        "embed_mse": float(np.mean(mse)),
    }


@torch.no_grad()
def encoder_latency(model: Sam, reps: int = 10, warmup: int = 2) -> float:
    """Median seconds of one image-encoder call on a random 1 x 3 x S x S input (S = encoder size)."""
    model.eval()
    s = model.transform.encoder_size
    x = torch.randn(1, 3, s, s, device=model.device)
    for _ in range(warmup):
        model.image_encoder(x)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        model.image_encoder(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
