"""``leansam compare``: the fidelity gate of a compressed model against its reference.

    leansam compare --reference leansam_tiny --candidate tiny_int8 --images calib/images \\
        --min-box-iou 0.95 --min-point-iou 0.9 --min-cosine 0.99 --json gate.json

``--candidate`` is a quantized-model folder (``leansam quantize``, PyTorch or ONNX Runtime), an ONNX export folder
(``leansam export``; needs ``pip install 'leansam[onnx]'``) or a checkpoint file for the reference's
architecture. Prompts, measures and matching are described in docs/compression.md.

With ``--video CLIP`` and video prompts (``--box F:X0,Y0,X1,Y1[:OBJ]``, ``--point F:X,Y[,LABEL][:OBJ]``,
``--mask F:PNG[:OBJ]``), a tracking model's candidate is compared track against track, frame by frame
(docs/video.md): an int8 folder (``leansam quantize --video``), ONNX graphs (``leansam export onnx
--video``), a checkpoint file, or the reference itself with ``--candidate-precision bfloat16``.

Exit status: 0 when every threshold holds (or none is given), 1 when the gate fails (the table
and a ``FAIL:`` line are printed: an expected outcome, not an error), 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..io import InputError, write_json
from .common import add_prompt_args, log, positive_int, prompts_from_args

EXIT_GATE_FAILED = 1


def _unit(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a value in [0, 1], not {v}")
    return v


def _nonneg(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not v >= 0.0:
        raise argparse.ArgumentTypeError(f"expected a value >= 0, not {v}")
    return v


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="fidelity gate: a compressed model against its reference (IoU, cosine, everything agreement)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--reference", required=True, help="registry name of the reference model (or a pruned model's folder)"
    )
    p.add_argument(
        "--reference-checkpoint", default=None, help="weights of the reference (default: official)"
    )
    p.add_argument(
        "--candidate",
        default=None,
        help="quantized-model folder, ONNX export folder, pruned-model folder or checkpoint file",
    )
    p.add_argument("--images", default=None, help="folder of images to compare on")
    p.add_argument("--max-images", type=positive_int, default=None, help="only the first N images (sorted)")
    p.add_argument("--prompts-per-image", type=positive_int, default=16, help="box + click prompts per image")
    p.add_argument("--points-per-side", type=positive_int, default=16, help="segment-everything grid density")
    p.add_argument("--no-everything", action="store_true", help="skip segment-everything agreement")
    p.add_argument(
        "--everything-iou-thresh",
        type=_unit,
        default=None,
        help="segment-everything predicted-IoU filter (0.88)",
    )
    p.add_argument(
        "--everything-stability-thresh",
        type=_unit,
        default=None,
        help="segment-everything stability filter (0.95)",
    )
    p.add_argument("--min-box-iou", type=_unit, default=None, help="gate: mean mask IoU with box prompts")
    p.add_argument("--min-point-iou", type=_unit, default=None, help="gate: mean mask IoU with centre clicks")
    p.add_argument("--min-cosine", type=_unit, default=None, help="gate: mean embedding cosine similarity")
    p.add_argument(
        "--min-everything-miou", type=_unit, default=None, help="gate: segment-everything matched mIoU"
    )
    p.add_argument(
        "--max-count-mismatch",
        type=_nonneg,
        default=None,
        help="gate: mean |mask-count difference| per image",
    )
    _add_video_args(p)
    p.add_argument("--json", default=None, help="write the full report to this JSON file")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument(
        "--trust-pickle", action="store_true", help="allow checkpoints that are pickled Python objects"
    )


def _add_video_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("video mode (--video): a tracking model's candidate, track against track")
    g.add_argument("--video", default=None, help="video file or folder of frames to track on")
    add_prompt_args(g)
    g.add_argument(
        "--candidate-precision",
        choices=("float32", "bfloat16"),
        default="float32",
        help="run the candidate in this precision (alone: the reference's weights in bfloat16)",
    )
    g.add_argument(
        "--min-track-iou", type=_unit, default=None, help="gate: mean mask IoU over frames and objects"
    )
    g.add_argument("--min-frame-iou", type=_unit, default=None, help="gate: worst frame's mask IoU")
    g.add_argument(
        "--max-pixel-fraction", type=_unit, default=None, help="gate: fraction of pixels that differ"
    )


def load_candidate(path: str | Path, reference: str, trust_pickle: bool = False):
    """The candidate model of ``path``: a quantized folder, an ONNX export folder or a checkpoint file."""
    from ..checkpoints import load_model
    from ..compress.ort import read_onnx_manifest
    from ..compress.saving import is_quantized_dir, load_quantized

    p = Path(path)
    if not p.exists():
        raise InputError(f"candidate not found: {p}")
    if p.is_dir():
        if read_onnx_manifest(p) is not None:  # leansam quantize --method ort-*
            from ..compress.ort import load_onnx_quantized

            try:
                return load_onnx_quantized(p, expect_model=reference)
            except ImportError as e:
                raise InputError(str(e)) from None
        if is_quantized_dir(p):
            model = load_quantized(p)
            return getattr(model, "sam", model)  # a tracking model's folder: its image model
        if any(p.glob("*.onnx")):
            try:
                from ..export.runtime import load_onnx_model
            except ModuleNotFoundError as e:
                if e.name in ("onnxruntime", "onnx"):
                    raise InputError(
                        f"comparing an ONNX candidate needs onnxruntime: pip install 'leansam[onnx]' ({e})"
                    ) from None
                raise InputError(f"this leansam has no ONNX runtime support (leansam.export): {e}") from None
            try:
                return load_onnx_model(p, expect_model=reference)
            except (ValueError, OSError, RuntimeError) as e:
                raise InputError(f"cannot load the ONNX candidate {p}: {e}") from None
        from ..prune.arch import read_arch

        if read_arch(p) is not None:  # leansam prune
            model, _ = load_model(reference, p, trust_pickle=trust_pickle)
            return model
        raise InputError(
            f"candidate folder {p} is neither a quantized model (quantization.json) nor an ONNX export (*.onnx)"
        )
    model, _ = load_model(reference, p, trust_pickle=trust_pickle)
    return model


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import load_model
    from ..compress.calib import find_images
    from ..fidelity import CompareConfig, compare_models
    from ..outputs import check_output_file
    from ..prune.arch import resolve_spec
    from ..registry import get_model_info

    if args.video is not None:
        return run_video(args)
    _image_mode_only(args)
    args.reference, args.reference_checkpoint = resolve_spec(args.reference, args.reference_checkpoint)
    get_model_info(args.reference)
    find_images(args.images, what="image")  # fail early on an empty or missing folder
    if args.json:
        check_output_file(args.json)
    try:
        cfg = CompareConfig(
            max_images=args.max_images,
            prompts_per_image=args.prompts_per_image,
            everything=not args.no_everything,
            points_per_side=args.points_per_side,
            everything_iou_thresh=args.everything_iou_thresh,
            everything_stability_thresh=args.everything_stability_thresh,
            min_box_iou=args.min_box_iou,
            min_point_iou=args.min_point_iou,
            min_cosine=args.min_cosine,
            min_everything_miou=args.min_everything_miou,
            max_count_mismatch=args.max_count_mismatch,
        )
    except ValueError as e:
        raise InputError(str(e)) from None
    candidate = load_candidate(args.candidate, args.reference, args.trust_pickle)
    reference, _ = load_model(args.reference, args.reference_checkpoint, trust_pickle=args.trust_pickle)
    report = compare_models(reference, candidate, args.images, cfg, log=log)
    print(report.table())
    if args.json:
        write_json(
            args.json,
            {
                "reference": args.reference,
                "candidate": str(args.candidate),
                "images": str(args.images),
                **report.to_dict(),
            },
        )
    return finish(report)


def _given(args: argparse.Namespace, *names: str) -> list[str]:
    """The flags among ``names`` that were given: a value (0 included), a non-empty list or True."""
    return [
        f"--{n.replace('_', '-')}"
        for n in names
        if (v := getattr(args, n)) is not None and v is not False and v != []
    ]


def _image_mode_only(args: argparse.Namespace) -> None:
    """Image mode needs --images and --candidate and takes none of the video options."""
    video = _given(
        args, "box", "point", "mask", "min_track_iou", "min_frame_iou", "max_pixel_fraction", "reverse"
    )
    video += ["--candidate-precision"] if args.candidate_precision != "float32" else []
    if video:
        raise InputError(f"{', '.join(video)} need --video")
    if args.images is None:
        raise InputError("give --images DIR (or --video CLIP with video prompts)")
    if args.candidate is None:
        raise InputError("give --candidate")


def finish(report) -> int:
    """Prints the gate's verdict; the exit status (0 passed or nothing gated, 1 failed)."""
    if not report.checks:
        print("no thresholds given: nothing gated")
        return 0
    if report.passed:
        print("PASS: " + ", ".join(f"{c.name} {c.value:.4f} {c.op} {c.threshold:g}" for c in report.checks))
        return 0
    fails = ", ".join(
        f"{c.name} {'n/a' if c.value is None else f'{c.value:.4f}'} (needs {c.op} {c.threshold:g})"
        for c in report.failures
    )
    print(f"FAIL: {fails}")
    sys.stdout.flush()
    return EXIT_GATE_FAILED


