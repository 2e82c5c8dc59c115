"""``leansam export onnx``: deployable files; plus the ``--backend onnx`` options of other commands.

    leansam export onnx --model mobile_sam --out onnx/mobile_sam          # encoder.onnx + decoder.onnx
    leansam export onnx --model sam_vit_b --checkpoint sam_vit_b_01ec64.pth --out onnx/vit_b --upscale
    leansam segment photo.jpg --box 10,10,200,200 --backend onnx --onnx onnx/mobile_sam
    leansam export onnx --video --model efficienttam_ti --out onnx/etam   # the four tracking graphs
    leansam track clip.mp4 --model efficienttam_ti --box 0:60,40,200,180 --backend onnx --onnx onnx/etam --out out

``export`` takes a format subcommand (only ``onnx`` today) so other formats can join it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..io import InputError
from .common import (
    add_model_args,
    add_overwrite_arg,
    describe_checkpoint,
    log,
    model_from_args,
    preflight_output,
    resolve_model_name,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model for deployment (ONNX)")
    formats = p.add_subparsers(dest="format", metavar="FORMAT")
    formats.required = True
    o = formats.add_parser(
        "onnx",
        help="image encoder and prompt-encoder + mask-decoder as two ONNX files",
        description="Writes OUT/encoder.onnx (dynamic image batch) and OUT/decoder.onnx (dynamic number of "
        "prompts, boxes as an input) with leansam metadata; docs/deployment.md describes them.",
    )
    o.add_argument("--out", required=True, help="output folder")
    add_overwrite_arg(o)
    o.add_argument("--opset", type=int, default=20, help="ONNX opset (>= 17; default 20)")
    o.add_argument(
        "--upscale",
        action="store_true",
        help="add in-graph upscaling: decoder input orig_im_size (H, W) and output masks (N x T x H x W logits)",
    )
    o.add_argument("--static-batch", action="store_true", help="fix the encoder's image batch to 1")
    o.add_argument(
        "--video",
        action="store_true",
        help="a tracking model's four graphs (image encoder, memory attention, heads, memory encoder) for "
        "`leansam track --backend onnx`; docs/video.md",
    )
    part = o.add_mutually_exclusive_group()
    part.add_argument("--encoder-only", action="store_true", help="write only encoder.onnx")
    part.add_argument("--decoder-only", action="store_true", help="write only decoder.onnx")
    o.add_argument(
        "--exporter",
        choices=("torchscript", "dynamo"),
        default="torchscript",
        help="torch.onnx exporter (default torchscript: faster here, same numerics)",
    )
    add_model_args(o)


def run(args: argparse.Namespace) -> int:
    from ..export.onnx import OnnxExportConfig, export_onnx, require_onnx

    try:
        require_onnx()
    except ImportError as e:
        raise InputError(str(e)) from None
    if args.opset < 17:
        raise InputError(f"--opset must be at least 17, not {args.opset}")
    name = resolve_model_name(args)
    if args.video:
        return _export_video(args, name)
    preflight_output(args, ("encoder.onnx*", "decoder.onnx*"))  # before the slow model load
    config = OnnxExportConfig(
        opset=args.opset,
        encoder=not args.decoder_only,
        decoder=not args.encoder_only,
        dynamic_batch=not args.static_batch,
        upscale=args.upscale,
        exporter=args.exporter,
    )
    model = model_from_args(args, name)
    t = time.perf_counter()
    out = export_onnx(model, args.out, config=config, overwrite=args.overwrite)
    log(f"exported {name} in {time.perf_counter() - t:.1f} s (checkpoint: {describe_checkpoint(args, name)})")
    for f in out.files:
        log(f"  {f}  ({f.stat().st_size / 1e6:.1f} MB)")
    return 0


def _export_video(args: argparse.Namespace, name: str) -> int:
    from ..video import can_track, tracking_models
    from ..video.onnx import FILES, export_video_onnx

    if not can_track(name):
        raise InputError(
            f"--video: model {name!r} cannot track; models that can: {', '.join(tracking_models())}"
        )
    other = [f for f in ("upscale", "static_batch", "encoder_only", "decoder_only") if getattr(args, f)]
    if other or args.exporter != "torchscript":
        raise InputError(
            "--video takes none of --upscale, --static-batch, --encoder-only, --decoder-only, --exporter"
        )
    preflight_output(args, tuple(f"{f}*" for f in FILES.values()))
    t = time.perf_counter()
    try:
        paths = export_video_onnx(
            name, args.out, checkpoint=args.checkpoint, opset=args.opset, overwrite=args.overwrite
        )
    except (ValueError, ImportError) as e:
        raise InputError(str(e)) from None
    log(
        f"exported {name}'s tracking graphs in {time.perf_counter() - t:.1f} s (checkpoint: {describe_checkpoint(args, name)})"
    )
    for f in paths.values():
        log(f"  {f}  ({Path(f).stat().st_size / 1e6:.1f} MB)")
    return 0


# --- the --backend option of segment / everything --------------------------------------------------


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """``--backend {torch,onnx}``, ``--onnx``, ``--onnx-decoder``, ``--providers``."""
    g = p.add_argument_group("ONNX Runtime backend")
    g.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default="torch",
        help="run the model in PyTorch (default) or ONNX Runtime (pip install 'leansam[onnx]')",
    )
    g.add_argument(
        "--onnx",
        default=None,
        metavar="PATH",
        help="with --backend onnx: an exported folder (encoder.onnx + decoder.onnx) or an encoder file; "
        "default: export --model once into $LEANSAM_HOME/onnx",
    )
    g.add_argument(
        "--onnx-decoder", default=None, metavar="PATH", help="the decoder file, if not next to --onnx"
    )
    g.add_argument(
        "--providers",
        default=None,
        help="comma-separated ONNX Runtime providers in order of preference (default: from --device)",
    )


def model_for_backend(args: argparse.Namespace, name: str) -> object:
    """The torch model (``--backend torch``) or an :class:`OnnxSam` for the command's options.

    With ``--onnx`` and no ``--model`` the files say which model they are; with ``--model`` too,
    files of another model are refused.
    """
    if args.backend == "torch":
        if args.onnx or args.onnx_decoder or args.providers:
            raise InputError("--onnx, --onnx-decoder and --providers need --backend onnx")
        return model_from_args(args, name)
    from ..export.cache import cached_onnx_model
    from ..export.runtime import load_onnx_model

    providers = _providers(args)
    t = time.perf_counter()
    try:
        if args.onnx:
            if args.checkpoint:
                raise InputError(
                    "--checkpoint is for exporting; with --onnx the weights are in the ONNX files"
                )
            model = load_onnx_model(
                args.onnx, providers, expect_model=args.model, decoder=args.onnx_decoder, threads=args.threads
            )
        else:
            if args.onnx_decoder:
                raise InputError("--onnx-decoder needs --onnx ENCODER")
            model = cached_onnx_model(
                resolve_model_name(args),
                args.checkpoint,
                providers=providers,
                threads=args.threads,
                trust_pickle=args.trust_pickle,
                log=log,
            )
    except ImportError as e:
        raise InputError(str(e)) from None
    log(f"loaded {model.name} on ONNX Runtime {model.providers} in {time.perf_counter() - t:.2f} s")
    return model


def describe_backend(args: argparse.Namespace, name: str, model: object) -> str:
    """What the output JSON names as the weights: the checkpoint, or the ONNX files used."""
    if args.backend == "onnx":
        return f"{model.encoder_path} + {model.decoder_path}"
    return describe_checkpoint(args, name)


def _providers(args: argparse.Namespace) -> list[str] | None:
    if args.providers:
        return [p.strip() for p in args.providers.split(",") if p.strip()]
    if args.device.startswith("cuda"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if args.device != "cpu":
        raise InputError(f"--device {args.device} has no ONNX Runtime provider; use --providers")
    return ["CPUExecutionProvider"]
