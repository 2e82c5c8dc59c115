"""``leansam compare --video``: a candidate tracking model's masks against the reference's.

    leansam compare --video clip.mp4 --reference efficienttam_ti --candidate etam_int8 \\
        --box 0:10,20,90,120 --min-track-iou 0.9 --json gate.json
    leansam compare --video frames/ --reference sam2.1_hiera_tiny --candidate-precision bfloat16 \\
        --point 0:200,150 --min-frame-iou 0.8

The candidate is an int8 folder (``leansam quantize --video``), ONNX graphs (``leansam export onnx
--video``), a checkpoint file of the reference's architecture, or, when omitted, the reference's own
weights (then ``--candidate-precision bfloat16`` is what is compared). Both track the same prompts;
every frame and object is compared (:mod:`leansam.video.compare`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io import InputError


def _candidate(args: argparse.Namespace):
    """The candidate tracking model: an ONNX folder, an int8 folder, a checkpoint, or the reference's weights."""
    from ..video import load_video_model
    from ..video.onnx import FILES

    path = args.candidate
    if path is None:
        if args.candidate_precision == "float32":
            raise InputError("nothing to compare: give --candidate, or --candidate-precision bfloat16")
        return load_video_model(args.reference, args.reference_checkpoint)
    if not Path(path).exists():
        raise InputError(f"candidate not found: {path}")
    if Path(path).is_dir() and (Path(path) / FILES["image_encoder"]).is_file():
        from ..video.onnx_runtime import load_onnx_video_model

        if args.candidate_precision != "float32":
            raise InputError("ONNX graphs run in float32: drop --candidate-precision")
        model = load_onnx_video_model(path, threads=args.threads)
        if model.name != args.reference:
            raise InputError(f"{path} holds {model.name}'s graphs, not {args.reference}'s")
        return model
    return load_video_model(args.reference, path)


def run_video(args: argparse.Namespace) -> int:
    """Tracks the prompts with the reference and the candidate; prints the table; 0 / 1 (gate) / 2."""
    from ..io import write_json
    from ..outputs import check_output_file
    from ..video import NotTrackableError, VideoError, VideoPredictor, can_track, tracking_models
    from ..video.compare import TrackGates, compare_tracks
    from ..video.frames import open_video
    from .compare import finish
    from .video_prompts import prompts_from_args

    image_only = ["--images"] if args.images is not None else []
    image_only += [
        f"--{k.replace('_', '-')}"
        for k in ("min_box_iou", "min_point_iou", "min_cosine", "min_everything_miou", "max_count_mismatch")
        if getattr(args, k) is not None
    ]
    if image_only:
        raise InputError(f"{', '.join(image_only)}: image mode only, not with --video")
    if not can_track(args.reference):
        from ..registry import get_model_info

        get_model_info(args.reference)  # unknown names: the registry's error
        raise InputError(f"{args.reference!r} cannot track; models that can: {', '.join(tracking_models())}")
    if args.json:
        check_output_file(args.json)
    try:
        gates = TrackGates(args.min_track_iou, args.min_frame_iou, args.max_pixel_fraction)
        frames = open_video(args.video)
        prompts = prompts_from_args(args, frames.height, frames.width, len(frames))
        candidate = VideoPredictor(_candidate(args), precision=args.candidate_precision)
        reference = VideoPredictor(args.reference, checkpoint=args.reference_checkpoint)
        report = compare_tracks(reference, candidate, frames, prompts, gates, reverse=args.reverse)
    except (VideoError, NotTrackableError, ImportError) as e:
        raise InputError(str(e)) from None
    except ValueError as e:  # bad options and prompts (InputError is one)
        raise InputError(str(e)) from None
    print(report.table())
    if args.json:
        record = {"reference": args.reference, "candidate": args.candidate, "video": str(args.video)}
        write_json(args.json, {**record, "candidate_precision": args.candidate_precision, **report.to_dict()})
    return finish(report)
