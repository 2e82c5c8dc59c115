"""A model's confident-logit threshold for TinySAM's hierarchical segment-everything.

:class:`~leansam.everything.samplers.HierarchicalSampler` clicks a sparse grid first; the pixels
where a kept sparse mask's logit exceeds ``high_score_thresh`` are covered, and the dense clicks
that fall on covered pixels are skipped. TinySAM's 8.5 is a logit of SAM-H: a model whose logits
are smaller covers nothing with it (no prompt saved), and one threshold too low covers the
neighbours its masks leak into (objects lost). This module chooses the threshold per model on the
validation split (:func:`~leansam.train.calibrate.validation_spec`), with the model's grid
thresholds fixed.

**How.** Per image the sparse clicks and ALL dense candidates are decoded once with no filter
(:func:`~leansam.train.calibrate.decode_points`), with each sparse mask's logit at every dense
click's pixel; the grid's masks come from :func:`~leansam.train.calibrate.collect`. Each threshold
of :data:`THRESHOLDS` is then replayed on the cache: the sparse masks that pass the filters cover
the dense clicks where their logit is above it, the dense masks of uncovered clicks join the
sparse ones, and the generator's empty check and NMS run on the union. The chosen threshold is the
one with the fewest decoded prompts whose recall (objects found at IoU >= 0.5) is at most
``max_loss`` below the grid's; ties go to the higher threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..everything.samplers import HierarchicalSampler
from .calibrate import GRID, Candidates, collect, decode_points

#: Confident-logit thresholds tried (TinySAM's 8.5 last).
THRESHOLDS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.5)


@dataclass
class HierCandidates:
    """One image's cache: its grid masks, sparse and dense masks, and what covers what.

    Attributes:
        grid: the grid's unfiltered masks (3 per click).
        sparse: the sparse round's unfiltered masks (3 per click, S clicks).
        dense: the masks of every dense candidate (3 per click, D clicks).
        cover_logit: 3S x D float32: each sparse mask's full-size logit at each dense click's pixel.
    """

    grid: Candidates
    sparse: Candidates
    dense: Candidates
    cover_logit: torch.Tensor

    @property
    def n_objects(self) -> int:
        return self.grid.gt_iou.shape[1]

    def replay(self, setting: dict[str, float], high_score_thresh: float) -> tuple[Candidates, int]:
        """(the masks kept, prompts decoded) of hierarchical sampling at ``setting`` (the grid
        thresholds by option name) and ``high_score_thresh``."""
        covering = self.sparse.passes(setting)
        covered = (self.cover_logit[covering] > high_score_thresh).any(dim=0)  # D
        dense_kept = (~covered).repeat_interleave(3)  # 3 masks per dense click
        union = Candidates.cat([self.sparse, self.dense.select(dense_kept)])
        return union.select(union.kept(setting)), len(self.sparse.iou) // 3 + int((~covered).sum())


@torch.no_grad()
def collect_hier(
    model, image: np.ndarray, gt_masks: np.ndarray, points_per_side: int = GRID
) -> HierCandidates:
    """The :class:`HierCandidates` of one image (H x W x 3 uint8 RGB; G x H x W bool objects)."""
    h, w = image.shape[:2]
    sparse_round, dense_round = HierarchicalSampler(points_per_side).rounds((h, w), 0)
    dense_px = np.stack(dense_round.click_pixels((h, w)), axis=1)  # the generator's skip rule
    features = model.encode_image(model.preprocess(image))
    sparse, cover = decode_points(model, features, sparse_round.points, gt_masks, (h, w), probe=dense_px)
    dense, _ = decode_points(model, features, dense_round.points, gt_masks, (h, w))
    grid = collect(model, image, gt_masks, points_per_side, features=features)
    return HierCandidates(grid, sparse, dense, cover)


def _found(ious: np.ndarray) -> int:
    return int((ious.max(axis=0) >= 0.5).sum()) if ious.size else 0


def sweep(cands: list[HierCandidates], setting: dict[str, float]) -> dict:
    """The grid's totals and, per threshold of :data:`THRESHOLDS`, hierarchical sampling's
    (prompts, prompt cut, recall, recall loss in points against the grid) replayed on ``cands``."""
    objects = sum(c.n_objects for c in cands)
    grid_prompts = sum(len(c.grid.iou) // 3 for c in cands)
    grid_found = sum(_found(c.grid.gt_iou[c.grid.kept(setting).numpy()]) for c in cands)
    grid_recall = grid_found / max(objects, 1)
    rows = []
    for t in THRESHOLDS:
        found = prompts = 0
        for c in cands:
            kept, n = c.replay(setting, t)
            found, prompts = found + _found(kept.gt_iou), prompts + n
        recall = found / max(objects, 1)
        rows.append(
            {
                "high_score_thresh": t,
                "prompts": prompts,
                "prompt_cut": 1 - prompts / max(grid_prompts, 1),
                "recall": recall,
                "recall_loss_points": 100 * (grid_recall - recall),
            }
        )
    return {
        "objects": objects,
        "grid": {"prompts": grid_prompts, "recall": grid_recall},
        "thresholds": rows,
    }


def choose_threshold(rows: list[dict], max_loss: float) -> dict:
    """The row with the fewest prompts among those losing at most ``max_loss`` points of recall
    (ties: the higher threshold); the highest threshold's row when none qualifies."""
    ok = [r for r in rows if r["recall_loss_points"] <= max_loss]
    if not ok:
        return max(rows, key=lambda r: r["high_score_thresh"])
    return min(ok, key=lambda r: (r["prompts"], -r["high_score_thresh"]))


def calibrate_hierarchical(model, source, setting: dict[str, float], max_loss: float = 1.0) -> dict:
    """:func:`sweep` on every image of ``source`` (with objects) at the grid thresholds ``setting``
    (the four of :data:`~leansam.everything.options.SAM_DEFAULTS` by name), and the threshold that
    :func:`choose_threshold` picks (``chosen``)."""
    cands = [collect_hier(model, s.image, s.masks) for s in source if len(s.masks)]
    res = sweep(cands, setting)
    chosen = choose_threshold(res["thresholds"], max_loss)
    return {
        "rule": f"fewest decoded prompts with recall at most {max_loss} points below the grid's "
        "(validation split, the model's grid thresholds)",
        "images": len(cands),
        "setting": dict(setting),
        **res,
        "chosen": chosen["high_score_thresh"],
    }
