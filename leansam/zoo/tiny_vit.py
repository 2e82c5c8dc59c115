"""TinyViT-5M SAM variants: MobileSAM, TinySAM and Q-TinySAM (one architecture and key layout).

Encoder: :class:`leansam.models.tiny_vit.TinyViT` (``TINY_VIT_5M``); prompt encoder and mask decoder:
SAM's defaults. MobileSAM and TinySAM files load as they are; Q-TinySAM's file goes through
:func:`filter_fn` below.

Q-TinySAM: what the official file is (``tinysam_w8a8.pth``, TinySAM release 2.0, 2023-12-27)
------------------------------------------------------------------------------------

* A whole model saved with ``torch.save(model)``; TinySAM's ``demo_quant.py`` reads it back with
  ``torch.load`` and hands the result to ``SamPredictor``. The pickle names TinySAM's own classes
  (``tinysam.modeling.*``: ``Sam``, ``TinyViT``, ``Conv2d_BN``, ``Attention`` ...) and the
  quantization wrappers of ``tinysam/quantization_layer/layers.py`` under the *top-level* module
  name ``quantization_layer.layers`` (hence the demo's ``sys.path.append("./tinysam")``).
  leansam reads it with :mod:`leansam.pickle_safe` (opt-in ``trust_pickle=True`` /
  ``--trust-pickle``): no class of the file is imported and no code of it runs.
* It is *fake* quantization. The wrappers subclass ``nn.Linear`` / ``nn.Conv2d`` /
  ``nn.ConvTranspose2d`` (``InferQuantLinear``, ``InferQuantLinearPost``, ``InferQuantConv2d``,
  ``InferQuantConvTranspose2d``), so their fp32 ``weight`` / ``bias`` keep the float model's key
  names (``...attn.qkv.weight``), and each calibrated wrapper holds its quantizer state as extra
  *buffers* registered by ``get_parameter``: ``w_interval`` (weight scale), ``a_interval``
  (activation scale), ``a_bias`` (activation offset, convolutions), ``a_neg_interval`` (scale of
  the negative side, post-GELU linears), and the grouping sizes ``n_V``, ``n_H``, ``n_a``,
  ``crb_rows``, ``crb_cols``, ``crb_acts`` (int32). Matrix-product wrappers (``InferQuantMatMul``,
  ``InferQuantMatMulPost``: ``A_interval``, ``B_interval`` with per-group/per-head shapes,
  ``n_G_*``, ``n_V_*``, ``n_H_*``, ``crb_*``, ``pad_*``, and the twin-range ``split`` of the
  post-softmax operand) hold only buffers. Plain attributes: ``mode`` (``"raw"`` = float
  pass-through, ``"quant_forward"`` = fake quantization), ``w_bit`` / ``a_bit`` (``A_bit`` /
  ``B_bit``), ``w_qmax`` = 2**(w_bit-1).
* In ``"quant_forward"`` mode a wrapper computes, in fp32 on every call,
  ``w_sim = clamp(round(w / w_interval), -w_qmax, w_qmax - 1) * w_interval`` (linears first view
  the weight as ``n_V x crb_rows x n_H x crb_cols`` so each block has its own scale; convolutions
  broadcast ``w_interval`` against the weight), leaves the bias in float, fake-quantizes its
  input with the activation quantizer and runs the float op. No int8 kernel is involved.
* The public TinySAM code has no call site for the matmul wrappers: its ``Attention.forward``
  (``tiny_vit_sam.py``, ``transformer.py``) multiplies with ``@``. If the file holds such modules,
  the official demo (which runs the public ``forward`` methods of the pickled classes) does not use
  them; leansam sets their buffers aside like every other quantizer tensor.

What leansam does
-----------------

The registry model ``tinysam_q`` is the float TinyViT-5M SAM (same architecture and keys as
``tinysam``). Its checkpoint filter :func:`filter_fn` takes the flattened pickle, removes every
quantizer buffer (reported as ``LoadReport.set_aside``) and replaces the weight of every calibrated
wrapper (one that has ``w_interval``) by its fake-quantized value ``w_sim`` — exactly the tensor
the official wrapper multiplies with, so the float model runs with the same weights as the
official one (W8, bit for bit) but with float activations (A32).

A flattened state_dict does not carry the wrappers' ``mode`` / ``w_bit`` attributes, so
:func:`filter_fn` assumes what a W8A8 export has: every calibrated wrapper in ``"quant_forward"``
mode with 8-bit weights. :func:`read_q_tinysam` reads the pickle itself and uses the recorded
``mode`` / ``w_qmax`` of every wrapper (a ``"raw"`` wrapper keeps its float weight), and returns
all quantizer state for a future integer path::

    state, quant = read_q_tinysam("tinysam_w8a8.pth")      # only for a file you trust
    model = leansam.build_model("tinysam_q", pretrained=False)
    model.load_state_dict(state)                            # same keys as the official model
    quant["image_encoder.layers.1.blocks.0.attn.qkv"].buffers["w_interval"]

Parity that can be claimed: the weights (fake-quantized where the official wrapper quantizes them)
and every other tensor equal the official model's. Parity that cannot: activation fake-quantization
(inputs of every quantized linear / convolution, and of the matmuls if an internal forward used
them) is not reproduced, so outputs differ from the official Q-TinySAM's by the activation
quantization error (they are those of a W8A32 model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models.sam import Sam
from ..models.tiny_vit import TINY_VIT_5M, TinyViT
from ..registry import ModelInfo, Weights

#: Buffers of the official weight-carrying wrappers (``InferQuantLinear[Post]``, ``InferQuantConv2d``,
#: ``InferQuantConvTranspose2d``), by ``get_parameter`` or ``__init__`` (``a_neg_interval``).
WEIGHT_LAYER_BUFFERS: frozenset[str] = frozenset(
    {
        "w_interval",
        "a_interval",
        "a_bias",
        "a_neg_interval",
        "n_V",
        "n_H",
        "n_a",
        "crb_rows",
        "crb_cols",
        "crb_acts",
    }
)

#: Buffers of the official matrix-product wrappers (``InferQuantMatMul``, ``InferQuantMatMulPost``).
MATMUL_BUFFERS: frozenset[str] = frozenset(
    {"A_interval", "B_interval", "split"}
    | {f"{p}_{s}" for p in ("n_G", "n_V", "n_H") for s in "AB"}
    | {f"{p}_{part}_{s}" for p in ("crb", "pad") for part in ("groups", "rows", "cols") for s in "AB"}
)

#: Every tensor name the quantizers add; none of them is a key of the float model.
QUANTIZER_BUFFERS: frozenset[str] = WEIGHT_LAYER_BUFFERS | MATMUL_BUFFERS

#: Official wrapper class names (``quantization_layer.layers.<name>``) -> leansam's kind.
QUANT_CLASSES: dict[str, str] = {
    "InferQuantLinear": "linear",
    "InferQuantLinearPost": "linear",
    "InferQuantConv2d": "conv",
    "InferQuantConvTranspose2d": "conv",
    "InferQuantMatMul": "matmul",
    "InferQuantMatMulPost": "matmul",
}

_LINEAR_GROUPING = ("n_V", "crb_rows", "n_H", "crb_cols")


@dataclass
class QuantLayer:
    """The quantizer state of one official fake-quant module.

    Attributes:
        path: module path in state_dict keys (``"image_encoder.layers.1.blocks.0.attn.qkv"``).
        buffers: the module's quantizer tensors by name (scales, offsets, group sizes).
        cls: official class name (``"InferQuantLinear"``); ``""`` when read from a flat state_dict.
        mode: recorded ``mode`` (``"quant_forward"`` or ``"raw"``); None when unknown (flat state_dict).
        bits: recorded bit widths (``{"w_bit": 8, "a_bit": 8}`` / ``{"A_bit": 8, "B_bit": 8}``); empty when unknown.
        weight_fake_quantized: whether the returned weight of this module is the fake-quantized one.
    """

    path: str
    buffers: dict[str, torch.Tensor]
    cls: str = ""
    mode: str | None = None
    bits: dict[str, int] = field(default_factory=dict)
    weight_fake_quantized: bool = False

    @property
    def calibrated(self) -> bool:
        """True when the module holds a weight scale (``get_parameter`` was called on it)."""
        return "w_interval" in self.buffers or "A_interval" in self.buffers


def _split_key(key: str) -> tuple[str, str]:
    path, _, name = key.rpartition(".")
    return path, name


def split_quantizer_state(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """Separates quantizer buffers from float tensors: (float state, {module path: {buffer: tensor}}).

    A key is a quantizer buffer when its last component is one of :data:`QUANTIZER_BUFFERS`.
    """
    floats: dict[str, torch.Tensor] = {}
    quant: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        path, name = _split_key(key)
        if name in QUANTIZER_BUFFERS:
            quant.setdefault(path, {})[name] = value
        else:
            floats[key] = value
    return floats, quant


def fake_quantize_weight(
    weight: torch.Tensor, buffers: dict[str, torch.Tensor], qmax: int = 128
) -> torch.Tensor:
    """The weight an official wrapper uses in ``"quant_forward"`` mode: ``clamp(round(w/s), -qmax, qmax-1) * s``.

    ``qmax`` is the wrapper's ``w_qmax`` (2**(w_bit-1); 128 for 8 bits). With the linear grouping
    buffers (``n_V``, ``crb_rows``, ``n_H``, ``crb_cols``) the weight is viewed as
    ``n_V x crb_rows x n_H x crb_cols`` before the scale ``w_interval`` is broadcast (block-wise
    scales); otherwise ``w_interval`` is broadcast against the weight as stored (convolutions).
    Computed in the same order and dtype as the official wrapper, so the result is bit-identical.
    Raises ``ValueError`` when the grouping or the scale does not fit the weight.
    """
    scale = buffers["w_interval"]
    w = weight
    if all(k in buffers for k in _LINEAR_GROUPING):
        n_v, rows, n_h, cols = (int(buffers[k]) for k in _LINEAR_GROUPING)
        if weight.ndim != 2 or (n_v * rows, n_h * cols) != tuple(weight.shape):
            raise ValueError(
                f"weight {tuple(weight.shape)} cannot be grouped as n_V={n_v} x crb_rows={rows} by "
                f"n_H={n_h} x crb_cols={cols}"
            )
        w = weight.reshape(n_v, rows, n_h, cols)
    try:
        q = (w / scale).round().clamp(-qmax, qmax - 1)
        out = q * scale
    except RuntimeError as e:
        raise ValueError(
            f"weight scale of shape {tuple(scale.shape)} does not fit the weight {tuple(w.shape)}"
        ) from e
    if out.shape != w.shape:
        raise ValueError(
            f"weight scale of shape {tuple(scale.shape)} changes the weight shape {tuple(w.shape)}"
        )
    return out.reshape(weight.shape).to(weight.dtype)


def _apply(
    floats: dict[str, torch.Tensor], layers: dict[str, QuantLayer], qmax_of: dict[str, int]
) -> dict[str, torch.Tensor]:
    out = dict(floats)
    for path, layer in layers.items():
        key = f"{path}.weight"
        if path not in qmax_of or "w_interval" not in layer.buffers or key not in out:
            continue
        try:
            out[key] = fake_quantize_weight(out[key], layer.buffers, qmax_of[path])
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from e
        layer.weight_fake_quantized = True
    return out


def filter_fn(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Checkpoint filter of ``tinysam_q``: (float TinySAM state with fake-quantized weights, quantizer keys).

    Every quantizer buffer is set aside. The weight of every module that has a ``w_interval`` is
    replaced by :func:`fake_quantize_weight` of it, assuming (a flat state_dict cannot say
    otherwise) that the wrapper is in ``"quant_forward"`` mode with 8-bit weights — what the W8A8
    release is. Use :func:`read_q_tinysam` to honour the recorded modes and bit widths.
    A plain float state_dict (no quantizer keys) passes through unchanged.
    """
    floats, quant = split_quantizer_state(state)
    if not quant:
        return state, []
    layers = {p: QuantLayer(p, b) for p, b in quant.items()}
    set_aside = [f"{p}.{n}" for p, b in quant.items() for n in b]
    return _apply(floats, layers, dict.fromkeys(layers, 128)), set_aside


