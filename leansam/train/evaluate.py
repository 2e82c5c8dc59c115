"""Held-out evaluation of trained models on in-memory sources, through :mod:`leansam.eval`.

Protocol of :func:`evaluate_gt`, per instance of every image of the source (a sequence of
:class:`leansam.train.data.Sample`):

* box: the tight GT box (``leansam.eval`` prompt kind ``tight-box``), single-mask output;
* click: one foreground click at the mask pixel farthest from its boundary (kind ``center``),
  multimask output, the candidate with the highest predicted IoU is kept (no oracle);
* fill-the-box baseline: the tight GT box itself, filled, as the predicted mask;
* background click: per image, one click at the background pixel farthest from every object
  (the background: the pixels outside every instance), multimask output, the candidate with
  the highest predicted IoU, scored against the whole background.

IoU is computed at the original image resolution by :class:`leansam.eval.MaskIoUEvaluator`;
mIoU is the mean over instances. :func:`everything_recall` scores segment-everything: the share
of ground-truth objects that some generated mask overlaps with IoU >= 0.5.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..eval import MaskIoUEvaluator, make_prompts, mask_iou
from ..eval.gt_prompts import tight_box
from ..eval.predict import predict_instances
from ..models.sam import Sam
from ..predictor import SamPredictor

#: The generator options that :func:`everything_recall` reports (resolved).
THRESHOLDS = ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset", "box_nms_thresh")

#: Prompt kinds of :func:`evaluate_gt`: result name -> ``leansam.eval`` prompt kind.
PROMPTS = {"box": "tight-box", "point": "center"}

#: Upper edges of :func:`evaluate_gt`'s ``per_fill`` buckets: an instance's share of its tight box
#: (its fill-the-box IoU). Low fill means thin, concave or occluded objects, whose box says little.
FILL_EDGES = (0.2, 0.4, 0.6, 1.0)


def _samples(source: Sequence, max_images: int | None):
    n = len(source) if max_images is None else min(max_images, len(source))
    for i in range(n):
        s = source[i]
        if len(s.masks):
            yield i, s


def filled_boxes(masks: np.ndarray) -> np.ndarray:
    """N x H x W bool -> N x H x W bool: each mask's tight box, filled (the fill-the-box baseline)."""
    out = np.zeros_like(masks, dtype=bool)
    for k, m in enumerate(masks):
        x0, y0, x1, y1 = tight_box(m).astype(int)
        out[k, y0:y1, x0:x1] = True
    return out


def _inputs(i: int, s) -> dict:
    n = len(s.masks)
    return {
        "image_id": i,
        "gt_masks": s.masks,
        "ann_ids": list(range(n)),
        "category_ids": s.category_ids or [0] * n,
    }


