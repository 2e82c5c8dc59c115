"""TinySAM's post-training quantization recipe in PyTorch, executed by real int8 kernels.

    from leansam.compress import TinySamPTQConfig, quantize_
    model = leansam.build_model("leansam_tiny")
    report = quantize_(model, TinySamPTQConfig(calib_images="calib/"))   # in place
    leansam.SamPredictor(model)                                          # unchanged API

Steps (all on the image encoder; the prompt encoder and mask decoder stay fp32):

1. **Prepare** (exact in fp32): the encoder's own ``reparameterize()`` when it has one (folds
   BatchNorm into convolutions: TinyViT, EfficientViT, RepViT), then every remaining
   ``nn.Sequential`` pair ``Conv2d -> BatchNorm2d`` is folded.
2. **Calibrate**: the fp32 encoder runs once on every calibration image (preprocessed with the
   model's transform). Hooks record, for every dense ``Conv2d`` / ``Linear``, the input's range
   over all images and a fixed-seed sub-sample of its input (``samples_per_image`` rows of a
   linear's input; for a convolution, the im2col rows of a random square of about as many
   output pixels, padding included), and which activation module consumes each layer's output.
3. **Search** (TinySAM / PTQ4ViT): per layer, weights symmetric int8 with one scale per output
   channel (conv) or per layer (linear), the input asymmetric uint8 per tensor. Starting from the
   full ranges, ``search_rounds`` times: the weight clipping ratio is chosen (per output channel
   where the granularity allows: channels are independent given the input) among
   ``search_candidates`` ratios in ``[search_min, 1]``, then the input clipping ratio, each
   minimising the layer-output error (MSE or cosine distance) against fp32 on the samples. The
   range of the input always contains 0, so zero padding stays exact.
4. **Fuse** (``fuse_activations``): a ReLU / GELU / Hardswish module that consumed the output of
   exactly one quantized layer on every call is run inside that layer; the fusion is kept only if
   the fp32 encoder with the fusion gives bit-identical output on the first calibration image.
5. **Convert**: each layer is replaced by :class:`~leansam.compress.int8.Int8Conv2d` /
   :class:`~leansam.compress.int8.Int8Linear`.

What TinySAM quantizes that stays fp32 here, and why: attention matmuls (there is no int8
batched-matmul kernel in eager PyTorch on CPU; simulating the per-head quantization would be
fake quantization, slower than fp32), depthwise convolutions (slower in int8 here), and the mask
decoder (it runs per prompt on 64 x 64 maps; int8 would not speed it up on CPU). TinySAM's search
uses a Hessian-guided metric on the final output; here each layer's own output error is used.
"""

from __future__ import annotations

import fnmatch
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.common import fuse_conv_bn
from .calib import CalibrationSet, load_calibration
from .config import QuantConfig, TinySamPTQConfig
from .fusion import _apply_fusion, _decide_fusions, _set_module
from .int8 import (
    FloatWithActivation,
    Int8Conv2d,
    Int8Linear,
    activation_kind,
    can_quantize_conv,
    int8_kernels_available,
)

__all__ = ["LayerResult", "QuantReport", "prepare_float", "quantize_"]

ENCODER = "image_encoder"


@dataclass
class LayerResult:
    """How one layer was quantized.

    Attributes:
        name: module name in the model (``image_encoder.layers.1.blocks.0.mlp.fc1``).
        kind: ``"conv"`` or ``"linear"``.
        post_op: activation fused into it (``"none"`` if none).
        input_range: (min, max) of its input over the calibration images.
        input_scale, input_zero_point: the chosen uint8 quantizer.
        act_ratio: chosen clipping ratio of the input range.
        weight_ratio: chosen clipping ratio of the weight range (mean over channels).
        error_minmax, error_searched: relative output error (||y_q - y|| / ||y||) on the calibration
            samples with full ranges and with the searched ranges.
    """

    name: str
    kind: str
    post_op: str
    input_range: tuple[float, float]
    input_scale: float
    input_zero_point: int
    act_ratio: float
    weight_ratio: float
    error_minmax: float
    error_searched: float