# ---------------------------------------------------------------------------------------------
# Reading the pickle itself (recorded modes and bit widths).


_DATA_PARALLEL = {
    ("torch.nn.parallel.data_parallel", "DataParallel"),
    ("torch.nn.parallel.distributed", "DistributedDataParallel"),
}


def _walk(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    """Module path -> recorded stub, with ``DataParallel`` levels skipped (as in the flattened keys)."""
    children = obj.children()
    if (type(obj)._stub_module, type(obj)._stub_name) in _DATA_PARALLEL and "module" in children:
        _walk(children["module"], prefix, out)
        return
    out[prefix.rstrip(".")] = obj
    for name, child in children.items():
        _walk(child, f"{prefix}{name}.", out)


def _int_attr(d: dict[str, Any], name: str) -> int | None:
    v = d.get(name)
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def read_q_tinysam(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, QuantLayer]]:
    """Reads an official Q-TinySAM file safely: (float state_dict for ``tinysam_q``, quantizer state by module).

    The pickle is read with :func:`leansam.pickle_safe.safe_torch_load` (no class of the file is
    imported, no code of it runs; call it only on a file you chose to trust). For every official
    wrapper (:data:`QUANT_CLASSES`) the recorded ``mode``, bit widths and quantizer buffers are
    returned; its weight is fake-quantized (:func:`fake_quantize_weight` with the recorded
    ``w_qmax``) exactly when the wrapper is in ``"quant_forward"`` mode and calibrated. The
    state_dict has the keys of the float model (``DataParallel`` levels removed) and loads strictly
    into ``leansam.build_model("tinysam_q", pretrained=False)``.

    Raises :class:`leansam.pickle_safe.UnsafePickleError` when the pickle asks for anything but
    tensors and module state, :class:`leansam.pickle_safe.PickledCheckpointError` when it holds no
    model, ``ValueError`` when a recorded scale does not fit its weight.
    """
    from ..pickle_safe import PickledCheckpointError, StubObject, module_state_dict, safe_torch_load

    obj = safe_torch_load(path)
    if isinstance(obj, dict):
        obj = next((obj[k] for k in ("model", "module", "net") if isinstance(obj.get(k), StubObject)), obj)
    if not isinstance(obj, StubObject) or not obj.is_module:
        raise PickledCheckpointError(f"{path} does not hold a pickled model")
    floats, quant = split_quantizer_state(module_state_dict(obj))
    modules: dict[str, Any] = {}
    _walk(obj, "", modules)
    layers: dict[str, QuantLayer] = {}
    qmax_of: dict[str, int] = {}
    for mpath, mod in modules.items():
        cls = type(mod)._stub_name
        if cls not in QUANT_CLASSES and mpath not in quant:
            continue
        d = mod.__dict__
        bits = {k: v for k in ("w_bit", "a_bit", "A_bit", "B_bit") if (v := _int_attr(d, k)) is not None}
        mode = d.get("mode") if isinstance(d.get("mode"), str) else None
        layers[mpath] = QuantLayer(mpath, quant.get(mpath, {}), cls=cls, mode=mode, bits=bits)
        kind = QUANT_CLASSES.get(cls)
        # An official weight wrapper quantizes its weight in "quant_forward" mode only; a module of an
        # unknown class that carries a weight scale but no mode gets filter_fn's assumption.
        if kind != "matmul" and (mode == "quant_forward" or (kind is None and mode is None)):
            qmax = _int_attr(d, "w_qmax")
            if qmax is None and "w_bit" in bits:
                qmax = 2 ** (bits["w_bit"] - 1)
            qmax_of[mpath] = qmax if qmax is not None else 128
    return _apply(floats, layers, qmax_of), layers


