"""Independent references for the segment-everything tests (built on the official code)."""

from __future__ import annotations

import numpy as np
import torch

from tests import oracles


def tinysam_dense_points(sparse_norm, size, pps, covered):
    """TinySAM's loop, transcribed literally from hierarchical_generate (x = sy offsets, y = sx)."""
    ih, iw = size
    hstride, wstride = ih // pps, iw // pps
    out = []
    for gx, gy in sparse_norm:
        px, py = gx * iw, gy * ih
        for sy in (-1, 0, 1):
            for sx in (-1, 0, 1):
                if (sy == 0 and sx == 0) or covered[int(px + wstride * sy), int(py + hstride * sx)]:
                    continue
                out.append([px + wstride * sy, py + hstride * sx])
        if px + wstride * 2 < iw:
            for sx in (-1, 0, 1):
                if not covered[int(px + wstride * 2), int(py + hstride * sx)]:
                    out.append([px + wstride * 2, py + hstride * sx])
        if py + hstride * 2 < ih:
            for sy in (-1, 0, 1):
                if not covered[int(px + wstride * sy), int(py + hstride * 2)]:
                    out.append([px + wstride * sy, py + hstride * 2])
        if (
            px + wstride * 2 < iw
            and py + hstride * 2 < ih
            and not covered[int(px + wstride * 2), int(py + hstride * 2)]
        ):
            out.append([px + wstride * 2, py + hstride * 2])
    return np.array(out).reshape(-1, 2)


def official_hierarchical(model, image, pps, high, **opts):
    """TinySAM's rule on top of the official predictor, then the official generator on the
    sparse + uncovered dense points (the same filters and one NMS over both rounds).

    Returns (official records, number of dense points clicked, number of sparse points).
    """
    sa = oracles.segment_anything()
    from segment_anything.utils import amg

    gen = sa.SamAutomaticMaskGenerator(model, points_per_side=pps // 4, **opts)
    pred = gen.predictor
    pred.set_image(image)
    ih, iw = image.shape[:2]
    sparse_norm = amg.build_point_grid(pps // 4)
    pts = sparse_norm * np.array([iw, ih])
    coords = torch.as_tensor(pred.transform.apply_coords(pts, (ih, iw)))[:, None]
    with torch.no_grad():
        logits, iou, _ = pred.predict_torch(
            coords, torch.ones(len(pts), 1, dtype=torch.int), return_logits=True
        )
    logits, iou = logits.flatten(0, 1), iou.flatten(0, 1)
    with torch.no_grad():
        if gen.pred_iou_thresh > 0:
            logits = logits[iou > gen.pred_iou_thresh]
        if gen.stability_score_thresh > 0:
            stab = amg.calculate_stability_score(logits, 0.0, gen.stability_score_offset)
            logits = logits[stab >= gen.stability_score_thresh]
        high_masks = logits > high
    covered = high_masks.any(0).T.numpy()  # indexed [x, y] as TinySAM
    dense = tinysam_dense_points(sparse_norm, (ih, iw), pps, covered)
    grid = np.concatenate([sparse_norm, dense / np.array([iw, ih])])
    ref = sa.SamAutomaticMaskGenerator(model, points_per_side=None, point_grids=[grid], **opts).generate(
        image
    )
    return ref, len(dense), len(sparse_norm)
