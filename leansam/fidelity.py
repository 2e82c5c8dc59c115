"""The fidelity gate: how closely a compressed model follows its reference, with pass/fail thresholds.

    report = compare_models(reference, candidate, images, CompareConfig(min_box_iou=0.95))
    print(report.table())
    report.passed            # False when any threshold is missed

``reference`` and ``candidate`` are anything :class:`leansam.SamPredictor` accepts (a
:class:`leansam.Sam`, a model quantized by :mod:`leansam.compress`, an ONNX Runtime model from
:mod:`leansam.export`). ``images`` are H x W x 3 uint8 RGB arrays or a folder.

Measured per image, in pixels of the original image:

* **Embedding cosine similarity** of the two image embeddings (flattened), when their shapes match.
* **Per-prompt mask IoU** between the reference's and the candidate's mask for the same prompt,
  for a box prompt (single-mask output) and a centre click (multimask output; each model's own
  highest-scoring mask, no oracle).
* **Segment-everything agreement**: both models run :class:`leansam.AutomaticMaskGenerator`
  with the same settings (``points_per_side`` grid, segment_anything's default filters); masks
  are matched greedily by IoU (highest first, one-to-one, IoU > 0). Matched mIoU = sum of the
  matched IoUs / max(#reference masks, #candidate masks), so unmatched masks count as 0 (1.0 when
  both sets are empty); count mismatch = |#reference - #candidate|.

Prompts (deterministic): from the reference's segment-everything masks, at most
``prompts_per_image`` of them in order of predicted IoU, each giving its tight box and its centre
click (the pixel farthest from the mask boundary); when the reference finds fewer masks (or
``everything=False``), the rest come from a fixed scheme: the image is cut into a k x k grid of
cells (k = ceil(sqrt(n))) in row-major order, each prompt being the cell's box shrunk by 10% on
each side and the cell's centre click.

Thresholds gate the means (box IoU, point IoU, cosine, everything mIoU) and the mean count
mismatch per image; thresholds left as None are reported, not gated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .eval.gt_prompts import mask_center, tight_box
from .io import DEFAULT_MAX_PIXELS, InputError, load_image
from .predictor import SamPredictor

__all__ = ["Check", "CompareConfig", "CompareReport", "Stats", "compare_models", "greedy_match"]


@dataclass(frozen=True)
class CompareConfig:
    """Settings and thresholds of :func:`compare_models` (see the module docstring).

    Attributes:
        max_images: use at most this many images (None: all).
        prompts_per_image: box + click prompts per image.
        everything: run segment-everything on both models (agreement and prompt source).
        points_per_side: grid density of segment-everything.
        everything_iou_thresh, everything_stability_thresh: segment-everything's predicted-IoU and
            stability filters (None: segment_anything's 0.88 and 0.95; weak models such as the
            bundled ``leansam_tiny`` need lower values to produce any mask).
        min_box_iou, min_point_iou: gates on the mean per-prompt IoU (box / centre click).
        min_cosine: gate on the mean embedding cosine similarity.
        min_everything_miou: gate on the mean matched mIoU of segment-everything.
        max_count_mismatch: gate on the mean |#reference - #candidate| masks per image.
    """

    max_images: int | None = None
    prompts_per_image: int = 16
    everything: bool = True
    points_per_side: int = 16
    everything_iou_thresh: float | None = None
    everything_stability_thresh: float | None = None
    min_box_iou: float | None = None
    min_point_iou: float | None = None
    min_cosine: float | None = None
    min_everything_miou: float | None = None
    max_count_mismatch: float | None = None

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"CompareConfig: {msg}")

        if self.max_images is not None and (not isinstance(self.max_images, int) or self.max_images < 1):
            bad(f"max_images must be a positive int or None, not {self.max_images!r}")
        if not isinstance(self.prompts_per_image, int) or self.prompts_per_image < 1:
            bad(f"prompts_per_image must be a positive int, not {self.prompts_per_image!r}")
        if not isinstance(self.points_per_side, int) or self.points_per_side < 1:
            bad(f"points_per_side must be a positive int, not {self.points_per_side!r}")
        for name in (
            "min_box_iou",
            "min_point_iou",
            "min_everything_miou",
            "everything_iou_thresh",
            "everything_stability_thresh",
        ):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and 0.0 <= v <= 1.0):
                bad(f"{name} must be in [0, 1], not {v!r}")
        if self.min_cosine is not None and not (
            isinstance(self.min_cosine, int | float) and -1 <= self.min_cosine <= 1
        ):
            bad(f"min_cosine must be in [-1, 1], not {self.min_cosine!r}")
        if self.max_count_mismatch is not None and not (
            isinstance(self.max_count_mismatch, int | float) and self.max_count_mismatch >= 0
        ):
            bad(f"max_count_mismatch must be >= 0, not {self.max_count_mismatch!r}")
        if self.everything is False and (
            self.min_everything_miou is not None or self.max_count_mismatch is not None
        ):
            bad("everything thresholds need everything=True")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Stats:
    """Summary of per-prompt (or per-image) values: mean, min, 5th percentile, count."""

    mean: float
    min: float
    p5: float
    n: int

    @staticmethod
    def of(values: Sequence[float]) -> Stats | None:
        if len(values) == 0:
            return None
        v = np.asarray(values, dtype=np.float64)
        return Stats(float(v.mean()), float(v.min()), float(np.percentile(v, 5)), int(v.size))


@dataclass(frozen=True)
class Check:
    """One gate: ``value`` compared with ``threshold`` (``>=`` for minimums, ``<=`` for maximums)."""

    name: str
    value: float | None
    threshold: float
    op: str

    @property
    def passed(self) -> bool:
        if self.value is None or math.isnan(self.value):
            return False
        return self.value >= self.threshold if self.op == ">=" else self.value <= self.threshold


class Gated:
    """A report with gates (``checks``): ``passed`` when every one holds, ``failures`` those that do not."""

    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


@dataclass
class CompareReport(Gated):
    """Result of :func:`compare_models`. ``passed`` is True when every gate holds."""

    config: dict[str, Any]
    n_images: int
    box_iou: Stats | None
    point_iou: Stats | None
    cosine: Stats | None
    everything_miou: Stats | None
    count_mismatch: Stats | None
    masks_reference: int
    masks_candidate: int
    checks: list[Check] = field(default_factory=list)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checks"] = [{**asdict(c), "passed": c.passed} for c in self.checks]
        d["passed"] = self.passed
        return d

    def table(self) -> str:
        """A Markdown table of the measurements, with the gates and their outcome."""
        gates = {c.name: c for c in self.checks}

        def row(label: str, key: str, s: Stats | None, extra: str = "") -> str:
            if s is None:
                return f"| {label} | n/a | | | 0 | {extra} |"
            g = gates.get(key)
            gate = f"{g.op} {g.threshold:g}: {'pass' if g.passed else 'FAIL'}" if g else "-"
            return f"| {label} | {s.mean:.4f} | {s.min:.4f} | {s.p5:.4f} | {s.n} | {gate} |"

        lines = [
            "| measure | mean | min | p5 | n | gate |",
            "|---|---|---|---|---|---|",
            row("mask IoU, box prompt", "box_iou", self.box_iou),
            row("mask IoU, centre click", "point_iou", self.point_iou),
            row("embedding cosine similarity", "cosine", self.cosine),
            row("everything matched mIoU", "everything_miou", self.everything_miou),
            row("everything count mismatch (masks/image)", "count_mismatch", self.count_mismatch),
        ]
        lines.append("")
        lines.append(
            f"{self.n_images} images; segment-everything masks: reference {self.masks_reference}, "
            f"candidate {self.masks_candidate}"
        )
        lines += self.notes
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def greedy_match(iou: np.ndarray) -> list[tuple[int, int, float]]:
    """One-to-one matching of an R x C IoU matrix, highest IoU first, only pairs with IoU > 0.

    Returns (reference index, candidate index, IoU) triples; ties go to the lower indices.
    """
    if iou.size == 0:
        return []
    order = np.argsort(-iou, axis=None, kind="stable")
    used_r, used_c = set(), set()
    out = []
    for flat in order:
        r, c = divmod(int(flat), iou.shape[1])
        v = float(iou[r, c])
        if v <= 0:
            break
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        out.append((r, c, v))
    return out


def _cross_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A x H x W and B x H x W bool -> A x B IoU (0 where the union is empty)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    fa = torch.from_numpy(a.reshape(len(a), -1)).float()
    fb = torch.from_numpy(b.reshape(len(b), -1)).float()
    inter = (fa @ fb.T).double()
    union = fa.sum(1).double()[:, None] + fb.sum(1).double()[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter)).numpy()


def _pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """N x H x W and N x H x W bool -> N IoUs (1 where both masks are empty)."""
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def grid_prompts(size: tuple[int, int], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed prompt scheme: (n x 4 XYXY boxes, n x 2 (x, y) clicks) from a k x k cell grid."""
    h, w = size
    k = max(1, math.ceil(math.sqrt(n)))
    boxes, points = [], []
    for i in range(n):
        r, c = divmod(i, k)
        x0, x1 = w * c / k, w * (c + 1) / k
        y0, y1 = h * r / k, h * (r + 1) / k
        dx, dy = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
        boxes.append([x0 + dx, y0 + dy, x1 - dx, y1 - dy])
        points.append([(x0 + x1) / 2, (y0 + y1) / 2])
    return np.asarray(boxes, np.float32), np.asarray(points, np.float32)