def quant_keys(layers: dict[str, QuantLayer]) -> list[str]:
    """The sorted state_dict keys of the quantizer buffers in ``layers`` (what :func:`filter_fn` sets aside)."""
    return sorted(f"{p}.{n}" for p, layer in layers.items() for n in layer.buffers)


def build_mobile_sam() -> Sam:
    """MobileSAM: TinyViT-5M encoder with SAM's prompt encoder and mask decoder (all defaults)."""
    return Sam(TinyViT(TINY_VIT_5M))


def build_tinysam() -> Sam:
    """TinySAM (and Q-TinySAM): the same architecture and checkpoint key layout as MobileSAM."""
    return Sam(TinyViT(TINY_VIT_5M))


_TINYSAM_SOURCE = "https://github.com/xinghaochen/TinySAM"
_TINYSAM_PAPER = "TinySAM: Pushing the Envelope for Efficient Segment Anything Model (arXiv:2312.13789)"


def _weights(url: str, source: str, paper: str, pickled_module: bool = False) -> Weights:
    return Weights(
        url=url,
        file_name=url.rsplit("/", 1)[-1],
        sha256=None,  # upstream publishes none; no two independent sources found
        license="Apache-2.0",
        source=source,
        paper=paper,
        pickled_module=pickled_module,
    )


