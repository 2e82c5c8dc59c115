"""Export a leansam model as two ONNX files: the image encoder, and prompt encoder + mask decoder.

    from leansam.export import OnnxExportConfig, export_onnx
    out = export_onnx("mobile_sam", "onnx/mobile_sam")              # official weights (cached/downloaded)
    out = export_onnx(model, "onnx/mine", config=OnnxExportConfig(upscale=True))
    out.encoder, out.decoder                                         # paths of encoder.onnx, decoder.onnx

The graphs (format 1; docs/deployment.md has the full contract):

``encoder.onnx``
    input ``image``: B x 3 x S x S float32, the output of leansam's pre-processing (resize,
    normalise, pad; S = ``leansam.input_size``). B is dynamic.
    outputs ``image_embeddings`` B x C x h x w; SAM 2 models with skip features also
    ``high_res_feats_0`` B x C/8 x 4h x 4w and ``high_res_feats_1`` B x C/4 x 2h x 2w
    (already projected by the decoder's ``conv_s0`` / ``conv_s1``).

``decoder.onnx`` (N prompts against ONE image, in one call)
    ``image_embeddings`` 1 x C x h x w (+ ``high_res_feats_0/1`` of that image);
    ``point_coords`` N x P x 2 float32 (x, y) and ``point_labels`` N x P float32 (1 foreground,
    0 background, -1 padding), P >= 0; ``boxes`` N x K x 4 float32 XYXY with K = 1 (one box per
    prompt) or K = 0 (no box); ``mask_input`` N x 1 x 4h x 4w low-res logits with
    ``has_mask_input`` [1] (1.0 = use it, 0.0 = ignore it; absent for models without mask
    prompts, e.g. EfficientSAM); ``orig_im_size`` [2] int64 (H, W) only when exported with
    ``upscale=True``. All coordinates are in the model's prompt frame: original-image pixels times
    (frame_w / W, frame_h / H) (``leansam.transform``; SAM: longest side scaled to 1024).
    Outputs ``low_res_logits`` N x T x 4h x 4w and ``iou_predictions`` N x T for ALL T mask tokens
    (token 0: the single-mask output, tokens 1..T-1: the multimask outputs),
    ``object_score_logits`` N x 1, and with ``upscale`` ``masks`` N x T x H x W logits at the
    original size (threshold at 0).

Token layout: the graph places the box corners (labels 2 and 3) before the points for families
with ``prompt_style.box_first`` (SAM 2, EfficientSAM) and after them otherwise (SAM). Padding
points are the caller's job, exactly as in segment-anything's ONNX export: SAM adds one (0, 0)
point with label -1 when there is no box, SAM 2 always adds one, EfficientSAM pads to 6 points at
(-1, -1). :class:`leansam.export.runtime.OnnxSam` does all of this from the metadata.

Every file carries ``metadata_props`` (``leansam.model``, ``leansam.role``, ``leansam.version``,
``leansam.input_size``, ``leansam.normalization``, ``leansam.transform``, ``leansam.weights``,
...), which the runtime checks so that files of different models are never mixed silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..interface import join_box_corners
from ..io import InputError
from ..models.fast import FastDecoder
from ..models.sam import Sam
from ..outputs import OutputDir

FORMAT_VERSION = "1"
ONNX_HINT = "pip install 'leansam[onnx]'"
# Protobuf caps a single file at 2 GiB; bigger models keep their weights in "<file>.data".
_SINGLE_FILE_LIMIT = 1_800_000_000


class OnnxExportError(InputError):
    """The model cannot be exported (unsupported layout, exporter failure, non-float32 weights)."""


def require_onnx() -> object:
    """Imports ``onnx`` or raises ImportError with the install hint."""
    try:
        import onnx
    except ImportError as e:
        raise ImportError(f"ONNX export needs the onnx package: {ONNX_HINT}") from e
    return onnx


@dataclass(frozen=True)
class OnnxExportConfig:
    """What :func:`export_onnx` writes.

    Attributes:
        opset: ONNX opset (>= 17; 20 by default: opset 20 has a native ``Gelu``, which ONNX Runtime
            runs faster than the decomposition it otherwise gets; docs/performance.md).
        encoder: write ``encoder.onnx``.
        decoder: write ``decoder.onnx``.
        dynamic_batch: dynamic image batch on the encoder (else fixed to 1).
        upscale: add the ``orig_im_size`` input and the ``masks`` output (in-graph upscaling of
            the low-res logits to the original image size, with the family's interpolation).
        exporter: ``torchscript`` (``torch.onnx.export(dynamo=False)``, the default: faster to export,
            identical numerics) or ``dynamo`` (``torch.export`` + onnxscript).
        encoder_file, decoder_file: file names inside the output folder.
    """

    opset: int = 20
    encoder: bool = True
    decoder: bool = True
    dynamic_batch: bool = True
    upscale: bool = False
    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    encoder_file: str = "encoder.onnx"
    decoder_file: str = "decoder.onnx"

    def __post_init__(self) -> None:
        if self.opset < 17:
            raise ValueError(f"opset must be >= 17, not {self.opset}")
        if self.exporter not in ("torchscript", "dynamo"):
            raise ValueError(f"exporter must be 'torchscript' or 'dynamo', not {self.exporter!r}")
        if not (self.encoder or self.decoder):
            raise ValueError("nothing to export: encoder and decoder are both False")
        for f in (self.encoder_file, self.decoder_file):
            if not f.endswith(".onnx") or "/" in f or "\\" in f:
                raise ValueError(f"file names must be plain '*.onnx' names, not {f!r}")


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        directory: the output folder.
        encoder, decoder: paths of the two graphs (None when not exported).
        metadata: the ``metadata_props`` shared by both files (``leansam.role`` aside).
        files: every file written (graphs and, for models over ~1.8 GB, their ``.data`` files).
    """

    directory: Path
    encoder: Path | None
    decoder: Path | None
    metadata: dict[str, str]
    files: list[Path] = field(default_factory=list)


# --- graph modules ---------------------------------------------------------------------------------


class EncoderGraph(nn.Module):
    """``image`` B x 3 x S x S -> ``image_embeddings`` (+ projected SAM 2 skip features).

    Runs :meth:`Sam.encode_image`, so SAM 2's ``conv_s0``/``conv_s1`` projections are in the graph.
    """

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        f = self.model.encode_image(image)
        return (f.embed, *f.high_res) if f.high_res is not None else f.embed


class DecoderGraph(nn.Module):
    """Prompt encoder + mask decoder of ``model`` with the decoder I/O of the module docstring.

    Reuses the model's own :class:`PromptEncoder` / :class:`MaskDecoder` (no copy): points and box
    corners go through ``embed_points``, masks through ``embed_masks``, then ``predict_masks`` of the
    model's decoder strategy (``model.decoder_impl``: the fast decoder's traceable form, or the reference).
    """

    def __init__(self, model: Sam) -> None:
        super().__init__()
        style = model.prompt_style
        if not style.box_first and style.pad != "no_box":
            # The graph appends the corners after the points; padding would then precede them.
            raise OnnxExportError(
                f"prompt style {style} (box after points, padding {style.pad!r}) is not supported by the "
                "ONNX decoder layout"
            )
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        # The model's decoder strategy; the fast one without a per-image cache is traceable.
        self.decoder = FastDecoder(model.mask_decoder) if model.decoder_impl == "fast" else model.mask_decoder
        self.box_first = style.box_first
        self.mask_prompt = model.prompt_encoder.mask_prompt
        self.high_res = model.mask_decoder.use_high_res_features
        # The positional encoding of the embedding grid is a constant of the weights: computed once.
        self.register_buffer(
            "image_pe", model.prompt_encoder.get_dense_pe().detach().clone(), persistent=False
        )

    def input_names(self) -> list[str]:
        names = ["image_embeddings"]
        if self.high_res:
            names += ["high_res_feats_0", "high_res_feats_1"]
        names += ["point_coords", "point_labels", "boxes"]
        if self.mask_prompt:
            names += ["mask_input", "has_mask_input"]
        return names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        it = iter(inputs)
        embed = next(it)
        high_res = [next(it), next(it)] if self.high_res else None
        point_coords, point_labels, boxes = next(it), next(it), next(it)
        corners = boxes.reshape(point_coords.shape[0], -1, 2)  # K = 0 or 1 boxes
        coords, labels = join_box_corners(point_coords, point_labels, corners, self.box_first)
        pe = self.prompt_encoder
        sparse = pe.embed_points(coords, labels)
        if self.mask_prompt:
            mask_input, has_mask = next(it), next(it)
            # Both terms are exact: x * 1 + y * 0 == x and x * 0 + y * 1 == y for finite x, y.
            no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
            dense = has_mask * pe.embed_masks(mask_input) + (1 - has_mask) * no_mask
        else:
            h, w = pe.image_embedding_size
            dense = sparse.new_zeros((1, pe.embed_dim, h, w))
        return self.decoder.predict_masks(embed, self.image_pe, sparse, dense, high_res)


# --- metadata --------------------------------------------------------------------------------------


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 (first 16 hex digits) over the model's state_dict: names, dtypes, shapes and bytes.

    Both files of one export carry it, so an encoder and a decoder exported from different
    weights of the same architecture are told apart.
    """
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        t = v.detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}|{t.dtype}|{tuple(v.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def model_metadata(model: Sam, name: str, checkpoint: str, config: OnnxExportConfig) -> dict[str, str]:
    """The ``metadata_props`` both files carry (the role is added per file)."""
    from .. import __version__

    t = model.transform
    pe = model.prompt_encoder
    md = model.mask_decoder
    c = pe.embed_dim
    h, w = pe.image_embedding_size
    high_res = [[c // 8, 4 * h, 4 * w], [c // 4, 2 * h, 2 * w]] if md.use_high_res_features else []
    decoder = {
        "num_mask_tokens": md.num_mask_tokens,
        "single_mask_token": 0,
        "dynamic_multimask": (
            {
                "delta": md.dynamic_multimask_stability_delta,
                "thresh": md.dynamic_multimask_stability_thresh,
            }
            if md.dynamic_multimask_via_stability
            else None
        ),
        "mask_prompt": pe.mask_prompt,
        "mask_input_size": [4 * h, 4 * w],
        "upscale": config.upscale,
    }
    return {
        "leansam.format": FORMAT_VERSION,
        "leansam.model": name,
        "leansam.version": __version__,
        "leansam.checkpoint": checkpoint,
        "leansam.weights": weights_fingerprint(model),
        "leansam.input_size": str(t.encoder_size),
        "leansam.normalization": json.dumps({"input_scale": t.input_scale, "mean": t.mean, "std": t.std}),
        "leansam.transform": json.dumps(t.to_dict()),
        "leansam.prompt_style": json.dumps(model.prompt_style.to_dict()),
        "leansam.embedding": json.dumps({"channels": c, "size": [h, w], "high_res": high_res}),
        "leansam.decoder": json.dumps(decoder),
        "leansam.mask_threshold": str(float(model.mask_threshold)),
    }


_ENCODER_DOC = (
    "leansam image encoder. Input 'image': B x 3 x S x S float32, pre-processed as leansam.transform says "
    "(resize, normalise with leansam.normalization, zero-pad bottom/right). Outputs 'image_embeddings' "
    "B x C x h x w (+ 'high_res_feats_0/1' for SAM 2 models with skip features)."
)
_DECODER_DOC = (
    "leansam prompt encoder + mask decoder, N prompts on one image. Inputs: 'image_embeddings' 1 x C x h x w "
    "(+ high_res_feats_0/1), 'point_coords' N x P x 2 and 'point_labels' N x P (1 fg, 0 bg, -1 padding), "
    "'boxes' N x K x 4 XYXY (K = 1 or 0), all in the prompt frame; 'mask_input' N x 1 x 4h x 4w + "
    "'has_mask_input' [1]; 'orig_im_size' [2] int64 with in-graph upscaling. Outputs for ALL mask tokens "
    "(0 = single mask, 1.. = multimask): 'low_res_logits' N x T x 4h x 4w, 'iou_predictions' N x T, "
    "'object_score_logits' N x 1 (+ 'masks' N x T x H x W logits). Padding points are the caller's job "
    "(leansam.prompt_style)."
)


# --- export ----------------------------------------------------------------------------------------


def export_onnx(
    model_or_name: Sam | str,
    out_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    config: OnnxExportConfig | None = None,
    trust_pickle: bool = False,
    overwrite: bool = False,
) -> OnnxExport:
    """Exports a model's image encoder and prompt-encoder + mask-decoder as ONNX files.

    Args:
        model_or_name: a :class:`Sam` (exported as is, float32) or a registry name (built with
            ``checkpoint``, or the official weights from the cache / a download when None).
        out_dir: output folder; ``encoder.onnx`` and ``decoder.onnx`` are written into it
            atomically (nothing appears there unless the whole export succeeded).
        checkpoint: checkpoint file for a registry name (official format or .safetensors).
        config: :class:`OnnxExportConfig` (opset, dynamic batch, in-graph upscaling, ...).
        trust_pickle: allow checkpoints that are pickled Python objects.
        overwrite: replace files of the output names in ``out_dir`` that leansam did not write
            (:class:`leansam.outputs.OutputDir`).

    Returns:
        :class:`OnnxExport` with the paths and the metadata written into both files.

    Raises:
        UnknownModelError: unknown registry name. CheckpointError: unusable checkpoint.
        OnnxExportError: the model cannot be exported. ImportError: onnx is not installed.
    """
    config = config or OnnxExportConfig()
    onnx = require_onnx()
    if isinstance(model_or_name, str):
        from ..checkpoints import load_model

        model, report = load_model(model_or_name, checkpoint, trust_pickle=trust_pickle)
        name = model_or_name
        ckpt = Path(report.path).name if report is not None else "none (random init)"
    elif isinstance(model_or_name, Sam):
        if checkpoint is not None:
            raise ValueError("checkpoint is only used with a registry name, not with a model object")
        model, name, ckpt = model_or_name, model_or_name.name or "custom", "in-memory model"
    else:
        raise TypeError(f"expected a Sam model or a registry name, not {type(model_or_name).__name__}")
    bad = sorted({str(p.dtype) for p in model.parameters() if p.dtype != torch.float32})
    if bad:
        raise OnnxExportError(f"ONNX export needs a float32 model, {name} has {', '.join(bad)} weights")
    was_training = model.training
    model.eval()
    meta = model_metadata(model, name, ckpt, config)
    out = OutputDir(
        out_dir, overwrite=overwrite, owned_patterns=(config.encoder_file + "*", config.decoder_file + "*")
    )
    written: list[str] = []
    try:
        with torch.no_grad():
            if config.encoder:
                proto = _export_encoder(model, config)
                written += _finish(onnx, proto, out, config.encoder_file, {**meta, "leansam.role": "encoder"})
            if config.decoder:
                proto = _export_decoder(model, config)
                written += _finish(onnx, proto, out, config.decoder_file, {**meta, "leansam.role": "decoder"})
    except BaseException:
        out.discard()
        raise
    finally:
        model.train(was_training)
    out.commit()
    d = Path(out_dir)
    return OnnxExport(
        directory=d,
        encoder=d / config.encoder_file if config.encoder else None,
        decoder=d / config.decoder_file if config.decoder else None,
        metadata=meta,
        files=[d / f for f in written],
    )


def _export_encoder(model: Sam, config: OnnxExportConfig) -> object:
    s = model.transform.encoder_size
    x = torch.zeros(1, 3, s, s, device=model.device)
    outputs = ["image_embeddings"]
    if model.mask_decoder.use_high_res_features:
        outputs += ["high_res_feats_0", "high_res_feats_1"]
    axes = {n: {0: "batch"} for n in ["image", *outputs]} if config.dynamic_batch else {}
    return _run_exporter(EncoderGraph(model), (x,), ["image"], outputs, axes, config, f"{model.name} encoder")


def _decoder_example(model: Sam) -> tuple[torch.Tensor, ...]:
    """Example decoder inputs: 3 prompts, 3 points, 1 box (sizes >= 2 where a dimension is dynamic)."""
    pe = model.prompt_encoder
    c, (h, w), dev = pe.embed_dim, pe.image_embedding_size, model.device
    frame = pe.input_image_size
    args = [torch.randn(1, c, h, w, device=dev)]
    if model.mask_decoder.use_high_res_features:
        args += [
            torch.randn(1, c // 8, 4 * h, 4 * w, device=dev),
            torch.randn(1, c // 4, 2 * h, 2 * w, device=dev),
        ]
    n = 3
    coords = torch.rand(n, 3, 2, device=dev) * torch.tensor([frame[1], frame[0]], device=dev)
    labels = torch.tensor([[1.0, 0.0, -1.0]] * n, device=dev)
    boxes = torch.tensor([[0.1, 0.2, 0.6, 0.7]] * n, device=dev).reshape(n, 1, 4) * frame[0]
    args += [coords, labels, boxes]
    if pe.mask_prompt:
        args += [torch.randn(n, 1, 4 * h, 4 * w, device=dev), torch.ones(1, device=dev)]
    return tuple(args)


def _export_decoder(model: Sam, config: OnnxExportConfig) -> object:
    graph = DecoderGraph(model)
    inputs = graph.input_names()
    outputs = ["low_res_logits", "iou_predictions", "object_score_logits"]
    axes = {
        "point_coords": {0: "num_prompts", 1: "num_points"},
        "point_labels": {0: "num_prompts", 1: "num_points"},
        "boxes": {0: "num_prompts", 1: "num_boxes"},
        **{o: {0: "num_prompts"} for o in outputs},
    }
    if "mask_input" in inputs:
        axes["mask_input"] = {0: "num_prompts"}
    proto = _run_exporter(
        graph, _decoder_example(model), inputs, outputs, axes, config, f"{model.name} decoder"
    )
    if config.upscale:
        from .upscale import append_upscaling

        append_upscaling(proto, model.transform)
    return proto


def _run_exporter(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    inputs: list[str],
    outputs: list[str],
    axes: dict[str, dict[int, str]],
    config: OnnxExportConfig,
    what: str,
) -> object:
    """Runs the chosen exporter into a temporary folder and returns the loaded ModelProto.

    Weights larger than 2 GiB cannot live in one protobuf, so the exporters may write external
    tensor files; loading the proto here pulls them in, and :func:`_finish` re-saves them as one file.
    """
    onnx = require_onnx()
    with tempfile.TemporaryDirectory(prefix="leansam-onnx-") as tmp:
        path = Path(tmp) / "graph.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer/deprecation chatter; failures still raise
                if config.exporter == "torchscript":
                    torch.onnx.export(
                        module,
                        args,
                        str(path),
                        input_names=inputs,
                        output_names=outputs,
                        opset_version=config.opset,
                        dynamic_axes=axes,
                        do_constant_folding=True,
                        dynamo=False,
                    )
                else:
                    with contextlib.redirect_stdout(None):
                        program = torch.onnx.export(
                            module,
                            args,
                            input_names=inputs,
                            output_names=outputs,
                            opset_version=config.opset,
                            dynamic_shapes=_dynamo_shapes(module, inputs, axes),
                            dynamo=True,
                        )
                    program.save(str(path), external_data=True)
        except Exception as e:
            raise OnnxExportError(f"exporting the {what} to ONNX failed: {type(e).__name__}: {e}") from e
        proto = onnx.load(str(path), load_external_data=True)
    _name_dims(proto, axes)
    return proto


def _dynamo_shapes(module: nn.Module, inputs: list[str], axes: dict[str, dict[int, str]]) -> tuple:
    """``dynamic_shapes`` for torch.export, positional; ``forward(*inputs)`` takes them as one tuple."""
    dyn = torch.export.Dim.DYNAMIC
    specs = tuple({d: dyn for d in axes[n]} if n in axes else None for n in inputs)
    params = inspect.signature(module.forward).parameters.values()
    return (specs,) if any(p.kind is p.VAR_POSITIONAL for p in params) else specs


def _name_dims(proto: object, axes: dict[str, dict[int, str]]) -> None:
    """Gives the dynamic dimensions of inputs and outputs the readable names of ``axes``."""
    for v in [*proto.graph.input, *proto.graph.output]:
        for d, dim_name in axes.get(v.name, {}).items():
            dim = v.type.tensor_type.shape.dim[d]
            dim.ClearField("dim_value")
            dim.dim_param = dim_name


def _finish(onnx: object, proto: object, out: OutputDir, file_name: str, meta: dict[str, str]) -> list[str]:
    """Adds metadata and a doc string, checks the graph, and saves it into the staging folder."""
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.doc_string = _ENCODER_DOC if meta["leansam.role"] == "encoder" else _DECODER_DOC
    proto.producer_name = "leansam"
    path = out.path(file_name)
    weight_bytes = sum(len(t.raw_data) for t in proto.graph.initializer)
    if weight_bytes < _SINGLE_FILE_LIMIT:
        onnx.checker.check_model(proto)
        onnx.save_model(proto, str(path))
        return [file_name]
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=file_name + ".data",
    )
    onnx.checker.check_model(str(path))  # by path: the checker then reads the external tensors itself
    return [file_name, file_name + ".data"]


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (without loading its weights)."""
    onnx = require_onnx()
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}
