"""Parity tolerances set from measured differences.

Every parity check has a key (``fixture/mobile_sam/box/low_res_logits``,
``live/sam_vit_b/points/single/masks``, ...) and compares one number, the observed difference,
with the threshold stored for that key in ``tests/parity_tolerances.json``. That file is written
by ``scripts/parity_tolerances.py``, which runs the parity tests with
``LEANSAM_RECORD_TOLERANCES=<file>`` set (the tests then record their observed differences
instead of asserting) and sets each threshold to ``MARGIN x max(observed, floor)``. The floor is
the smallest difference the metric can resolve (one float32 ulp at the reference's largest
magnitude, one mask pixel), so an exact match still gets a threshold above zero.

Metrics (all "worst case over the compared array"):

* ``fixture`` float arrays (stored fp16): max(|mine - ref| - half an fp16 ulp of ref, 0), a lower
  bound on the distance to the official fp32 value (fp16 rounding moved it at most half an ulp);
* ``live`` float arrays (official code run in fp32 here): max |mine - ref|;
* IoU predictions (fp32 in both): max |mine - ref|;
* masks: the largest fraction of differing pixels over the masks.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import torch

#: Threshold = MARGIN x the worst difference measured on the reference machine.
MARGIN = 20.0
TABLE = Path(__file__).resolve().with_name("parity_tolerances.json")
RECORD_ENV = "LEANSAM_RECORD_TOLERANCES"


@functools.cache
def _table() -> dict[str, dict[str, float]]:
    return json.loads(TABLE.read_text())["checks"] if TABLE.is_file() else {}


def check(key: str, observed: float, floor: float) -> None:
    """Asserts ``observed <= threshold[key]`` (or records ``observed`` when measuring)."""
    record = os.environ.get(RECORD_ENV)
    if record:
        with open(record, "a") as f:
            f.write(json.dumps({"key": key, "observed": float(observed), "floor": float(floor)}) + "\n")
        return
    entry = _table().get(key)
    assert entry is not None, f"no measured tolerance for {key}: run scripts/parity_tolerances.py"
    assert observed <= entry["threshold"], (
        f"{key}: difference {observed:.3e} > threshold {entry['threshold']:.3e} "
        f"({entry['margin']:g} x the measured {max(entry['observed'], entry['floor']):.3e})"
    )


def _f32(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def float_floor(ref: np.ndarray) -> float:
    """One float32 ulp at the reference's largest magnitude (at least at 1.0)."""
    return float(np.spacing(np.float32(max(1.0, float(np.abs(_f32(ref)).max())))))


def check_floats(key: str, mine: torch.Tensor | np.ndarray, ref: np.ndarray) -> float:
    """Float arrays; an fp16 ``ref`` (a stored fixture) is credited half an fp16 ulp per element."""
    a, b = _f32(mine), _f32(ref)
    assert a.shape == b.shape, f"{key}: shape {a.shape} != {b.shape}"
    diff = np.abs(a - b)
    if np.asarray(ref).dtype == np.float16:
        half_ulp = np.spacing(np.abs(np.asarray(ref, dtype=np.float16))).astype(np.float32) / 2
        diff = np.maximum(diff - half_ulp, 0.0)
    observed = float(diff.max())
    check(key, observed, float_floor(b))
    return observed


def check_masks(key: str, mine: np.ndarray, ref: np.ndarray) -> float:
    """Bool masks ... x H x W: the largest fraction of differing pixels over the masks."""
    mine, ref = np.asarray(mine), np.asarray(ref)
    assert mine.shape == ref.shape and mine.dtype == ref.dtype == bool, (key, mine.shape, ref.shape)
    h, w = ref.shape[-2:]
    observed = float((mine != ref).reshape(-1, h, w).mean(axis=(1, 2)).max())
    check(key, observed, 1.0 / (h * w))
    return observed


def check_prediction(prefix: str, mine: tuple, ref: tuple) -> None:
    """``SamPredictor.predict`` outputs (masks, iou, low-res logits) against a reference triple."""
    check_floats(f"{prefix}/low_res_logits", mine[2], ref[2])
    check_floats(f"{prefix}/iou", mine[1], ref[1])
    check_masks(f"{prefix}/masks", mine[0], ref[0])