def _everything(model: Any, image: np.ndarray, config: CompareConfig) -> tuple[np.ndarray, np.ndarray]:
    """(K x H x W bool masks, K predicted IoUs) of segment-everything, in predicted-IoU order."""
    from .everything import AutomaticMaskGenerator

    gen = AutomaticMaskGenerator(
        model,
        "grid",
        points_per_side=config.points_per_side,
        pred_iou_thresh=config.everything_iou_thresh,
        stability_score_thresh=config.everything_stability_thresh,
    )
    records = gen.generate(image)
    if not records:
        return np.zeros((0, *image.shape[:2]), bool), np.zeros(0)
    order = sorted(range(len(records)), key=lambda i: -records[i]["predicted_iou"])
    masks = np.stack([records[i]["segmentation"] for i in order]).astype(bool)
    return masks, np.asarray([records[i]["predicted_iou"] for i in order])


@torch.no_grad()
def _masks(pred: SamPredictor, boxes: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(box masks N x H x W, best-scoring click masks N x H x W) for N prompts in one call each."""
    dev = pred.device
    b = torch.from_numpy(boxes).to(dev)
    box_masks, _, _ = pred.predict_torch(None, None, b, multimask_output=False, original_coords=True)
    p = torch.from_numpy(points).float()[:, None].to(dev)
    labels = torch.ones((len(points), 1), dtype=torch.long, device=dev)
    pt_masks, scores, _ = pred.predict_torch(p, labels, None, multimask_output=True, original_coords=True)
    best = scores.argmax(1)
    pt = pt_masks[torch.arange(len(points), device=pt_masks.device), best]
    return box_masks[:, 0].cpu().numpy(), pt.cpu().numpy()


def _load_images(
    images: str | Path | Sequence[np.ndarray], limit: int | None
) -> list[tuple[str, np.ndarray]]:
    if isinstance(images, str | Path):
        from .compress.calib import find_images

        paths = find_images(images, limit, what="image")
        return [(str(p), load_image(p, max_pixels=DEFAULT_MAX_PIXELS)) for p in paths]
    out = []
    for i, img in enumerate(list(images)[:limit] if limit else list(images)):
        a = np.asarray(img)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise InputError(f"image {i} must be H x W x 3 uint8 RGB, got {a.shape} {a.dtype}")
        out.append((f"<array {i}>", a))
    if not out:
        raise InputError("no images to compare on")
    return out


@dataclass
class _Tally:
    """Per-prompt and per-image measures accumulated over the images."""

    box_ious: list[float] = field(default_factory=list)
    point_ious: list[float] = field(default_factory=list)
    cosines: list[float] = field(default_factory=list)
    everything_miou: list[float] = field(default_factory=list)
    mismatch: list[float] = field(default_factory=list)
    n_ref: int = 0
    n_cand: int = 0
    per_image: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _everything_agreement(
    reference: Any, candidate: Any, image: np.ndarray, config: CompareConfig, t: _Tally, row: dict
) -> np.ndarray:
    """Matches both models' segment-everything masks; returns the reference's masks (N x H x W)."""
    ref_masks, _ = _everything(reference, image, config)
    cand_masks, _ = _everything(candidate, image, config)
    matches = greedy_match(_cross_iou(ref_masks, cand_masks))
    denom = max(len(ref_masks), len(cand_masks))
    miou = sum(m[2] for m in matches) / denom if denom else 1.0
    t.everything_miou.append(miou)
    t.mismatch.append(abs(len(ref_masks) - len(cand_masks)))
    t.n_ref += len(ref_masks)
    t.n_cand += len(cand_masks)
    row.update(everything_miou=miou, masks_reference=len(ref_masks), masks_candidate=len(cand_masks))
    return ref_masks


def _compare_image(
    preds: tuple[SamPredictor, SamPredictor],
    models: tuple[Any, Any],
    name: str,
    image: np.ndarray,
    config: CompareConfig,
    t: _Tally,
) -> dict[str, Any]:
    """Adds one image's measures to ``t``; returns its per-image row."""
    ref_pred, cand_pred = preds
    size = image.shape[:2]
    ref_pred.set_image(image)
    cand_pred.set_image(image)
    e_r, e_c = ref_pred.get_image_embedding(), cand_pred.get_image_embedding()
    cos = None
    if e_r.shape == e_c.shape:
        cos = float(F.cosine_similarity(e_r.flatten().double(), e_c.flatten().double(), dim=0))
        t.cosines.append(cos)
    elif not t.notes:
        t.notes.append(f"embedding shapes differ ({tuple(e_r.shape)} vs {tuple(e_c.shape)}): no cosine")
    row: dict[str, Any] = {"image": name, "cosine": cos}
    ref_masks = np.zeros((0, *size), bool)
    if config.everything:
        ref_masks = _everything_agreement(*models, image, config, t, row)
    use = [m for m in ref_masks[: config.prompts_per_image] if m.any()]
    boxes = np.asarray([tight_box(m) for m in use], np.float32).reshape(-1, 4)
    points = np.asarray([mask_center(m) for m in use], np.float32).reshape(-1, 2) + 0.5
    if len(use) < config.prompts_per_image:
        gb, gp = grid_prompts(size, config.prompts_per_image - len(use))
        boxes, points = np.concatenate([boxes, gb]), np.concatenate([points, gp])
    rb, rp = _masks(ref_pred, boxes, points)
    cb, cp = _masks(cand_pred, boxes, points)
    bi, pi = _pair_iou(rb, cb), _pair_iou(rp, cp)
    t.box_ious += bi.tolist()
    t.point_ious += pi.tolist()
    row.update(
        prompts=len(boxes),
        prompts_from_everything=len(use),
        box_iou_mean=float(bi.mean()),
        point_iou_mean=float(pi.mean()),
    )
    return row


def _gates(report: CompareReport, config: CompareConfig) -> list[Check]:
    """The thresholds of ``config`` checked against the report's means."""

    def mean(s: Stats | None) -> float | None:
        return None if s is None else s.mean

    gates = (
        ("box_iou", mean(report.box_iou), config.min_box_iou, ">="),
        ("point_iou", mean(report.point_iou), config.min_point_iou, ">="),
        ("cosine", mean(report.cosine), config.min_cosine, ">="),
        ("everything_miou", mean(report.everything_miou), config.min_everything_miou, ">="),
        ("count_mismatch", mean(report.count_mismatch), config.max_count_mismatch, "<="),
    )
    return [Check(n, v, float(t), op) for n, v, t, op in gates if t is not None]


def compare_models(
    reference: Any,
    candidate: Any,
    images: str | Path | Sequence[np.ndarray],
    config: CompareConfig | None = None,
    *,
    log: Any = None,
) -> CompareReport:
    """Measures how closely ``candidate`` follows ``reference`` on ``images`` (module docstring).

    Returns a :class:`CompareReport` whose ``checks`` hold the thresholds of ``config``.
    """
    config = config or CompareConfig()
    say = log or (lambda _m: None)
    data = _load_images(images, config.max_images)
    preds = (SamPredictor(reference), SamPredictor(candidate))
    t = _Tally()
    for k, (name, image) in enumerate(data):
        row = _compare_image(preds, (reference, candidate), name, image, config, t)
        t.per_image.append(row)
        say(
            f"[{k + 1}/{len(data)}] {name}: box IoU {row['box_iou_mean']:.3f}, point IoU {row['point_iou_mean']:.3f}"
        )
    if config.everything and t.n_ref == 0 and t.n_cand == 0:
        t.notes.append(
            "segment-everything produced no mask with either model (agreement 1.0 is vacuous); lower "
            "everything_iou_thresh / everything_stability_thresh for a weak model"
        )
    report = CompareReport(
        config=config.to_dict(),
        n_images=len(data),
        box_iou=Stats.of(t.box_ious),
        point_iou=Stats.of(t.point_ious),
        cosine=Stats.of(t.cosines),
        everything_miou=Stats.of(t.everything_miou),
        count_mismatch=Stats.of(t.mismatch),
        masks_reference=t.n_ref,
        masks_candidate=t.n_cand,
        per_image=t.per_image,
        notes=t.notes,
    )
    report.checks = _gates(report, config)
    return report