# --- video mode --------------------------------------------------------------------------------


def _video_candidate(args: argparse.Namespace):
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
        return load_onnx_video_model(path, threads=args.threads, expect_model=args.reference)
    return load_video_model(args.reference, path)


def run_video(args: argparse.Namespace) -> int:
    """Tracks the prompts with the reference and the candidate; prints the table; 0 / 1 (gate) / 2."""
    from ..outputs import check_output_file
    from ..video import VideoPredictor, can_track, tracking_models
    from ..video.compare import TrackGates, compare_tracks
    from ..video.frames import open_video

    image_only = _given(
        args,
        "images",
        "min_box_iou",
        "min_point_iou",
        "min_cosine",
        "min_everything_miou",
        "max_count_mismatch",
    )
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
        candidate = VideoPredictor(_video_candidate(args), precision=args.candidate_precision)
        reference = VideoPredictor(args.reference, checkpoint=args.reference_checkpoint)
        report = compare_tracks(reference, candidate, frames, prompts, gates, reverse=args.reverse)
    except (ValueError, ImportError) as e:  # unreadable video, bad prompts or options, missing extra
        raise InputError(str(e)) from None
    print(report.table())
    if args.json:
        record = {"reference": args.reference, "candidate": args.candidate, "video": str(args.video)}
        write_json(args.json, {**record, "candidate_precision": args.candidate_precision, **report.to_dict()})
    return finish(report)
