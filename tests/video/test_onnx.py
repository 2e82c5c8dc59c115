"""The video ONNX export on ONNX Runtime tracks as PyTorch does, and as the official predictor did.

The four graphs of ``leansam.video.onnx`` (fixed memory banks) are exported from the stand-in
efficienttam_ti weights; ``VideoPredictor`` on :class:`OnnxVideoModel` replays the recorded case
``efficienttam_ti/a_box_click`` (two prompted frames, a click on an untracked frame, propagation).
Tolerances against PyTorch: ``tests/parity_tolerances.json`` (``onnx/video/...``, measured).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from leansam.video import VideoPredictor
from leansam.video.onnx import FILES, export_video_onnx
from leansam.video.onnx_runtime import OnnxModelError, load_onnx_video_model
from tests import tolerances as T
from tests.video import cases as C

CASE = "efficienttam_ti/a_box_click"


pytestmark = pytest.mark.slow  # export + two 6-frame replays at 1024 x 1024


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    _, spec = C.load(CASE)
    out = tmp_path_factory.mktemp("onnx") / "efficienttam_ti"
    export_video_onnx(C.model_for(spec), out, name=spec["model"])
    return out


def test_onnx_runtime_tracks_as_pytorch_and_the_official_predictor(exported: Path) -> None:
    z, spec = C.load(CASE)
    opts = spec["constructor"]["then_set_attributes"]
    ort_outs = C.replay(VideoPredictor(load_onnx_video_model(exported, threads=1), **opts), z, spec)
    torch_outs = C.replay(VideoPredictor(C.model_for(spec), **opts), z, spec)
    d = C.differences(ort_outs, torch_outs)
    assert d["same_calls"]
    assert C.mismatches(ort_outs, z) == []
    T.check(f"onnx/video/{CASE}/video_logits", d["max_logit_diff"], T.float_floor(torch_outs[0].logits))
    T.check(f"onnx/video/{CASE}/masks", d["max_pixels_differ"], 1 / torch_outs[0].logits[0].size)
    T.check(f"onnx/video/{CASE}/object_scores", d["max_score_diff"], T.float_floor(np.ones(1) * 10))


def test_the_driver_refuses_a_folder_with_a_graph_missing(exported: Path, tmp_path: Path) -> None:
    for f in FILES.values():
        if f != FILES["heads"]:
            (tmp_path / f).write_bytes((exported / f).read_bytes())
    with pytest.raises(OnnxModelError, match=r"heads\.onnx: missing"):
        load_onnx_video_model(tmp_path)


def test_onnx_graphs_refuse_bfloat16(exported: Path) -> None:
    with pytest.raises(ValueError, match="needs a PyTorch model; ONNX graphs run in float32"):
        VideoPredictor(load_onnx_video_model(exported, threads=1), precision="bfloat16")


def test_the_cli_exports_the_graphs_and_tracks_with_them_as_with_torch(clip, tmp_path: Path, capsys) -> None:
    from leansam.cli import main
    from leansam.data.coco import decode_mask

    folder, frames, ckpt, box = clip
    graphs = tmp_path / "graphs"
    args = ["export", "onnx", "--video", "--model", C.CLIP_MODEL, "--checkpoint", ckpt, "--out", graphs]
    assert main([str(a) for a in args]) == 0, capsys.readouterr().err
    assert load_onnx_video_model(graphs).name == C.CLIP_MODEL
    assert sorted(p.name for p in graphs.iterdir() if not p.name.startswith(".")) == sorted(FILES.values())
    spec = "0:" + ",".join(str(float(v)) for v in box)
    masks = {}
    for backend, extra in (
        ("torch", ["--checkpoint", ckpt]),
        ("onnx", ["--backend", "onnx", "--onnx", graphs]),
    ):
        out = tmp_path / backend
        args = ["track", folder, "--model", C.CLIP_MODEL, "--box", spec, "--out", out, *extra]
        code, err = main([str(a) for a in args]), capsys.readouterr().err
        assert code == 0, err
        assert ("on ONNX Runtime" in err) == (backend == "onnx")
        lines = [json.loads(ln) for ln in (out / "masks.jsonl").read_text().splitlines()]
        masks[backend] = np.stack(
            [decode_mask(ln["objects"][0]["segmentation"], *frames.shape[1:3]) for ln in lines]
        )
    # graphs of another model: one error line, nothing written
    out = tmp_path / "other"
    args = ["track", folder, "--model", "sam2.1_hiera_tiny", "--box", spec, "--out", out, "--backend", "onnx"]
    code, err = main([str(a) for a in [*args, "--onnx", graphs]]), capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and f"holds {C.CLIP_MODEL}'s graphs" in lines[0], err
    assert not out.exists()
    assert masks["torch"].shape[0] == 3 and masks["torch"].any()
    # the mask criterion: at most 0.1% of pixels differ
    assert (masks["torch"] != masks["onnx"]).mean() <= 1e-3
