"""Replaying the official video predictor's recorded calls (``shared/parity/video``, see its README)."""

from __future__ import annotations

import functools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from leansam.video import VIDEO_CONFIGS, VideoModel, VideoPredictor, load_video_model
from tests import parity as P
from tests import tolerances as T

# Every recorded case; tests/video/test_parity.py checks that this is the fixture folder's content.
CASES = (
    "sam2.1_hiera_tiny/a_box_click",
    "sam2.1_hiera_tiny/b_stream18",
    "sam2.1_hiera_tiny/c_mask_empty",
    "sam2.1_hiera_tiny/d_correct_as_cond",
    "sam2.1_hiera_tiny/e_two_objects",
    "sam2.1_hiera_tiny/f_reverse",
    "efficienttam_ti/a_box_click",
    "efficienttam_ti/b_stream18",
    "efficienttam_ti_1/b_stream18",
)


#: The 3-frame clip (the ``clip`` fixture in tests/video/conftest.py, and :func:`clip_model`): the first
#: frames of CLIP_CASE, tracked by CLIP_MODEL with the stand-in weights of CLIP_WEIGHTS, which load
#: unchanged at 512 px (a quarter of the pixels of 1024 px). Tests that use the clip check tracking
#: through the CLI, streams, the feature cache, int8 and the gates, not the recorded outputs.
CLIP_CASE = "efficienttam_ti/a_box_click"
CLIP_WEIGHTS = "efficienttam_ti"
CLIP_MODEL = "efficienttam_ti_512x512"
CLIP_SIZE = VIDEO_CONFIGS[CLIP_MODEL].image_size


def load(case: str) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays of CASE.npz, its spec JSON)."""
    with np.load(P.parity_dir() / "video" / f"{case}.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(str(arrays["spec_json"]))


@functools.cache
def stand_in_model(name: str, manifest: str) -> VideoModel:
    """``name``'s tracking model loaded through the public loader from the stand-in checkpoint of ``manifest``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = P.write_stand_in_checkpoint(manifest, Path(tmp) / f"{name}.pt")
        return load_video_model(name, checkpoint=path)


def clip_model() -> VideoModel:
    """CLIP_MODEL with CLIP_WEIGHTS' stand-in weights (built once per process)."""
    return stand_in_model(CLIP_MODEL, CLIP_WEIGHTS)


def model_for(spec: dict) -> VideoModel:
    return stand_in_model(spec["model"], Path(spec["weights"]["manifest_dir"]).name)


@dataclass
class Output:
    """One returned result: call number, frame, object ids, logits n x H x W, the stored low-res logits
    n x 256 x 256, object scores and conditioning flags."""

    call: int
    step: int | None  # position in a propagate call's yields (None for a prompt call)
    frame_idx: int
    obj_ids: list
    logits: np.ndarray
    low_res: np.ndarray
    scores: np.ndarray
    is_cond: np.ndarray


def replay(pred: VideoPredictor, z: dict[str, np.ndarray], spec: dict) -> list[Output]:
    """Makes the case's calls on ``pred`` (README "Replaying a case") and collects every result."""
    state = pred.init_state(z["frames"])
    outs: list[Output] = []

    def record(i: int, step: int | None, frame_idx: int, obj_ids: list, logits: torch.Tensor) -> None:
        stored = [state.stored_output(frame_idx, o) for o in obj_ids]
        scores = np.array([s.score.item() for s in stored], dtype=np.float32)
        cond = np.array([frame_idx in state.tracks[state.obj_ids.index(o)].cond for o in obj_ids])
        low = np.stack([s.pred_masks[0, 0].float().cpu().numpy() for s in stored])
        video = logits[:, 0].float().cpu().numpy()
        outs.append(Output(i, step, frame_idx, list(obj_ids), video, low, scores, cond))

    for i, c in enumerate(spec["calls"][1:], start=1):
        p = f"c{i}_"
        if c["op"] == "add_new_points_or_box":
            kw: dict = {"clear_old_points": c["clear_old_points"]}
            if p + "points" in z:
                kw.update(points=z[p + "points"], labels=z[p + "labels"])
            if p + "box" in z:
                kw["box"] = z[p + "box"]
            record(i, None, *pred.add_new_points_or_box(state, c["frame_idx"], c["obj_id"], **kw))
        elif c["op"] == "add_new_mask":
            record(i, None, *pred.add_new_mask(state, c["frame_idx"], c["obj_id"], z[p + "mask"]))
        else:
            calls = pred.propagate_in_video(
                state, c["start_frame_idx"], c["max_frame_num_to_track"], reverse=c["reverse"]
            )
            for k, (frame_idx, obj_ids, logits) in enumerate(calls):
                record(i, k, frame_idx, obj_ids, logits)
    return outs