@dataclass
class QuantReport:
    """What :func:`quantize_` did (also stored, as a dict, in the saved model's quantization.json)."""

    model: str
    method: str
    config: dict[str, Any]
    calibration: list[str]
    prepare: dict[str, Any]
    layers: list[LayerResult] = field(default_factory=list)
    kept_float: dict[str, str] = field(default_factory=dict)
    fused: dict[str, str] = field(default_factory=dict)
    fusion_check: str = "not requested"
    handoffs: dict[str, str] = field(default_factory=dict)
    handoff_check: str = "nothing to hand off"
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        n_conv = sum(1 for r in self.layers if r.kind == "conv")
        errs = [r.error_searched for r in self.layers]
        worst = max(self.layers, key=lambda r: r.error_searched, default=None)
        text = (
            f"{self.model}: {len(self.layers)} layers int8 ({n_conv} conv, {len(self.layers) - n_conv} linear), "
            f"{len(self.kept_float)} kept fp32, {len(self.fused)} activations fused, "
            f"{len(self.handoffs)} uint8 hand-offs, "
            f"{len(self.calibration)} calibration images, {self.seconds:.1f} s"
        )
        if worst is not None:
            text += f"; layer output error mean {np.mean(errs):.4f}, worst {worst.error_searched:.4f} ({worst.name})"
        return text


# ---------------------------------------------------------------------------------------------
# 1. Prepare


def _fold_sequential(module: nn.Module, prefix: str, folded: list[str]) -> None:
    for name, child in list(module.named_children()):
        full = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            items = list(child)
            i = 0
            while i < len(items) - 1:
                a, b = items[i], items[i + 1]
                if type(a) is nn.Conv2d and isinstance(b, nn.BatchNorm2d) and b.track_running_stats:
                    items[i] = fuse_conv_bn(a, b)
                    items[i + 1] = nn.Identity()
                    folded.append(f"{full}.{i}")
                i += 1
            if len(items) and any(x is not y for x, y in zip(items, child)):
                for j, m in enumerate(items):  # keep indices (and so key names) stable
                    child._modules[str(j)] = m
        _fold_sequential(child, f"{full}.", folded)


def prepare_float(model: nn.Module, steps: dict[str, Any] | None = None) -> dict[str, Any]:
    """Folds BatchNorms of ``model.image_encoder`` in place (exact in fp32); returns the steps taken.

    With ``steps`` (from an earlier call, e.g. read back from a saved model), exactly those steps
    are replayed, so the module tree matches the one that was quantized.
    """
    enc = model.get_submodule(ENCODER)
    model.eval()
    if steps is None:
        reparam = callable(getattr(enc, "reparameterize", None))
    else:
        reparam = bool(steps.get("reparameterize"))
    if reparam:
        with torch.no_grad():
            enc.reparameterize()
    folded: list[str] = []
    with torch.no_grad():
        _fold_sequential(enc, f"{ENCODER}.", folded)
    if steps is not None and sorted(folded) != sorted(steps.get("folded", [])):
        raise ValueError(
            "the model's structure does not match the saved quantized model "
            f"(folded {len(folded)} conv+BatchNorm pairs, the file lists {len(steps.get('folded', []))})"
        )
    return {"reparameterize": reparam, "folded": folded}


# ---------------------------------------------------------------------------------------------
# 2. Calibrate


class _LayerStats:
    """Running input range and input samples of one layer."""

    def __init__(self) -> None:
        self.lo = float("inf")
        self.hi = float("-inf")
        self.samples: list[torch.Tensor] = []
        self.calls = 0
        #: where the inputs came from: "P" (layer P's output), "A|P" (activation A applied to it)
        self.sources: dict[str, int] = defaultdict(int)