def _grouped(evaluators: dict[str, MaskIoUEvaluator], group: Callable[[int, int, dict], Any]) -> dict:
    """mIoU per prompt kind within each group (sorted) that ``group(image_id, k, row)`` puts instance k in."""
    per: dict[Any, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for kind, ev in evaluators.items():
        for image_id in ev.image_ids:
            for k, r in enumerate(ev.image_rows(image_id)):
                per[group(image_id, k, r)][kind].append(r["iou"])
    return {
        g: {**{f"{k}_miou": float(np.mean(v)) for k, v in d.items()}, "n": len(d["box"])}
        for g, d in sorted(per.items())
    }


def _fill_bucket(fill: float) -> str:
    k = min(int(np.searchsorted(FILL_EDGES, fill, side="right")), len(FILL_EDGES) - 1)
    return f"{FILL_EDGES[k - 1] if k else 0.0:.1f}-{FILL_EDGES[k]:.1f}"


@torch.no_grad()
def evaluate_gt(model: Sam, source: Sequence, max_images: int | None = None) -> dict:
    """mIoU against ground truth with the tight GT box and with the centre click (module docstring).

    Returns {"box_miou", "point_miou", "fill_box_miou", "background_miou", "n_backgrounds",
    "n_instances", "n_images",
    "per_category": {category id: {"box_miou", "point_miou", "fill_box_miou", "n"}},
    "per_fill": {"0.0-0.2" ...: the same per box-fill bucket}}; mIoU in [0, 1].
    """
    model.eval()
    predictor = SamPredictor(model)
    evaluators = {k: MaskIoUEvaluator(distributed=False) for k in (*PROMPTS, "fill_box")}
    background: list[float] = []
    for i, s in _samples(source, max_images):
        predictor.set_image(s.image)
        inputs = [_inputs(i, s)]
        for name, kind in PROMPTS.items():
            prompts = make_prompts(kind, s.masks, np.zeros((len(s.masks), 4), np.float32), image_id=i)
            masks, _ = predict_instances(predictor, prompts)
            evaluators[name].process(inputs, [{"masks": masks}])
        evaluators["fill_box"].process(inputs, [{"masks": filled_boxes(s.masks)}])
        background.extend(_background_click(predictor, s.masks, i))
    res = {name: ev.evaluate() for name, ev in evaluators.items()}
    fills = evaluators["fill_box"]
    return {
        **{f"{name}_miou": r["mIoU"] / 100 for name, r in res.items()},
        "background_miou": float(np.mean(background)) if background else None,
        "n_backgrounds": len(background),
        "n_instances": res["box"]["n"],
        "n_images": res["box"]["n_images"],
        "per_category": _grouped(evaluators, lambda i, k, r: r["category_id"]),
        # an instance's fill-the-box IoU is the share of its tight box that it covers
        "per_fill": _grouped(evaluators, lambda i, k, r: _fill_bucket(fills.image_rows(i)[k]["iou"])),
    }


def _background_click(predictor: SamPredictor, masks: np.ndarray, image_id: int) -> list[float]:
    """[IoU of the mask chosen for a centre click on the background with the background], or []
    when the objects (N x H x W bool) leave no background."""
    background = ~masks.any(axis=0)
    if not background.any():
        return []
    prompts = make_prompts("center", background[None], np.zeros((1, 4), np.float32), image_id=image_id)
    pred, _ = predict_instances(predictor, prompts)
    return [float(mask_iou(pred, background[None])[0])]


def match_counts(ious: np.ndarray, thresh: float = 0.5) -> tuple[int, int]:
    """(objects found, one-to-one matches) of K generated masks against G objects.

    ``ious`` K x G: IoU of every mask with every ground-truth object. An object is found when
    some mask reaches ``thresh`` with it (the recall of :func:`everything_recall`); the matches
    pair masks and objects one-to-one, greedily by decreasing IoU (so a duplicate mask of a
    found object is no match: precision = matches / K).
    """
    if ious.size == 0:
        return 0, 0
    found = int((ious.max(axis=0) >= thresh).sum())
    rows, cols = np.nonzero(ious >= thresh)
    order = np.argsort(-ious[rows, cols], kind="stable")
    used_m, used_g = set(), set()
    for r, c in zip(rows[order].tolist(), cols[order].tolist()):
        if r not in used_m and c not in used_g:
            used_m.add(r)
            used_g.add(c)
    return found, len(used_m)


@torch.no_grad()
def everything_recall(model: Sam, source: Sequence, max_images: int | None = None, **options) -> dict:
    """Segment-everything on each image (``AutomaticMaskGenerator(model, **options)``, the model's
    defaults otherwise): the share of ground-truth objects matched by a generated mask with
    IoU >= 0.5 (recall), and the share of generated masks matched one-to-one (precision, see
    :func:`match_counts`).

    Returns {"recall", "precision", "n_objects", "n_images", "masks_per_image", "options"}
    (``options``: the generator's resolved thresholds).
    """
    from ..everything import AutomaticMaskGenerator

    model.eval()
    gen = AutomaticMaskGenerator(model, **options)
    found = matched = total = n_masks = n_img = 0
    for _, s in _samples(source, max_images):
        records = gen.generate(s.image)
        n_img += 1
        n_masks += len(records)
        total += len(s.masks)
        if records:
            pred = np.stack([np.asarray(r["segmentation"], bool) for r in records])
            ious = np.stack([mask_iou(pred, np.broadcast_to(g, pred.shape)) for g in s.masks], axis=1)
            f, m = match_counts(ious)
            found, matched = found + f, matched + m
    o = gen.options
    return {
        "recall": found / max(total, 1),
        "precision": matched / max(n_masks, 1),
        "n_objects": total,
        "n_images": n_img,
        "masks_per_image": n_masks / max(n_img, 1),
        "options": {k: getattr(o, k) for k in THRESHOLDS},
    }


@torch.no_grad()
def click_ceiling(model: Sam, source: Sequence, max_images: int | None = None) -> dict:
    """How many objects ONE click can segment at all: per object, the centre click (as
    :func:`evaluate_gt`), multimask output; the share whose mask reaches IoU >= 0.5 with the
    candidate of highest predicted IoU (``best_predicted``) and with the best of the three
    candidates (``best_of_3``, an oracle).

    Returns {"best_predicted", "best_of_3", "n_objects"}.
    """
    model.eval()
    predictor = SamPredictor(model)
    hits = {"best_predicted": 0, "best_of_3": 0}
    total = 0
    for i, s in _samples(source, max_images):
        predictor.set_image(s.image)
        p = make_prompts("center", s.masks, np.zeros((len(s.masks), 4), np.float32), image_id=i)
        masks, iou, _ = predictor.predict_torch(
            torch.from_numpy(p.points).to(predictor.device),
            torch.from_numpy(p.labels).to(predictor.device),
            None,
            multimask_output=True,
            original_coords=True,
        )
        masks, gt = masks.cpu(), torch.from_numpy(s.masks)[:, None]
        inter = (masks & gt).flatten(2).sum(-1).double()
        union = (masks | gt).flatten(2).sum(-1).double().clamp(min=1)
        ious = (inter / union).numpy()  # N x 3
        pick = iou.float().argmax(dim=1).cpu().numpy()
        hits["best_predicted"] += int((ious[np.arange(len(ious)), pick] >= 0.5).sum())
        hits["best_of_3"] += int((ious.max(axis=1) >= 0.5).sum())
        total += len(s.masks)
    return {**{k: v / max(total, 1) for k, v in hits.items()}, "n_objects": total}


@torch.no_grad()
def agreement(student: Sam, teacher: Sam, source: Sequence, max_images: int | None = None) -> dict:
    """How closely the student follows the teacher on held-out images.

    Returns {"box_agree": mean IoU(student mask, teacher mask) with tight GT-box prompts,
    "point_agree": the same with centre clicks, "embed_mse": mean squared embedding difference}.
    """
    student.eval()
    teacher.eval()
    preds = SamPredictor(student), SamPredictor(teacher)
    res: dict[str, list[float]] = {"box": [], "point": []}
    mse = []
    for i, s in _samples(source, max_images):
        for p in preds:
            p.set_image(s.image)
        for name, kind in PROMPTS.items():
            prompts = make_prompts(kind, s.masks, np.zeros((len(s.masks), 4), np.float32), image_id=i)
            (a, _), (b, _) = (predict_instances(p, prompts) for p in preds)
            res[name] += mask_iou(a, b).tolist()
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
    """Median seconds of one image-encoder call on a random 1 x 3 x S x S input (S = encoder size).

    With one torch thread the work runs in the calling thread, so its CPU time (``thread_time``) is
    measured: waiting for a core on a shared machine is not the model's cost. Else wall time."""
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    model.eval()
    s = model.transform.encoder_size
    x = torch.randn(1, 3, s, s, device=model.device)
    for _ in range(warmup):
        model.image_encoder(x)
    times = []
    for _ in range(reps):
        t0 = clock()
        model.image_encoder(x)
        times.append(clock() - t0)
    return float(np.median(times))


@torch.no_grad()
def mask_resolution_limit(source: Sequence, sides: Sequence[int], max_images: int | None = None) -> dict:
    """The IoU that masks stored at a low-res side ``L`` can reach at all: every ground-truth mask
    is resized into the square padded encoder frame of side 4L, area-averaged to L x L (each cell's
    coverage), brought back by the model postprocess (:func:`leansam.transforms.postprocess_logits`)
    and thresholded at half coverage, then compared with itself at the original resolution. A model
    predicting low-res logits of side L scores about this when it is perfect.

    Returns {str(L): {"miou": mean over instances, "per_category": {category id: mIoU}}}.
    """
    from ..transforms import ImageTransform, longest_side_shape, postprocess_logits

    ious: dict[int, dict[int, list[float]]] = {int(L): defaultdict(list) for L in sides}
    for _, s in _samples(source, max_images):
        gt = torch.from_numpy(np.asarray(s.masks))
        h, w = gt.shape[-2:]
        for L in ious:
            t = ImageTransform(encoder_size=4 * L, prompt_frame=4 * L)
            hh, ww = longest_side_shape((h, w), 4 * L)
            frame = torch.nn.functional.interpolate(gt[None].float(), size=(hh, ww), mode="area")
            frame = torch.nn.functional.pad(frame, (0, 4 * L - ww, 0, 4 * L - hh))
            low = torch.nn.functional.avg_pool2d(frame, 4) - 0.5  # coverage, positive above one half
            back = postprocess_logits(low, t, (h, w))[0] > 0
            for cat, iou in zip(s.category_ids or [0] * len(gt), mask_iou(back.numpy(), s.masks)):
                ious[L][int(cat)].append(float(iou))
    return {
        str(L): {
            "miou": float(np.mean([v for vs in per.values() for v in vs])),
            "per_category": {c: float(np.mean(v)) for c, v in sorted(per.items())},
        }
        for L, per in ious.items()
    }
