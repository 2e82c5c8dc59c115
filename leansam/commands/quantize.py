"""``leansam quantize``: int8 post-training quantization with a small calibration set.

    leansam quantize --model leansam_tiny --method tinysam --calib calib/images --out tiny_int8
    leansam quantize --model mobile_sam --method ort-static --calib calib/images --out ms_ort_int8
    leansam quantize --model mobile_sam --method ort-dynamic --out ms_ort_dyn

Methods: ``tinysam`` (TinySAM's recipe in PyTorch, real int8 kernels; writes ``model.pt`` +
``quantization.json``, loadable with ``leansam.compress.load_quantized`` and usable as a
``leansam compare --candidate``), ``ort-static`` (ONNX Runtime QDQ static quantization of the
exported encoder, per-channel weights, calibrated on --calib), ``ort-dynamic`` (ONNX Runtime
dynamic quantization; no calibration). ``--config FILE.json`` gives every option of the method's
config (docs/compression.md); flags given on the command line override it.
Check the result with ``leansam compare --reference MODEL --candidate OUT --images DIR``.

``--video`` quantizes a tracking model (``tinysam`` only): its image encoder becomes int8, its
memory modules stay fp32, and ``--calib`` is a video (file or folder of frames) whose frames,
spread evenly, are made into encoder input as tracking makes them. Use the result with
``leansam track --model MODEL --checkpoint OUT`` and check it with ``leansam compare --video``.
"""

from __future__ import annotations

import argparse
import dataclasses

from ..io import InputError
from .common import (
    add_model_args,
    add_overwrite_arg,
    log,
    model_from_args,
    positive_int,
    preflight_output,
    resolve_model_name,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="int8 post-training quantization (PyTorch TinySAM recipe or ONNX Runtime)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p)
    p.add_argument(
        "--method",
        required=True,
        choices=("tinysam", "ort-static", "ort-dynamic"),
        help="quantization method",
    )
    p.add_argument(
        "--calib",
        default=None,
        help="folder of calibration images (tinysam, ort-static); with --video a video",
    )
    p.add_argument(
        "--video",
        action="store_true",
        help="quantize the tracking model's image encoder (tinysam; --calib VIDEO)",
    )
    p.add_argument("--out", required=True, help="output folder")
    add_overwrite_arg(p)
    p.add_argument("--config", default=None, help="JSON file with the method's config (docs/compression.md)")
    p.add_argument("--num-calib", type=positive_int, default=None, help="calibration images used (default 8)")
    p.add_argument(
        "--search", choices=("mse", "cosine", "minmax"), default=None, help="tinysam: scale search metric"
    )
    p.add_argument("--w-bits", type=int, default=None, help="tinysam: weight bits, 2..8 (default 8)")
    p.add_argument(
        "--linear-granularity",
        choices=("tensor", "channel"),
        default=None,
        help="tinysam: linear weight scales",
    )
    p.add_argument("--no-fuse", action="store_true", help="tinysam: do not fuse activations into int8 layers")
    p.add_argument(
        "--exclude", action="append", default=None, help="tinysam: module-name pattern kept fp32 (repeatable)"
    )
    p.add_argument(
        "--per-channel", choices=("yes", "no"), default=None, help="ort methods: per-channel weight scales"
    )


def _config(args: argparse.Namespace):
    from ..compress.config import METHODS, config_from_json

    cls = METHODS[args.method]
    try:
        cfg = config_from_json(args.config) if args.config else cls()
        if cfg.method != args.method:
            raise ValueError(f"--config is a {cfg.method!r} config but --method is {args.method!r}")
        names = {f.name for f in dataclasses.fields(cfg)}
        over = {
            "calib_images": args.calib,
            "num_calib": args.num_calib,
            "search": args.search,
            "w_bits": args.w_bits,
            "linear_granularity": args.linear_granularity,
            "fuse_activations": False if args.no_fuse else None,
            "exclude": tuple(args.exclude) if args.exclude else None,
            "per_channel": None if args.per_channel is None else args.per_channel == "yes",
        }
        given = {k: v for k, v in over.items() if v is not None}
        unused = sorted(k for k in given if k not in names)
        if unused:
            flags = ", ".join("--" + k.replace("_", "-").replace("calib-images", "calib") for k in unused)
            raise ValueError(f"{flags} not used by --method {args.method}")
        return dataclasses.replace(cfg, **given)
    except ValueError as e:
        raise InputError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    if args.video and args.method != "tinysam":
        raise InputError(f"--video quantizes with --method tinysam, not {args.method}")
    if args.method == "tinysam" and args.device != "cpu":
        raise InputError("int8 quantization runs on the CPU; leave --device at cpu")
    name = resolve_model_name(args)
    cfg = _config(args)
    preflight_output(args, ("model.pt", "quantization.json", "encoder*.onnx", "decoder*.onnx"))
    if args.video:
        return _run_video(args, name, cfg)
    if args.method != "tinysam":
        from ..compress.ort import require_onnxruntime

        try:
            require_onnxruntime()
        except ImportError as e:  # optional dependency: one error line with the install hint
            raise InputError(str(e)) from None
    if getattr(cfg, "calib_images", "absent") is None:
        raise InputError(f"--method {args.method} needs calibration images: add --calib DIR")
    calib = None
    if getattr(cfg, "calib_images", None):
        from ..compress.calib import load_calibration

        # read every calibration image before loading the model: a bad folder fails with one line
        calib = load_calibration(cfg.calib_images, cfg.num_calib)
    if args.method == "tinysam":
        from ..compress import quantize_, save_quantized

        model = model_from_args(args, name)
        report = quantize_(model, cfg, calib, log=log)
        save_quantized(model, args.out, overwrite=args.overwrite)
        log(report.summary())
    else:
        from ..compress.ort import quantize_onnx

        result = quantize_onnx(
            name,
            cfg,
            args.out,
            calib=calib,
            checkpoint=args.checkpoint,
            trust_pickle=args.trust_pickle,
            log=log,
            overwrite=args.overwrite,
        )
        log(result.summary())
    log(
        f"wrote {args.out}; check it with: leansam compare --reference {name} --candidate {args.out} --images DIR"
    )
    return 0


def _run_video(args: argparse.Namespace, name: str, cfg) -> int:
    """``--video``: the tracking model's image encoder to int8, calibrated on frames of ``--calib``."""
    from ..compress import save_quantized
    from ..video import NotTrackableError, VideoError, load_video_model
    from ..video.frames import open_video
    from ..video.quantize import quantize_video_

    if cfg.calib_images is None:
        raise InputError("--video needs a calibration video: add --calib VIDEO (file or folder of frames)")
    try:
        frames = open_video(cfg.calib_images)  # a bad video fails before the model is loaded
        model = load_video_model(name, args.checkpoint)
        report = quantize_video_(model, cfg, frames, log=log)
    except (VideoError, NotTrackableError) as e:
        raise InputError(str(e)) from None
    save_quantized(model, args.out, overwrite=args.overwrite)
    log(report.summary())
    log(
        f"wrote {args.out}; track with: leansam track VIDEO --model {name} --checkpoint {args.out}; "
        f"check it with: leansam compare --video VIDEO --reference {name} --candidate {args.out} --box ..."
    )
    return 0