def unpack_masks(z: dict[str, np.ndarray], key: str) -> np.ndarray:
    shape = z[key + "_shape"]
    return np.unpackbits(z[key])[: int(np.prod(shape))].reshape(shape).astype(bool)


def reference(o: Output, z: dict[str, np.ndarray], masks: dict[int, np.ndarray]) -> tuple | None:
    """The official run's (video logits, scores, low-res logits, frame, masks, cond flags or None) for
    output ``o``; None past the official frames. ``masks`` caches the unpacked masks per call."""
    p = f"c{o.call}_"
    if o.step is None:
        return (
            z[p + "video_logits"],
            z[p + "object_score_logits"],
            z[p + "low_res_logits"],
            int(z[p + "out_frame_idx"]),
            unpack_masks(z, p + "video_masks"),
            None,
        )
    if o.call not in masks:
        masks[o.call] = unpack_masks(z, p + "video_masks")
    frames = z[p + "frames"]
    if o.step >= len(frames):
        return None
    return (
        z[p + "video_logits"][o.step],
        z[p + "object_score_logits"][o.step],
        z[p + "low_res_logits"][o.step],
        int(frames[o.step]),
        masks[o.call][o.step],
        z[p + "is_cond"][o.step],
    )


def differences(a: list[Output], b: list[Output]) -> dict:
    """Two replays of one case compared output by output: whether they made the same calls on the same
    frames and objects, and the largest logit, mask-pixel-fraction and object-score differences."""
    pairs = list(zip(a, b))
    return {
        "outputs": len(pairs),
        "same_calls": len(a) == len(b)
        and all(
            (x.call, x.step, x.frame_idx, x.obj_ids) == (y.call, y.step, y.frame_idx, y.obj_ids)
            for x, y in pairs
        ),
        "max_logit_diff": max(float(np.abs(x.logits - y.logits).max()) for x, y in pairs),
        "max_pixels_differ": max(float(((x.logits > 0) != (y.logits > 0)).mean()) for x, y in pairs),
        "max_score_diff": max(float(np.abs(x.scores - y.scores).max()) for x, y in pairs),
    }


def mask_agreement(outs: list[Output], z: dict[str, np.ndarray]) -> list[dict]:
    """Per output and object: IoU of the returned mask (logits > 0) with the official one, the
    fraction of pixels that differ, and |object score - official| (outputs past the official run
    are skipped)."""
    rows, masks = [], {}
    for o in outs:
        r = reference(o, z, masks)
        if r is None:
            continue
        mine, ref = o.logits > 0, r[4]
        for i in range(len(o.obj_ids)):
            union = (mine[i] | ref[i]).sum()
            iou = float((mine[i] & ref[i]).sum() / union) if union else 1.0
            flipped = float((mine[i] != ref[i]).mean())
            score = float(abs(o.scores[i] - r[1].reshape(-1)[i]))
            rows.append({"frame": o.frame_idx, "iou": iou, "pixels_differ": flipped, "score_diff": score})
    return rows


def mismatches(outs: list[Output], z: dict[str, np.ndarray]) -> list[str]:
    """Every violation of the README's tolerances (empty when the replay matches the official run).

    The logit tolerance is not applied at video pixels fed by a hole-filling decision that a near-zero
    pixel flipped (:func:`hole_decisions`); masks are compared there too.
    """
    bad: list[str] = []
    masks: dict[int, np.ndarray] = {}
    pivots = 0.0
    for o in outs:
        p = f"c{o.call}_"
        r = reference(o, z, masks)
        if r is None:
            bad.append(f"call {o.call}: yielded more than the {len(z[p + 'frames'])} official frames")
            continue
        ref, ref_scores, ref_low, ref_frame, ref_masks, ref_cond = r
        where = f"call {o.call} frame {o.frame_idx}"
        if o.frame_idx != ref_frame or o.obj_ids != z[p + "obj_ids"].tolist():
            bad.append(
                f"{where}: frame/objects {o.frame_idx} {o.obj_ids}, official {ref_frame} {z[p + 'obj_ids']}"
            )
            continue
        ref = ref.astype(np.float32)
        excess = np.abs(o.logits - ref) - (5e-3 + 1e-3 * np.abs(ref))
        waived, pivot = hole_decisions(o.low_res, ref_low.astype(np.float32))
        pivots = max(pivots, pivot)
        excess[video_footprint(waived, ref.shape[-2:])] = 0
        if excess.max() > 0:
            bad.append(f"{where}: logits off by up to {np.abs(o.logits - ref).max():.3g}")
        flipped = ((o.logits > 0) != ref_masks).reshape(len(o.obj_ids), -1).mean(axis=1)
        if flipped.max() > 1e-3:
            bad.append(f"{where}: {flipped.max():.2%} of mask pixels differ")
        if np.abs(o.scores - ref_scores).max() > 1e-3:
            bad.append(f"{where}: object scores {o.scores}, official {ref_scores}")
        if ref_cond is not None and not np.array_equal(o.is_cond, ref_cond):
            bad.append(f"{where}: conditioning flags {o.is_cond}, official {ref_cond}")
    # The waiver above holds only for pivots as close to 0 as measured (tests/tolerances.py margin).
    T.check(PIVOT_KEY, pivots, T.float_floor(np.zeros(1)))
    return bad