MODELS = (
    ModelInfo(
        name="mobile_sam",
        family="tiny_vit",
        builder=build_mobile_sam,
        weights=_weights(
            "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            "https://github.com/ChaoningZhang/MobileSAM",
            "Faster Segment Anything: Towards Lightweight SAM for Mobile Applications (arXiv:2306.14289)",
        ),
        n_params=10_130_092,
        description="MobileSAM: TinyViT-5M encoder distilled from SAM ViT-H",
    ),
    ModelInfo(
        name="tinysam",
        family="tiny_vit",
        builder=build_tinysam,
        weights=_weights(
            "https://github.com/xinghaochen/TinySAM/releases/download/3.0/tinysam_42.3.pth",
            _TINYSAM_SOURCE,
            _TINYSAM_PAPER,
        ),
        n_params=10_130_092,
        description="TinySAM: TinyViT-5M encoder, full-stage distillation from SAM ViT-H (release 3.0 weights)",
    ),
    ModelInfo(
        name="tinysam_q",
        family="tiny_vit",
        builder=build_tinysam,
        # torch.save(model) of the fake-quant model: needs trust_pickle=True
        weights=_weights(
            "https://github.com/xinghaochen/TinySAM/releases/download/2.0/tinysam_w8a8.pth",
            _TINYSAM_SOURCE,
            _TINYSAM_PAPER,
            pickled_module=True,
        ),
        # Sets the quantizer buffers aside and fake-quantizes the weights with their stored scales
        # (see the module docstring; activations are not quantized).
        checkpoint_filter=filter_fn,
        n_params=10_130_092,
        description="Q-TinySAM: TinySAM W8A8 post-training quantized (release 2.0); run in float, weights fake-quantized",
    ),
)
