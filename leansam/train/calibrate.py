"""A model's segment-everything defaults, chosen on a validation split.

    python -m leansam.train.recipe calibrate-everything     # -> docs/results/everything_calibration.json

**Validation split** :func:`validation_spec`: the held-out set's style (``RICH_SYNTH``) rendered
with seed :data:`VALIDATION_SEED`, disjoint from the training data (seeds 0 to 8) and from every
evaluation set of the recipe (seeds 1000 and 2000). The held-out set is never looked at here.

**How.** Each image is encoded and its whole grid (``points_per_side`` squared clicks, three masks
each) decoded ONCE with no filter, into :class:`Candidates`: per mask its box, predicted IoU,
the pixel counts of its logits above a ladder of levels (the stability score at any offset of
the ladder is a ratio of two of them) and its IoU with every ground-truth object. Every setting
of :data:`SWEEP` then replays the generator's filters on the cache (predicted IoU above the
threshold, stability at least the threshold, non-empty, box NMS by predicted IoU): no model call
per setting. The chosen setting has the highest recall at IoU >= 0.5 among those with precision
(one-to-one matches / masks, :func:`~leansam.train.evaluate.match_counts`) at least
``min_precision``; ties go to the higher precision. The real generator then runs with SAM's
defaults and with the chosen ones on the same images, which checks the replay.

**Hierarchical sampling.** With the chosen thresholds fixed, :mod:`leansam.train.calibrate_hier`
then chooses the confident-logit threshold of TinySAM's sampler (``--only-hierarchical``: this
part alone, into the existing results file).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..everything import ops
from ..everything.options import SAM_DEFAULTS
from ..everything.samplers import GridSampler
from .data import open_source
from .evaluate import click_ceiling, everything_recall, match_counts
from .runner import write_json_file

RESULTS = Path("docs/results/everything_calibration.json")

VALIDATION_SEED = 3000


def validation_spec(n: int) -> str:
    """The data spec of the first ``n`` validation images."""
    return f"synth:{n}:{VALIDATION_SEED}:rich"


#: Clicks per side of the grid the thresholds are chosen for (the generator's default).
GRID = 32

#: Logit levels (relative to the mask threshold) whose pixel counts are cached per mask.
LEVELS = (-2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0)

#: The settings tried: every combination (the offset only where the stability filter is on).
SWEEP = {
    "pred_iou_thresh": (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.88),
    "stability_score_thresh": (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95),
    "stability_score_offset": (0.25, 0.5, 1.0, 2.0),
    "box_nms_thresh": (0.5, 0.6, 0.7, 0.8),
}


@dataclass
class Candidates:
    """Every unfiltered grid mask of one image, in the generator's order (K masks, G objects).

    Attributes:
        boxes: K x 4 int64 inclusive XYXY boxes in image pixels.
        iou: K float32 predicted IoU.
        counts: K x len(LEVELS) int32: pixels whose full-size logit is above threshold + level.
        gt_iou: K x G float64: IoU of each mask (logit above the threshold) with each object.
    """

    boxes: torch.Tensor
    iou: torch.Tensor
    counts: torch.Tensor
    gt_iou: np.ndarray

    def stability(self, offset: float) -> torch.Tensor:
        """K float32 stability scores at ``offset`` (as :func:`leansam.everything.ops.stability_score`)."""
        inter, union = self.counts[:, LEVELS.index(offset)], self.counts[:, LEVELS.index(-offset)]
        return torch.where(
            union > 0, inter.float() / union.clamp(min=1).float(), torch.zeros_like(inter).float()
        )

    def passes(self, setting: dict[str, float]) -> torch.Tensor:
        """K bool: the masks that pass the generator's per-mask filters (predicted IoU above the
        threshold, stability at least the threshold), before the empty check and NMS."""
        keep = torch.ones(len(self.iou), dtype=torch.bool)
        if setting["pred_iou_thresh"] > 0.0:
            keep &= self.iou > setting["pred_iou_thresh"]
        if setting["stability_score_thresh"] > 0.0:
            keep &= self.stability(setting["stability_score_offset"]) >= setting["stability_score_thresh"]
        return keep

    def select(self, idx: torch.Tensor) -> Candidates:
        """The candidates ``idx`` (indices or a K bool mask), in that order."""
        idx_np = idx.numpy()
        return Candidates(self.boxes[idx], self.iou[idx], self.counts[idx], self.gt_iou[idx_np])

    @staticmethod
    def cat(parts: list[Candidates]) -> Candidates:
        """The candidates of ``parts`` one after the other."""
        return Candidates(
            torch.cat([p.boxes for p in parts]),
            torch.cat([p.iou for p in parts]),
            torch.cat([p.counts for p in parts]),
            np.concatenate([p.gt_iou for p in parts]),
        )

    def kept(self, setting: dict[str, float]) -> torch.Tensor:
        """Indices of the masks the generator keeps with ``setting`` (thresholds by option name)."""
        keep = self.passes(setting) & (self.counts[:, LEVELS.index(0.0)] > 0)
        idx = keep.nonzero().flatten()
        if len(idx) == 0:
            return idx
        return idx[ops.nms(self.boxes[idx].float(), self.iou[idx], setting["box_nms_thresh"])]


@torch.no_grad()
def collect(
    model,
    image: np.ndarray,
    gt_masks: np.ndarray,
    points_per_side: int = 32,
    batch: int = 64,
    features=None,
) -> Candidates:
    """The :class:`Candidates` of one image: its grid decoded as the generator decodes it.

    Args:
        model: a :class:`leansam.models.sam.Sam`.
        image: H x W x 3 uint8 RGB.
        gt_masks: G x H x W bool ground-truth objects.
        points_per_side: the grid is ``points_per_side`` squared clicks (pixels of the image).
        batch: clicks per decoder call.
        features: ``model.encode_image`` of the image when the caller has it (else encoded here).
    """
    h, w = image.shape[:2]
    if features is None:
        features = model.encode_image(model.preprocess(image))
    points = GridSampler.from_points_per_side(points_per_side).rounds((h, w), 0)[0].points
    return decode_points(model, features, points, gt_masks, (h, w), batch=batch)[0]


@torch.no_grad()
def decode_points(
    model,
    features,
    points: np.ndarray,
    gt_masks: np.ndarray,
    size: tuple[int, int],
    probe: np.ndarray | None = None,
    batch: int = 64,
) -> tuple[Candidates, torch.Tensor | None]:
    """Decodes single clicks (three masks each, no filter) as the generator does.

    Args:
        features: ``model.encode_image`` of the image.
        points: N x 2 float64 (x, y) clicks in pixels of the image (H, W = ``size``).
        gt_masks: G x H x W bool ground-truth objects.
        probe: P x 2 int64 (x, y) pixels; when given, each mask's full-size logit there is returned.

    Returns:
        (the 3N candidates, mask ``3i + j`` being click i's j-th; the 3N x P float32 logits at
        ``probe``, or None).
    """
    h, w = size
    dev = model.device
    gt = torch.from_numpy(np.asarray(gt_masks, bool)).reshape(len(gt_masks), -1).float()
    gt_area = gt.sum(1)
    parts: dict[str, list] = {"boxes": [], "iou": [], "counts": [], "gt_iou": [], "probe": []}
    thr = model.mask_threshold
    for s in range(0, len(points), batch):
        pts = torch.as_tensor(points[s : s + batch], dtype=torch.float64).float().to(dev)
        labels = torch.ones(len(pts), 1, dtype=torch.int64, device=dev)
        prompts = model.prepare_prompts(pts[:, None, :], labels, None, (h, w))
        low, iou, _ = model.decode_confident(features, prompts, True, 0.0)
        for c in range(0, len(low), 32):  # the generator's mask chunk
            logits = model.postprocess_masks(low[c : c + 32, None], (h, w))[:, 0]
            counts = [(logits > thr + lv).sum(dim=(-1, -2), dtype=torch.int32) for lv in LEVELS]
            if probe is not None:
                parts["probe"].append(logits[:, probe[:, 1], probe[:, 0]].float().cpu())
            masks = logits > thr
            del logits
            parts["boxes"].append(ops.masks_to_boxes(masks).cpu())
            parts["counts"].append(torch.stack(counts, 1).cpu())
            flat = masks.reshape(len(masks), -1).cpu().float()
            inter = flat @ gt.T
            union = flat.sum(1)[:, None] + gt_area[None, :] - inter
            parts["gt_iou"].append((inter.double() / union.double().clamp(min=1)).numpy())
        parts["iou"].append(iou.float().cpu())
    cands = Candidates(
        torch.cat(parts["boxes"]),
        torch.cat(parts["iou"]),
        torch.cat(parts["counts"]),
        np.concatenate(parts["gt_iou"]) if parts["gt_iou"] else np.zeros((0, len(gt_masks))),
    )
    return cands, (torch.cat(parts["probe"]) if probe is not None else None)


def score(cands: list[Candidates], setting: dict[str, float]) -> dict:
    """Recall (objects found at IoU >= 0.5 / objects), precision (one-to-one matches / masks) and
    masks per image of ``setting`` replayed on the cached candidates of every image."""
    found = matched = masks = objects = 0
    for c in cands:
        kept = c.kept(setting).numpy()
        f, m = match_counts(c.gt_iou[kept])
        found, matched, masks, objects = (
            found + f,
            matched + m,
            masks + len(kept),
            objects + c.gt_iou.shape[1],
        )
    return {
        "recall": found / max(objects, 1),
        "precision": matched / max(masks, 1),
        "masks_per_image": masks / max(len(cands), 1),
    }


def settings() -> list[dict[str, float]]:
    """Every setting of :data:`SWEEP` (with the stability filter off, only offset 1.0)."""
    out = []
    for iou, stab, offset, nms in itertools.product(*SWEEP.values()):
        if stab == 0.0 and offset != SAM_DEFAULTS["stability_score_offset"]:
            continue
        out.append(
            {
                "pred_iou_thresh": iou,
                "stability_score_thresh": stab,
                "stability_score_offset": offset,
                "box_nms_thresh": nms,
            }
        )
    return out


def choose(rows: list[dict], min_precision: float) -> dict:
    """The row of highest recall among those with precision >= ``min_precision`` (ties: higher
    precision, then the earlier row); ValueError when no row qualifies."""
    ok = [r for r in rows if r["precision"] >= min_precision]
    if not ok:
        raise ValueError(f"no setting reaches precision {min_precision}")
    return max(ok, key=lambda r: (r["recall"], r["precision"]))


def pareto(rows: list[dict]) -> list[dict]:
    """The rows no other row beats in both recall and precision, by increasing recall."""
    front, best = [], -1.0
    for r in sorted(rows, key=lambda r: (-r["recall"], -r["precision"])):
        if r["precision"] > best:
            front.append(r)
            best = r["precision"]
    return front[::-1]


def pool_ceiling(cands: list[Candidates]) -> float:
    """Share of objects that SOME unfiltered grid mask overlaps at IoU >= 0.5 (no threshold or
    NMS setting can find more with this grid)."""
    found = sum(int((c.gt_iou.max(axis=0) >= 0.5).sum()) for c in cands if len(c.gt_iou))
    return found / max(sum(c.gt_iou.shape[1] for c in cands), 1)


def _thresholds(row: dict) -> dict[str, float]:
    return {k: row[k] for k in SAM_DEFAULTS}


#: Other generator options tried with the chosen thresholds (real generator runs, not replays).
LEVERS = {
    "none": {},
    "points_per_side 16": {"points_per_side": 16},
    "points_per_side 48": {"points_per_side": 48},
    "min_mask_region_area 50": {"min_mask_region_area": 50},
    "crop_n_layers 1": {"crop_n_layers": 1},
}


def levers(model, source, n_images: int, thresholds: dict[str, float]) -> dict[str, dict]:
    """:func:`everything_recall` on the first ``n_images`` of ``source`` with ``thresholds`` and
    each change of :data:`LEVERS`."""
    return {
        name: everything_recall(model, source, n_images, **thresholds, **extra)
        for name, extra in LEVERS.items()
    }


def calibrate(
    model_name: str = "leansam_tiny", n_images: int = 20, min_precision: float = 0.5, n_levers: int = 5
) -> dict:
    """Runs the search (module docstring) for the bundled / official weights of ``model_name``.

    Returns the results dict that :func:`calibrate_stage` writes: the validation split, the chosen
    setting, SAM's defaults and the chosen ones replayed and checked with the real generator,
    the recall/precision Pareto front, and the ceilings (unfiltered grid masks, one centre click).
    """
    import leansam

    model = leansam.build_model(model_name).eval()
    source = open_source(validation_spec(n_images))
    cands = [collect(model, s.image, s.masks, GRID) for s in source if len(s.masks)]
    rows = [{**st, **score(cands, st)} for st in settings()]
    chosen = choose(rows, min_precision)
    return {
        "command": f"python -m leansam.train.recipe calibrate-everything --model {model_name} "
        f"--images {n_images} --min-precision {min_precision} --lever-images {n_levers}",
        "model": model_name,
        "validation": {
            "spec": validation_spec(n_images),
            "n_objects": sum(c.gt_iou.shape[1] for c in cands),
        },
        "rule": f"max recall at IoU >= 0.5 subject to precision >= {min_precision}",
        "points_per_side": GRID,
        "chosen": _thresholds(chosen),
        "replay": {
            "sam_defaults": score(cands, SAM_DEFAULTS),
            "chosen": {k: chosen[k] for k in ("recall", "precision", "masks_per_image")},
        },
        "generator": {
            "sam_defaults": everything_recall(model, source, **SAM_DEFAULTS),
            "chosen": everything_recall(model, source, **_thresholds(chosen)),
        },
        "levers": {"images": n_levers, **levers(model, source, n_levers, _thresholds(chosen))},
        "pareto": pareto(rows),
        "n_settings": len(rows),
        "ceiling": {
            "grid_masks_unfiltered": pool_ceiling(cands),
            "centre_click": click_ceiling(model, source),
        },
    }


def example_scores(model, image: np.ndarray, objects: np.ndarray, **options) -> dict:
    """Segment-everything on one image with known objects (N x H x W bool):
    {"masks", "objects", "found"} (found: objects some mask reaches IoU >= 0.5 with)."""
    from ..everything import AutomaticMaskGenerator

    records = AutomaticMaskGenerator(model, **options).generate(image)
    found = 0
    if records:
        pred = torch.from_numpy(np.stack([r["segmentation"] for r in records])).flatten(1).float()
        gt = torch.from_numpy(objects).flatten(1).float()
        inter = pred @ gt.T
        union = pred.sum(1)[:, None] + gt.sum(1)[None, :] - inter
        found = match_counts((inter / union.clamp(min=1)).double().numpy())[0]
    return {"masks": len(records), "objects": len(objects), "found": found}


def everything_section(model, source, n_images: int, example: np.ndarray, example_gt: np.ndarray) -> dict:
    """Segment-everything results of the recipe's ``eval`` stage on the first ``n_images`` of
    ``source`` (the held-out set): recall and precision with the model's defaults and with SAM's,
    the two ceilings, and the bundled example (``example`` with its objects ``example_gt``)."""
    first = [source[i] for i in range(min(n_images, len(source)))]
    cands = [collect(model, s.image, s.masks) for s in first if len(s.masks)]
    return {
        "held_out": {"images": n_images, **everything_recall(model, source, n_images)},
        "held_out_sam_defaults": {
            "images": n_images,
            **everything_recall(model, source, n_images, **SAM_DEFAULTS),
        },
        "ceiling": {
            "grid_masks_unfiltered": pool_ceiling(cands),
            "centre_click": click_ceiling(model, source, n_images),
        },
        "example": example_scores(model, example, example_gt),
        "example_sam_defaults": example_scores(model, example, example_gt, **SAM_DEFAULTS),
    }


def add_calibrate_args(p) -> None:
    """The ``calibrate-everything`` options of ``python -m leansam.train.recipe``."""
    p.add_argument("--model", default="leansam_tiny", help="calibrate-everything: registry name")
    p.add_argument("--images", type=int, default=20, help="calibrate-everything: validation images")
    p.add_argument("--min-precision", type=float, default=0.5, help="calibrate-everything: precision floor")
    p.add_argument(
        "--lever-images", type=int, default=5, help="calibrate-everything: images for the other options"
    )
    p.add_argument("--out", default=str(RESULTS), help="calibrate-everything: results JSON")
    p.add_argument(
        "--hier-images", type=int, default=40, help="calibrate-everything: validation images, hierarchical"
    )
    p.add_argument(
        "--max-loss", type=float, default=1.0, help="calibrate-everything: hierarchical recall loss (points)"
    )
    p.add_argument(
        "--only-hierarchical",
        action="store_true",
        help="calibrate-everything: re-run only the hierarchical part (the grid thresholds from --out)",
    )


def _hierarchical_part(model_name: str, chosen: dict[str, float], n_images: int, max_loss: float) -> dict:
    """:func:`~leansam.train.calibrate_hier.calibrate_hierarchical` on the first ``n_images``
    validation images with the grid thresholds ``chosen``, checked with the real generator."""
    import leansam

    from .calibrate_hier import calibrate_hierarchical

    model = leansam.build_model(model_name).eval()
    source = open_source(validation_spec(n_images))
    res = calibrate_hierarchical(model, source, chosen, max_loss)
    real = everything_recall(
        model, source, strategy="hierarchical", high_score_thresh=res["chosen"], **chosen
    )
    return {
        "command": f"python -m leansam.train.recipe calibrate-everything --model {model_name} "
        f"--only-hierarchical --hier-images {n_images} --max-loss {max_loss}",
        "validation": validation_spec(n_images),
        **res,
        "generator": {k: real[k] for k in ("recall", "precision", "masks_per_image")},
    }


def calibrate_stage(args) -> dict:
    """Runs :func:`calibrate` with the command line's options and writes its results file; with
    ``--only-hierarchical``, only the hierarchical part, into the existing file."""
    if args.only_hierarchical:
        res = json.loads(Path(args.out).read_text(encoding="utf-8"))
        if res["model"] != args.model:
            raise ValueError(f"{args.out} holds the calibration of {res['model']}, not of {args.model}")
    else:
        res = calibrate(args.model, args.images, args.min_precision, args.lever_images)
        if Path(args.out) != RESULTS:
            res["command"] += f" --out {args.out}"
    res["hierarchical"] = _hierarchical_part(args.model, res["chosen"], args.hier_images, args.max_loss)
    if Path(args.out) != RESULTS:
        res["hierarchical"]["command"] += f" --out {args.out}"
    write_json_file(args.out, res)
    return {k: res[k] for k in ("chosen", "replay", "generator", "ceiling")} | {
        "high_score_thresh": res["hierarchical"]["chosen"]
    }