#: Logit of a filled hole (the official ``fill_holes_in_mask_scores``), as the fixtures store it (float16).
_FILL = np.float16(0.1)
#: Measured key (tests/tolerances.py): the largest |low-res logit| at a pixel whose sign, flipped by float
#: rounding between leansam and the official run, decided a hole-filling differently.
PIVOT_KEY = "fixture/video/hole_fill_pivot"


def hole_decisions(mine_low: np.ndarray, ref_low: np.ndarray) -> tuple[np.ndarray, float]:
    """Low-res pixels (n x 256 x 256) where the two runs took a hole-filling decision differently
    because of one near-zero pixel, and the largest |logit| of such a pivot pixel.

    Hole filling is discontinuous: a background component of at most 8 pixels becomes 0.1, so one
    pixel at +3e-5 on one side and -3e-5 on the other (a float-rounding difference) can fill a pixel
    or a whole component on one side only. Pivot: a pixel above 0 and unfilled on one side, at or below
    0 (or filled) on the other. Decided differently: filled on one side, at or below 0 and unfilled on
    the other. Returned: the 8-connected groups of pivots and differently decided pixels that contain
    a pivot and involve a filled pixel; the pivot size is the largest |unfilled logit| at their pivots.
    """
    import cv2

    # Filled: 0.1 after float16 rounding on both sides (a logit that close to 0.1 is taken as filled).
    ref_f = ref_low.astype(np.float16) == _FILL
    mine_f = mine_low.astype(np.float16) == _FILL
    # Filled on one side and close to 0.1 on the other is no flip (the other logit is simply ~0.1).
    far = np.abs(mine_low - ref_low) > 5e-3
    pivot = ((mine_low > 0) & ~mine_f & (((ref_low <= 0) & ~ref_f) | (ref_f & far))) | (
        (ref_low > 0) & ~ref_f & (((mine_low <= 0) & ~mine_f) | (mine_f & far))
    )
    decided = (mine_f & ~ref_f & (ref_low <= 0)) | (ref_f & ~mine_f & (mine_low <= 0))
    waived = np.zeros(mine_low.shape, dtype=bool)
    size = 0.0
    for i in range(mine_low.shape[0]):
        n, labels = cv2.connectedComponents((pivot[i] | decided[i]).astype(np.uint8), connectivity=8)
        for label in range(1, n):
            group = labels == label
            piv = group & pivot[i]
            if not piv.any() or not (group & (ref_f[i] | mine_f[i])).any():
                continue
            waived[i] |= group
            values = np.concatenate([mine_low[i][piv & ~mine_f[i]], ref_low[i][piv & ~ref_f[i]]])
            size = max(size, float(np.abs(values).max()))
    return waived, size


def video_footprint(low: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Video pixels (n x H x W) whose bilinear resize (align_corners=False) reads a marked low-res pixel."""
    s = low.shape[-1]
    h, w = size
    r0 = np.clip(np.floor((np.arange(h) + 0.5) * s / h - 0.5), 0, s - 1).astype(int)
    c0 = np.clip(np.floor((np.arange(w) + 0.5) * s / w - 0.5), 0, s - 1).astype(int)
    r1, c1 = np.minimum(r0 + 1, s - 1), np.minimum(c0 + 1, s - 1)
    return low[:, r0][:, :, c0] | low[:, r0][:, :, c1] | low[:, r1][:, :, c0] | low[:, r1][:, :, c1]


def propagated_frames(z: dict[str, np.ndarray], spec: dict) -> int:
    return sum(len(z[f"c{i}_frames"]) for i, c in enumerate(spec["calls"]) if c["op"] == "propagate_in_video")
