"""``leansam track``: track prompted objects through a video; writes DIR/masks.jsonl and DIR/overlay.mp4.

Prompts name their frame and object: ``--box F:X0,Y0,X1,Y1[:OBJ]``, ``--point F:X,Y[,LABEL][:OBJ]``,
``--mask F:PNG[:OBJ]`` (video pixels; object id 1 when omitted). Outputs are staged in a hidden folder
next to DIR and moved into it only when every frame is done, so bad input leaves no output behind.
``--stream`` reads frames one at a time and writes each frame's line and overlay frame as soon as it
is tracked: memory stays flat however long the video.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..io import InputError
from ..outputs import OutputDir
from .common import add_overwrite_arg, add_prompt_args, log, positive_int, preflight_output, prompts_from_args

_OWNED = ("masks.jsonl", "overlay.mp4")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("track", help="track objects through a video (SAM 2, SAM 2.1, EfficientTAM)")
    p.add_argument("video", help="video file (PyAV) or folder of JPEG/PNG frames")
    p.add_argument("--model", default="efficienttam_ti", help="a model that can track (`leansam models`)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file in the official format")
    add_prompt_args(p)
    p.add_argument("--out", required=True, help="output folder")
    add_overwrite_arg(p)
    p.add_argument(
        "--stream", action="store_true", help="stream the frames (flat memory; prompts take effect forward)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        default="float32",
        help="bfloat16: faster on CPUs with AVX512-BF16 / AMX; masks differ from float32 on a small "
        "fraction of pixels (docs/video.md)",
    )
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default="torch",
        help="run the networks in PyTorch (default) or ONNX Runtime (pip install 'leansam[onnx]')",
    )
    p.add_argument(
        "--onnx",
        default=None,
        metavar="DIR",
        help="with --backend onnx: the graphs written by `leansam export onnx --video --model NAME --out DIR`",
    )


def _predictor(args: argparse.Namespace):
    from ..video import VideoPredictor, load_video_model

    if args.backend == "torch":
        if args.onnx:
            raise InputError("--onnx needs --backend onnx")
        model = load_video_model(args.model, args.checkpoint)
        return VideoPredictor(model, device=args.device, precision=args.precision)
    return VideoPredictor(_onnx_model(args), precision=args.precision)


def _onnx_model(args: argparse.Namespace):
    """The exported graphs of ``--onnx``; they must be of ``--model``."""
    from ..video.onnx_runtime import load_onnx_video_model

    if not args.onnx:
        raise InputError("--backend onnx needs --onnx DIR (written by `leansam export onnx --video`)")
    if args.checkpoint:
        raise InputError("--checkpoint is for exporting; with --onnx the weights are in the graphs")
    model = load_onnx_video_model(args.onnx, threads=args.threads, expect_model=args.model)
    log(f"tracking with {model.name}'s graphs in {args.onnx} on ONNX Runtime")
    return model


def _progress(results, total: int | None):
    from tqdm import tqdm

    return tqdm(results, total=total, unit="frame", desc="tracking")


def _track(args: argparse.Namespace, frames) -> list[tuple[int, list, np.ndarray]]:
    """Offline tracking: every frame's masks (frame_idx, obj_ids, n x H x W bool), in yield order."""
    from ..video.predictor import track_prompts

    prompts = prompts_from_args(args, frames.height, frames.width, len(frames))
    results = track_prompts(_predictor(args), frames, prompts, args.reverse)
    return [
        (f, list(ids), (logits[:, 0] > 0).cpu().numpy()) for f, ids, logits in _progress(results, len(frames))
    ]


def _write_offline(args: argparse.Namespace, frames, tracks, out) -> None:
    from ..video.io import OverlayWriter, video_fps, write_track_line

    by_frame = {f: (ids, m) for f, ids, m in tracks}
    with open(out.path("masks.jsonl"), "w") as f:
        for frame_idx, ids, masks in sorted(tracks, key=lambda r: r[0]):
            write_track_line(f, frame_idx, ids, masks)
    with OverlayWriter(out.path("overlay.mp4"), video_fps(args.video)) as w:
        for i in range(len(frames)):
            _, masks = by_frame.get(i, ([], np.zeros((0, frames.height, frames.width), bool)))
            w.add(frames[i], masks)


def _stream_frames(video: str):
    """(frames read one at a time, H, W, frame count or None when the file does not say): a folder's
    files in order, or a video file decoded lazily."""
    import itertools

    from ..video import VideoError
    from ..video.frames import open_video
    from ..video.io import iter_video, video_frame_count

    if Path(video).is_dir():
        source = open_video(video)
        return (source[i] for i in range(len(source))), source.height, source.width, len(source)
    if not Path(video).is_file():
        raise VideoError(f"no such video file or folder: {video}")
    frames = iter_video(video)
    first = next(frames, None)
    if first is None:
        raise VideoError(f"no frames could be decoded from {video}")
    return itertools.chain([first], frames), first.shape[0], first.shape[1], video_frame_count(video)


def _stream(args: argparse.Namespace, out) -> int:
    """Streaming: frames read lazily, each frame's masks and overlay written as soon as it is tracked."""
    from ..video.io import OverlayWriter, video_fps, write_track_line
    from ..video.stream import StreamTracker

    if args.reverse:
        raise InputError("--reverse needs the whole video: it cannot be combined with --stream")
    frames, h, w, count = _stream_frames(args.video)
    prompts = prompts_from_args(args, h, w, count)
    tracker = StreamTracker(_predictor(args))
    n = 0
    with (
        open(out.path("masks.jsonl"), "w") as f,
        OverlayWriter(out.path("overlay.mp4"), video_fps(args.video)) as ov,
    ):
        for frame_idx, ids, logits in _progress(tracker.track(frames, prompts), None):
            masks = (logits[:, 0] > 0).cpu().numpy()
            write_track_line(f, frame_idx, ids, masks)
            ov.add(tracker.state.frames[frame_idx], masks)
            n += 1
    if max(prompts) >= n:  # the file did not say how many frames it has
        raise InputError(f"a prompt is on frame {max(prompts)}, the video has {n} frames (0..{n - 1})")
    return n


def run(args: argparse.Namespace) -> int:
    from ..video import NotTrackableError, VideoError, can_track, tracking_models
    from ..video.frames import open_video
    from ..video.io import _av

    if not can_track(args.model):
        from ..registry import get_model_info

        get_model_info(args.model)  # unknown names: the registry's error
        raise InputError(
            f"model {args.model!r} cannot track; models that can: {', '.join(tracking_models())}"
        )
    preflight_output(args, _OWNED)  # before the slow tracking
    out = None
    try:
        _av()
        if args.stream:
            out = OutputDir(args.out, args.overwrite, _OWNED, command="leansam track")
            n = _stream(args, out)
        else:
            frames = open_video(args.video)
            tracks = _track(args, frames)
            out = OutputDir(args.out, args.overwrite, _OWNED, command="leansam track")
            _write_offline(args, frames, tracks, out)
            n = len(tracks)
    except BaseException as e:
        if out is not None:
            out.discard()
        if isinstance(e, (VideoError, ImportError, NotTrackableError, ValueError)) and not isinstance(
            e, InputError
        ):
            raise InputError(str(e)) from None
        raise
    out.commit()
    log(f"tracked {n} frames; wrote {out.dest / 'masks.jsonl'} and {out.dest / 'overlay.mp4'}")
    return 0
