"""``leansam track``: masks.jsonl + a playable overlay.mp4, and one clean error line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leansam.cli import main
from leansam.data.coco import decode_mask
from leansam.video import VideoPredictor, tracking_models
from tests.video import cases as C


def _av():
    try:
        import av
    except ImportError:
        pytest.fail("PyAV is needed for the video tests: pip install -e '.[test]' (the `video` extra)")
    return av


def _run(args, capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_track_writes_rle_per_frame_and_a_playable_overlay(clip, tmp_path: Path, capsys) -> None:
    folder, frames, ckpt, box = clip
    out = tmp_path / "out"
    spec = f"0:{','.join(str(float(v)) for v in box)}:7"
    code, err = _run(
        ["track", folder, "--model", C.CLIP_MODEL, "--checkpoint", ckpt, "--box", spec, "--out", out],
        capsys,
    )
    assert code == 0, err
    lines = [json.loads(ln) for ln in (out / "masks.jsonl").read_text().splitlines()]
    assert [ln["frame"] for ln in lines] == [0, 1, 2]
    # The same tracks as the Python API on the same frames and prompt.
    pred = VideoPredictor(C.CLIP_MODEL, checkpoint=ckpt)
    state = pred.init_state(frames)
    pred.add_new_points_or_box(state, 0, 7, box=box)
    for line, (_, ids, logits) in zip(lines, pred.propagate_in_video(state)):
        (obj,) = line["objects"]
        assert obj["id"] == 7 == ids[0]
        assert np.array_equal(
            decode_mask(obj["segmentation"], *frames.shape[1:3]), (logits[0, 0] > 0).numpy()
        )
    decoded = _decode(out / "overlay.mp4")
    assert len(decoded) == 3 and decoded[0].shape == frames[0].shape


def _decode(path: Path) -> list[np.ndarray]:
    with _av().open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_stream_reads_a_video_file_and_tracks_as_the_offline_run(clip, tmp_path: Path, capsys) -> None:
    """EfficientTAM's tracks do not depend on the clip length, so streaming equals offline tracking."""
    from leansam.video.io import OverlayWriter

    _, frames, ckpt, box = clip
    video = tmp_path / "clip.mp4"
    with OverlayWriter(video, 10.0) as w:
        for f in frames:
            w.add(f, np.zeros((0, *f.shape[:2]), bool))
    spec = f"0:{','.join(str(float(v)) for v in box)}"
    lines = {}
    for mode in ("offline", "stream"):
        args = ["track", video, "--model", C.CLIP_MODEL, "--checkpoint", ckpt, "--box", spec]
        args += ["--out", tmp_path / mode] + (["--stream"] if mode == "stream" else [])
        code, err = _run(args, capsys)
        assert code == 0, err
        lines[mode] = (tmp_path / mode / "masks.jsonl").read_text().splitlines()
        assert len(_decode(tmp_path / mode / "overlay.mp4")) == len(frames)
    assert len(lines["stream"]) == len(frames) and lines["stream"] == lines["offline"]


def _assert_clean_error(code: int, err: str, out: Path, words: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert words in lines[0]
    assert not out.exists() and not [q for q in out.parent.iterdir() if q.name.startswith(".")]


@pytest.mark.parametrize("stream", [False, True], ids=["offline", "stream"])
@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("frame_past_end", "the video has 3 frames"),
        ("wrong_mask_size", "the video is"),
        ("no_memory", "cannot track; models that can: efficienttam_s"),
        ("empty_folder", "no JPEG/PNG frames"),
        ("corrupt_video", "cannot decode video"),
    ],
)
def test_bad_input_is_one_error_line_and_nothing_written(
    clip, tmp_path: Path, capsys, case: str, words: str, stream: bool
) -> None:
    folder, _, ckpt, _ = clip
    out = tmp_path / "out"
    video, model, prompt = folder, C.CLIP_MODEL, ["--point", "0:20,20"]
    if case == "frame_past_end":
        prompt = ["--point", "3:20,20"]
    elif case == "wrong_mask_size":
        Image.fromarray(np.ones((10, 10), np.uint8) * 255).save(tmp_path / "m.png")
        prompt = ["--mask", f"0:{tmp_path / 'm.png'}"]
    elif case == "no_memory":
        model = "mobile_sam"
    elif case == "empty_folder":
        video = tmp_path / "empty"
        video.mkdir()
    else:
        video = tmp_path / "broken.mp4"
        video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    args = ["track", video, "--model", model, "--checkpoint", ckpt, *prompt, "--out", out]
    args += ["--stream"] if stream else []
    _assert_clean_error(*_run(args, capsys), out, words)


def test_models_says_which_models_can_track(capsys) -> None:
    code, out = main(["models", "--json"]), capsys.readouterr().out
    rows = {r["name"]: r["track"] for r in json.loads(out)}
    assert code == 0
    assert {n for n, t in rows.items() if t} == set(tracking_models())
    assert rows["mobile_sam"] is False


def test_precision_reaches_the_predictor_and_a_bad_value_is_one_error_line(
    clip, tmp_path: Path, capsys
) -> None:
    from leansam.cli import build_parser
    from leansam.commands.track import _predictor

    folder, _, ckpt, _ = clip
    base = ["track", str(folder), "--model", C.CLIP_MODEL, "--checkpoint", str(ckpt), "--out", "o"]
    for precision in ("float32", "bfloat16"):
        args = build_parser().parse_args([*base, "--precision", precision])
        assert _predictor(args).precision == precision
    out = tmp_path / "out"
    args = ["track", folder, "--model", C.CLIP_MODEL, "--checkpoint", ckpt, "--point", "0:20,20"]
    code, err = _run([*args, "--out", out, "--precision", "float16"], capsys)
    _assert_clean_error(code, err, out, "--precision")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--backend", "onnx"], "--backend onnx needs --onnx DIR"),
        (["--onnx", "somewhere"], "--onnx needs --backend onnx"),
        (
            ["--backend", "onnx", "--onnx", "no_such_dir"],
            "image_encoder.onnx: missing (export with `leansam export onnx --video`",
        ),
    ],
    ids=["onnx_without_dir", "dir_without_onnx", "missing_graphs"],
)
def test_backend_options_are_checked_with_one_error_line(clip, tmp_path: Path, capsys, extra, words) -> None:
    folder, _, ckpt, _ = clip
    out = tmp_path / "out"
    args = ["track", folder, "--model", C.CLIP_MODEL, "--point", "0:20,20", "--out", out, *extra]
    if "--backend" not in extra:
        args += ["--checkpoint", ckpt]
    _assert_clean_error(
        *_run([str(a).replace("no_such_dir", str(tmp_path / "none")) for a in args], capsys), out, words
    )


def test_export_video_refuses_a_model_that_cannot_track(tmp_path: Path, capsys) -> None:
    out = tmp_path / "graphs"
    code, err = _run(["export", "onnx", "--video", "--model", "mobile_sam", "--out", out], capsys)
    _assert_clean_error(code, err, out, "cannot track; models that can: efficienttam_s")