def _conv_rows(x: torch.Tensor, conv: nn.Conv2d, n: int, gen: torch.Generator) -> torch.Tensor:
    """im2col rows (P x C*kh*kw) of a random square of about ``n`` output pixels of ``conv``
    (zero padding included), so the search can treat the convolution as a matrix product."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    xp = F.pad(x, (pw, pw, ph, ph))
    ho = (xp.shape[-2] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[-1] - dw * (kw - 1) - 1) // sw + 1
    side = max(1, round(n**0.5))
    ch, cw = min(side, ho), min(side, wo)
    oy = int(torch.randint(0, ho - ch + 1, (1,), generator=gen))
    ox = int(torch.randint(0, wo - cw + 1, (1,), generator=gen))
    y0, x0 = oy * sh, ox * sw
    y1, x1 = (oy + ch - 1) * sh + dh * (kh - 1) + 1, (ox + cw - 1) * sw + dw * (kw - 1) + 1
    patch = xp[:, :, y0:y1, x0:x1]
    cols = F.unfold(patch, (kh, kw), dilation=(dh, dw), stride=(sh, sw))  # B x C*kh*kw x L
    return cols.transpose(1, 2).reshape(-1, cols.shape[1]).contiguous()


def _calibrate(
    model: nn.Module,
    layers: dict[str, nn.Module],
    others: dict[str, nn.Module],
    acts: dict[str, nn.Module],
    inputs: list[torch.Tensor],
    config: TinySamPTQConfig,
) -> tuple[dict[str, _LayerStats], dict[str, dict[str, int]]]:
    """Runs the fp32 encoder on every input; returns per-layer stats and activation consumers.

    ``layers`` get statistics and samples; ``others`` (layers that stay fp32) are only counted.
    ``consumers[act_name][layer_name]`` counts the calls of activation ``act_name`` whose input
    was the output of ``layer_name`` (the output tensor is tagged by a forward hook).
    """
    stats = {name: _LayerStats() for name in [*layers, *others]}
    consumers: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    gen = torch.Generator().manual_seed(config.seed)
    n = config.samples_per_image

    def layer_hook(name: str, mod: nn.Module):
        def hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            x = inp[0].detach()
            st = stats[name]
            st.calls += 1
            st.sources[getattr(inp[0], "_leansam_src", "")] += 1
            st.lo = min(st.lo, float(x.min()))
            st.hi = max(st.hi, float(x.max()))
            if isinstance(mod, nn.Linear):
                rows = x.reshape(-1, x.shape[-1])
                idx = torch.randperm(rows.shape[0], generator=gen)[:n]
                st.samples.append(rows[idx].clone())
            else:
                st.samples.append(_conv_rows(x, mod, n, gen))
            out._leansam_src = name

        return hook

    def count_hook(name: str):
        def hook(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            stats[name].calls += 1
            out._leansam_src = name

        return hook

    def act_hook(name: str):
        def pre(_m: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
            src = getattr(inp[0], "_leansam_src", None)
            consumers[name][src or ""] += 1

        return pre

    def act_out_hook(name: str):
        def hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            src = getattr(inp[0], "_leansam_src", None)
            if src and "|" not in src and out is not inp[0]:
                out._leansam_src = f"{name}|{src}"

        return hook

    handles = [m.register_forward_hook(layer_hook(k, m)) for k, m in layers.items()]
    handles += [m.register_forward_hook(count_hook(k)) for k, m in others.items()]
    handles += [m.register_forward_pre_hook(act_hook(k)) for k, m in acts.items()]
    handles += [m.register_forward_hook(act_out_hook(k)) for k, m in acts.items()]
    try:
        with torch.no_grad():
            for x in inputs:
                model.encode_image(x)
    finally:
        for h in handles:
            h.remove()
    return stats, consumers


# ---------------------------------------------------------------------------------------------
# 3. Search


def _fq_act(x: torch.Tensor, scale: float, zp: int) -> torch.Tensor:
    return torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)


def _act_qparams(lo: float, hi: float, ratio: float) -> tuple[float, int]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = max(hi - lo, 1e-8)
    scale = span * ratio / 255.0
    zp = round(-lo / span * 255.0)
    return scale, min(max(zp, 0), 255)


def _per_channel_error(y: torch.Tensor, ref: torch.Tensor, metric: str) -> torch.Tensor:
    """N x O outputs -> O errors: MSE, or 1 - cosine similarity, of each output channel."""
    if metric == "cosine":
        return 1.0 - F.cosine_similarity(y, ref, dim=0, eps=1e-12)
    return (y - ref).pow(2).mean(0)


def _search_layer(
    name: str, layer: nn.Module, st: _LayerStats, config: TinySamPTQConfig
) -> tuple[torch.Tensor, float, int, LayerResult]:
    """(weight scales O, input scale, input zero point, result) for one layer (module docstring, step 3).

    Convolutions are searched in im2col form: samples are N x C*kh*kw rows, the weight O x C*kh*kw,
    so every candidate costs one matrix product.
    """
    is_conv = isinstance(layer, nn.Conv2d)
    w = layer.weight.detach().float().reshape(layer.weight.shape[0], -1)
    b = layer.bias.detach().float() if layer.bias is not None else None
    qmax = 2 ** (config.w_bits - 1) - 1
    per_channel = is_conv or config.linear_granularity == "channel"
    out_ch = w.shape[0]
    wmax = w.abs().amax(1).clamp(min=1e-12)
    if not per_channel:
        wmax = wmax.max().expand(out_ch)
    x = torch.cat(st.samples)
    ref = F.linear(x, w, b)
    ratios = torch.linspace(config.search_min, 1.0, config.search_candidates).tolist()

    def fq_w(ratio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = wmax * ratio / qmax
        return (w / scale[:, None]).round().clamp(-qmax, qmax) * scale[:, None], scale

    def err(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
        return _per_channel_error(F.linear(xq, wq, b), ref, config.search)

    a_ratio = 1.0
    w_ratio = torch.ones(out_ch)
    s_a, zp = _act_qparams(st.lo, st.hi, a_ratio)
    wq, _ = fq_w(w_ratio)
    err0 = _rel_err(F.linear(_fq_act(x, s_a, zp), wq, b), ref)
    if config.search != "minmax":
        for _ in range(config.search_rounds):
            # weights, with the current input quantizer (per output channel when the granularity
            # allows: given the input, output channels do not interact)
            xq = _fq_act(x, s_a, zp)
            best_err = torch.full((out_ch,), float("inf"))
            for r in ratios:
                e = err(xq, fq_w(torch.full((out_ch,), r))[0])
                if not per_channel:
                    e = e.mean().expand(out_ch)
                better = e < best_err
                w_ratio = torch.where(better, torch.full_like(w_ratio, r), w_ratio)
                best_err = torch.where(better, e, best_err)
            wq, _ = fq_w(w_ratio)
            # input clipping, with the chosen weights
            errs = [float(err(_fq_act(x, *_act_qparams(st.lo, st.hi, r)), wq).mean()) for r in ratios]
            a_ratio = ratios[int(np.argmin(errs))]
            s_a, zp = _act_qparams(st.lo, st.hi, a_ratio)
    wq, scales = fq_w(w_ratio)
    err1 = _rel_err(F.linear(_fq_act(x, s_a, zp), wq, b), ref)
    result = LayerResult(
        name=name,
        kind="conv" if is_conv else "linear",
        post_op="none",
        input_range=(st.lo, st.hi),
        input_scale=s_a,
        input_zero_point=zp,
        act_ratio=float(a_ratio),
        weight_ratio=float(w_ratio.mean()),
        error_minmax=err0,
        error_searched=err1,
    )
    return scales, s_a, zp, result


def _rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y - ref).norm() / ref.norm().clamp(min=1e-12))


# ---------------------------------------------------------------------------------------------
# 5. quantize_


def _find_layers(model: nn.Module, exclude: tuple[str, ...]) -> tuple[dict[str, nn.Module], dict[str, str]]:
    layers: dict[str, nn.Module] = {}
    kept: dict[str, str] = {}
    for name, m in model.get_submodule(ENCODER).named_modules(prefix=ENCODER):
        if isinstance(m, nn.Conv2d | nn.Linear) and type(m) in (nn.Conv2d, nn.Linear):
            if any(fnmatch.fnmatchcase(name, p) for p in exclude):
                kept[name] = "excluded by the config"
            elif isinstance(m, nn.Conv2d) and not can_quantize_conv(m):
                kept[name] = (
                    f"grouped/depthwise convolution (groups={m.groups}): slower in int8 here"
                    if m.groups > 1
                    else "padding mode or string padding not supported by the int8 kernel"
                )
            else:
                layers[name] = m
    return layers, kept


def _check_quantizable(model: nn.Module, config: QuantConfig) -> None:
    """Raises when ``config`` is not a PyTorch recipe, int8 kernels are missing, or ``model`` cannot be quantized."""
    if not isinstance(config, TinySamPTQConfig):
        raise TypeError(
            f"quantize_ runs PyTorch recipes (TinySamPTQConfig); for {type(config).__name__} use "
            "leansam.compress.quantize_onnx"
        )
    if not int8_kernels_available():
        raise RuntimeError(
            "this PyTorch build has no oneDNN int8 kernels (torch.ops.onednn.qconv2d_pointwise); "
            "real int8 execution needs an x86 CPU build of PyTorch"
        )
    if getattr(model, "_leansam_quant", None) is not None:
        raise ValueError("the model is already quantized")
    if next(model.parameters()).device.type != "cpu":
        raise RuntimeError("int8 quantization runs on the CPU: move the model there first (model.cpu())")


def _calibration_set(
    calib: str | Path | list[np.ndarray] | CalibrationSet | None, config: QuantConfig
) -> CalibrationSet:
    """The calibration images: ``calib``, else ``config.calib_images`` (an InputError when neither is given)."""
    source = calib if calib is not None else config.calib_images
    if source is None:
        from ..io import InputError

        raise InputError("no calibration images: give a folder (calib_images / --calib) or a list of images")
    return load_calibration(source, config.num_calib)


def _quantize_layer(
    name: str, layer: nn.Module, stats: _LayerStats, config: TinySamPTQConfig, post: str, report: QuantReport
) -> nn.Module:
    """The int8 module of one conv / linear (scales searched on its calibration samples), post-op ``post``."""
    scales, s_a, zp, res = _search_layer(name, layer, stats, config)
    qmax = 2 ** (config.w_bits - 1) - 1
    w = layer.weight.detach().float()
    wq = (w / scales.reshape((-1,) + (1,) * (w.ndim - 1))).round().clamp(-qmax, qmax).to(torch.int8)
    res.post_op = post
    q = Int8Conv2d.like(layer, post) if isinstance(layer, nn.Conv2d) else Int8Linear.like(layer, post)
    q.set_quantization(wq, scales, layer.bias.detach() if layer.bias is not None else None, s_a, zp)
    report.layers.append(res)
    return q


def quantize_(
    model: nn.Module,
    config: QuantConfig,
    calib: str | Path | list[np.ndarray] | CalibrationSet | None = None,
    *,
    log: Any = None,
) -> QuantReport:
    """Quantizes ``model`` (a :class:`leansam.Sam`) in place with TinySAM's recipe; returns the report.

    Args:
        model: the fp32 model (its image encoder is quantized; it must stay on the CPU).
        config: a :class:`TinySamPTQConfig` (ONNX Runtime configs: :func:`leansam.compress.quantize_onnx`).
        calib: calibration images: a folder, a list of H x W x 3 uint8 RGB arrays, or a
            :class:`CalibrationSet`; None uses ``config.calib_images``.
        log: optional ``callable(str)`` for progress lines.

    The model is changed in place; if an error is raised after calibration started, its
    BatchNorms may already be folded (the fp32 model is then unchanged in function).

    Raises:
        TypeError: not a PyTorch config.
        leansam.io.InputError: no calibration images, or an unreadable one.
        RuntimeError: this PyTorch build has no x86 int8 kernels, or the model is not on the CPU.
    """
    _check_quantizable(model, config)
    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    cal = _calibration_set(calib, config)
    model.eval()
    steps = prepare_float(model)
    inputs = cal.inputs(model)
    layers, kept = _find_layers(model, config.exclude)
    acts = {n: m for n, m in model.get_submodule(ENCODER).named_modules(prefix=ENCODER) if activation_kind(m)}
    others = {n: model.get_submodule(n) for n in kept}
    say(f"calibrating {len(layers)} layers on {len(inputs)} images")
    stats, consumers = _calibrate(model, layers, others, acts, inputs, config)
    for name in [n for n in layers if stats[n].calls == 0]:
        kept[name] = "not run by the encoder on the calibration images"
        others[name] = layers.pop(name)

    report = QuantReport(
        model=str(getattr(model, "name", "") or type(model).__name__),
        method=config.method,
        config=config.to_dict(),
        calibration=cal.names,
        prepare=steps,
        kept_float=kept,
    )
    plan, chains = {}, {}
    if config.fuse_activations:
        plan, chains = _decide_fusions(model, stats, consumers, layers, others, acts, inputs[0], report)

    qmodules: dict[str, nn.Module] = {}
    for i, (name, layer) in enumerate(layers.items()):
        post = activation_kind(model.get_submodule(plan[name])) if name in plan else "none"
        qmodules[name] = _quantize_layer(name, layer, stats[name], config, post, report)
        if (i + 1) % 10 == 0:
            say(f"searched {i + 1}/{len(layers)} layers")
        stats[name].samples.clear()  # free the samples as we go
    for name, q in qmodules.items():
        if name not in plan:
            _set_module(model, name, q)
    _apply_fusion(
        model,
        plan,
        lambda n, k: qmodules[n] if n in qmodules else FloatWithActivation(model.get_submodule(n), k),
    )
    for p, q in chains.items():
        qmodules[p].link_output(qmodules[q])
    report.fused = dict(plan)
    report.handoffs = dict(chains)
    report.seconds = time.perf_counter() - t0
    model._leansam_quant = report.to_dict()
    return report
