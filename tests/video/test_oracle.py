"""Live comparison with the installed official ``SAM2VideoPredictor`` (PyPI sam2 1.1.0) on a new clip.

Both predictors read the same folder of JPEG frames (the official loader's input), get the same calls
(two objects: a box, two clicks, a correction with ``clear_old_points=False``, forward then reverse
tracking, removing an object), on the stand-in SAM 2.1-T weights. (Both objects are prompted on frame 0:
on CPU in float32 the official code fails on a frame whose only memories are bfloat16 ones, e.g. a frame
tracked before an object's only prompted frame, since it relies on CUDA autocast there.) Hole filling runs in the official
code through the CPU stand-in of its CUDA op (``tests.oracles``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leansam.video import VideoPredictor
from tests import oracles
from tests import parity as P
from tests.video import cases as C


def _close(mine: torch.Tensor, ref: torch.Tensor) -> None:
    mine, ref = mine.float().numpy(), ref.float().numpy()
    assert mine.shape == ref.shape
    assert (np.abs(mine - ref) <= 5e-3 + 1e-3 * np.abs(ref)).all(), np.abs(mine - ref).max()
    assert ((mine > 0) != (ref > 0)).mean() <= 1e-3


def _calls(pred, state) -> list:
    out = [pred.add_new_points_or_box(state, 0, 5, box=[40.0, 30.0, 120.0, 100.0])]
    out.append(pred.add_new_points_or_box(state, 0, 9, points=[[150, 60], [20, 20]], labels=[1, 0]))
    out += list(pred.propagate_in_video(state))
    out.append(
        pred.add_new_points_or_box(state, 2, 9, points=[[160, 70]], labels=[1], clear_old_points=False)
    )
    out += list(pred.propagate_in_video(state, start_frame_idx=2, reverse=True))
    ids, updated = pred.remove_object(state, 5)
    out.append((0, ids, updated[0][1]))
    return out


@pytest.mark.slow
def test_same_outputs_as_the_official_video_predictor(tmp_path: Path) -> None:
    z, _ = C.load("sam2.1_hiera_tiny/e_two_objects")
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(z["frames"][:4]):
        Image.fromarray(f).save(folder / f"{i}.jpg", quality=95)
    ckpt = P.write_stand_in_checkpoint("sam2.1_hiera_tiny", tmp_path / "sam2.1_hiera_tiny.pt")
    official = oracles.sam2().build_sam.build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", str(ckpt), device="cpu"
    )
    expected = _calls(official, official.init_state(video_path=str(folder)))
    mine = VideoPredictor("sam2.1_hiera_tiny", checkpoint=ckpt)
    got = _calls(mine, mine.init_state(str(folder)))
    assert len(got) == len(expected)
    for (f, ids, logits), (f_ref, ids_ref, logits_ref) in zip(got, expected):
        assert (f, list(ids)) == (f_ref, list(ids_ref))
        _close(logits, logits_ref)
