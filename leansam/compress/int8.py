"""Int8 layers that run real int8 kernels on x86 CPUs (oneDNN, through PyTorch's ``onednn`` ops).

What executes
-------------

:class:`Int8Conv2d` and :class:`Int8Linear` quantize their fp32 input to uint8 (one scale and zero
point per tensor, fixed at calibration), multiply it with int8 weights (symmetric, one scale per
output channel, or one per layer broadcast to every channel) in
``torch.ops.onednn.qconv2d_pointwise`` / ``qlinear_pointwise`` (u8 x s8 -> s32 accumulation,
AVX512-VNNI / AMX where the CPU has them) and get the result rescaled to fp32, with the fp32 bias
and an optional activation fused as a oneDNN post-op. These are the kernels PyTorch's own x86
quantization (PT2E + Inductor) lowers to; nothing is fake-quantized at run time.

Why these ops (measured on this project's Xeon with AMX, torch 2.13, see docs/compression.md):
the legacy ``torch.ops.quantized`` ops need quantized tensors in and out (an extra dequantize
pass per layer) and the ``onednn`` quantized engine crashes on per-channel weights here;
``torch._int_mm`` is 2-D only and slower than these kernels for convolutions. Depthwise
convolutions are left in fp32: the int8 kernel was slower than fp32 in channels-last for most
shapes measured.

Tensor conventions: :class:`Int8Conv2d` takes B x C x H x W (any memory format) and returns
B x O x H' x W' in channels-last memory format; :class:`Int8Linear` takes ... x K and returns
... x N. Both run on CPU only.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CONV_POST_OPS",
    "LINEAR_POST_OPS",
    "FloatWithActivation",
    "FusedActivation",
    "Int8Conv2d",
    "Int8Linear",
    "activation_kind",
    "can_quantize_conv",
    "int8_kernels_available",
    "quantize_uint8",
]

#: Post-ops an :class:`Int8Conv2d` can apply (oneDNN fuses relu/hardswish; GELU runs in place after).
CONV_POST_OPS = ("none", "relu", "hardswish", "gelu", "gelu_tanh")
#: Post-ops an :class:`Int8Linear` fuses in the oneDNN kernel.
LINEAR_POST_OPS = ("none", "relu", "gelu", "gelu_tanh")

# torch.quantize_per_tensor warns (once per process, from C++) that quantized dtypes are
# deprecated; it is used only as a fast fp32 -> uint8 kernel below (the quantized tensor never
# leaves quantize_uint8). Spend that one warning here, silenced.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.quantize_per_tensor(torch.zeros(1), 1.0, 0, torch.quint8)


def int8_kernels_available() -> bool:
    """True when this PyTorch build has the oneDNN int8 convolution / linear ops (x86 builds)."""
    try:
        return torch.backends.mkldnn.is_available() and all(
            hasattr(torch.ops.onednn, op)
            for op in ("qconv_prepack", "qconv2d_pointwise", "qlinear_prepack", "qlinear_pointwise")
        )
    except (AttributeError, RuntimeError):
        return False


def quantize_uint8(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """``clamp(round(x / scale) + zero_point, 0, 255)`` as a uint8 tensor of x's shape and strides.

    The kernel evaluates ``x * (1 / scale) + zero_point`` as one float32 fused multiply-add before
    rounding half to even, so a value within an ulp of a .5 tie may round one step from exact division.

    One pass of ATen's vectorised quantize kernel; the result shares that kernel's storage
    (a plain uint8 view of it) instead of paying the copy ``int_repr()`` makes.
    """
    q = torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)
    return torch.empty(0, dtype=torch.uint8, device=x.device).set_(
        q.untyped_storage(), q.storage_offset(), q.shape, q.stride()
    )


def activation_kind(module: nn.Module) -> str | None:
    """The post-op name of an activation module (``relu``, ``gelu``, ``gelu_tanh``, ``hardswish``), else None."""
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.GELU):
        return "gelu_tanh" if module.approximate == "tanh" else "gelu"
    if isinstance(module, nn.Hardswish):
        return "hardswish"
    return None


def _apply_activation(y: torch.Tensor, kind: str, inplace: bool = False) -> torch.Tensor:
    # In place on a layer's fresh output saves allocating (and page-faulting) a second buffer of
    # its size; the values are the same as out of place (same ATen kernels).
    if kind == "relu":
        return torch.relu_(y) if inplace else F.relu(y)
    if kind == "gelu":
        return torch.ops.aten.gelu_(y) if inplace else F.gelu(y)
    if kind == "gelu_tanh":
        return torch.ops.aten.gelu_(y, approximate="tanh") if inplace else F.gelu(y, approximate="tanh")
    if kind == "hardswish":
        return F.hardswish(y, inplace=True) if inplace else F.hardswish(y)
    return y


class _Int8Base(nn.Module):
    """Shared state: int8 weight, its per-output-channel scales, fp32 bias, the input quantizer.

    Buffers (all in the state dict): ``weight_int8`` (int8), ``weight_scale`` (O, fp32),
    ``bias`` (O, fp32; absent without a bias), ``input_scale`` (fp32 scalar), ``input_zero_point``
    (int32 scalar). The oneDNN packed weight is derived from them on first use and after every
    ``load_state_dict`` (it is an opaque, unserialisable tensor).
    """

    def __init__(self, weight_shape: tuple[int, ...], bias: bool, post_op: str) -> None:
        super().__init__()
        out = weight_shape[0]
        self.register_buffer("weight_int8", torch.zeros(weight_shape, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out, dtype=torch.float32))
        self.register_buffer("bias", torch.zeros(out, dtype=torch.float32) if bias else None)
        self.register_buffer("input_scale", torch.tensor(1.0, dtype=torch.float32))
        self.register_buffer("input_zero_point", torch.tensor(0, dtype=torch.int32))
        self.post_op = post_op
        self._packed: torch.Tensor | None = None
        self._qparams: tuple[float, int] | None = None

    def set_quantization(
        self,
        weight_int8: torch.Tensor,
        weight_scale: torch.Tensor,
        bias: torch.Tensor | None,
        input_scale: float,
        input_zero_point: int,
    ) -> None:
        """Sets the quantized weight, its scales (O), the fp32 bias and the input quantizer."""
        with torch.no_grad():
            self.weight_int8.copy_(weight_int8)
            self.weight_scale.copy_(weight_scale.float())
            if self.bias is not None:
                self.bias.copy_(bias.float())
            self.input_scale.fill_(float(input_scale))
            self.input_zero_point.fill_(int(input_zero_point))
        self._packed = None

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._packed = None  # new weights or quantizer: repack on the next call

    def __getstate__(self) -> dict[str, Any]:
        # The packed weight is an opaque oneDNN tensor (no storage to copy or pickle): copies and
        # pickles repack on their first call.
        state = self.__dict__.copy()
        state["_packed"] = None
        return state

    def _apply(self, fn: Any, recurse: bool = True) -> nn.Module:
        out = super()._apply(fn, recurse)
        self._packed = None
        return out

    def _prepare(self, x: torch.Tensor) -> tuple[float, int]:
        if not x.is_cpu:
            raise RuntimeError(
                f"{type(self).__name__} runs on CPU only (int8 oneDNN kernels); got {x.device}"
            )
        if self._packed is None:
            # Everything the kernel call needs is computed once here (the call itself costs tens of
            # microseconds, comparable to a small layer's arithmetic).
            self._qparams = (float(self.input_scale), int(self.input_zero_point))
            self._packed = self._pack(*self._qparams)
            self._zero_points = torch.zeros(self.weight_scale.shape[0], dtype=torch.int32)
            self._static_args()
        return self._qparams

    def _static_args(self) -> None:
        pass

    def _pack(self, x_scale: float, x_zp: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def bind_activation(self, consumer: FusedActivation | None) -> None:
        """The :class:`FusedActivation` this layer's ``post_op`` stands in for (marks outputs for it)."""
        _bind(self, consumer)

    def link_output(self, consumer: _Int8Base | None) -> None:
        """Hand the (activated) output to the int8 layer ``consumer`` as uint8, already quantized
        with ``consumer``'s input quantizer (one fp32 write and one quantize pass saved). Only
        valid when ``consumer`` is the sole user of this layer's output (checked by quantize_)."""
        object.__setattr__(self, "_next", consumer)
        self._packed = None

    def _output_args(self) -> tuple[float, int, torch.dtype]:
        nxt = getattr(self, "_next", None)
        if nxt is None:
            return 1.0, 0, torch.float32
        return float(nxt.input_scale), int(nxt.input_zero_point), torch.uint8

    def _input_uint8(self, x: torch.Tensor, s: float, zp: int) -> torch.Tensor:
        # uint8 input = the output of a linked producer, quantized with this layer's (s, zp)
        return x if x.dtype == torch.uint8 else quantize_uint8(x, s, zp)

    def dequantized_weight(self) -> torch.Tensor:
        """The fp32 weight the int8 kernel effectively multiplies with (``weight_int8 * scale``)."""
        shape = (-1,) + (1,) * (self.weight_int8.ndim - 1)
        return self.weight_int8.float() * self.weight_scale.reshape(shape)


class Int8Conv2d(_Int8Base):
    """``nn.Conv2d`` (zero padding, numeric padding) executed by oneDNN's int8 convolution.

    Input B x C x H x W fp32; output B x O x H' x W' fp32 in channels-last memory format.
    ``post_op``: one of :data:`CONV_POST_OPS` applied to the output (``relu`` / ``hardswish`` fused
    in the kernel; ``gelu`` / ``gelu_tanh`` in place right after it, saving the extra output buffer).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        dilation: tuple[int, int] = (1, 1),
        groups: int = 1,
        bias: bool = True,
        post_op: str = "none",
    ) -> None:
        if post_op not in CONV_POST_OPS:
            raise ValueError(f"post_op must be one of {CONV_POST_OPS}, not {post_op!r}")
        super().__init__((out_channels, in_channels // groups, *kernel_size), bias, post_op)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)
        self.padding, self.dilation, self.groups = tuple(padding), tuple(dilation), groups

    @classmethod
    def like(cls, conv: nn.Conv2d, post_op: str = "none") -> Int8Conv2d:
        """An (unquantized) Int8Conv2d with the hyper-parameters of ``conv``."""
        if not can_quantize_conv(conv):
            raise ValueError(f"cannot run {conv} as an int8 convolution")
        return cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            post_op,
        )

    def _pack(self, x_scale: float, x_zp: int) -> torch.Tensor:
        return torch.ops.onednn.qconv_prepack(
            self.weight_int8,
            self.weight_scale,
            x_scale,
            x_zp,
            list(self.stride),
            list(self.padding),
            list(self.dilation),
            self.groups,
            None,
        )

    def _static_args(self) -> None:
        self._geometry = (list(self.stride), list(self.padding), list(self.dilation), self.groups)
        self._fused = self.post_op if self.post_op in ("relu", "hardswish") else "none"
        self._out = self._output_args()
        if self._out[2] == torch.uint8 and self._fused != self.post_op:
            raise ValueError("a convolution with an in-place GELU cannot hand over uint8 output")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, zp = self._prepare(x)
        stride, padding, dilation, groups = self._geometry
        y = torch.ops.onednn.qconv2d_pointwise(
            self._input_uint8(x, s, zp),
            s,
            zp,
            self._packed,
            self.weight_scale,
            self._zero_points,
            self.bias,
            stride,
            padding,
            dilation,
            groups,
            *self._out,
            self._fused,
            [],
            "",
        )
        if self.post_op in ("gelu", "gelu_tanh"):
            _apply_activation(y, self.post_op, inplace=True)
        return _mark(self, y)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, post_op={self.post_op}"
        )


_LINEAR_POST = {
    "none": ("none", ""),
    "relu": ("relu", ""),
    "gelu": ("gelu", "none"),
    "gelu_tanh": ("gelu", "tanh"),
}


class Int8Linear(_Int8Base):
    """``nn.Linear`` executed by oneDNN's int8 matmul. Input ... x K fp32 -> ... x N fp32.

    ``post_op``: one of :data:`LINEAR_POST_OPS`, fused in the kernel.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, post_op: str = "none") -> None:
        if post_op not in LINEAR_POST_OPS:
            raise ValueError(f"post_op must be one of {LINEAR_POST_OPS}, not {post_op!r}")
        super().__init__((out_features, in_features), bias, post_op)
        self.in_features, self.out_features = in_features, out_features

    @classmethod
    def like(cls, linear: nn.Linear, post_op: str = "none") -> Int8Linear:
        """An (unquantized) Int8Linear with the shape of ``linear``."""
        return cls(linear.in_features, linear.out_features, linear.bias is not None, post_op)

    def _pack(self, x_scale: float, x_zp: int) -> torch.Tensor:
        return torch.ops.onednn.qlinear_prepack(self.weight_int8, None)

    def _static_args(self) -> None:
        self._post = _LINEAR_POST[self.post_op]
        self._out = self._output_args()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, zp = self._prepare(x)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        name, alg = self._post
        y = torch.ops.onednn.qlinear_pointwise(
            self._input_uint8(x2, s, zp),
            s,
            zp,
            self._packed,
            self.weight_scale,
            self._zero_points,
            self.bias,
            *self._out,
            name,
            [],
            alg,
        )
        return _mark(self, y.reshape(*lead, self.out_features))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, post_op={self.post_op}"


def can_quantize_conv(conv: nn.Module) -> bool:
    """Dense 2-D convolutions with zero, numeric padding (what the int8 kernel computes)."""
    return (
        type(conv) is nn.Conv2d
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


class FusedActivation(nn.Module):
    """Stands in for an activation module whose work a preceding int8 layer already did.

    The fused layer marks its output tensor with ``_leansam_fused_act = <this module>``; this
    module passes such a tensor through (and clears the mark), and applies the original
    activation to anything else, so an activation module that is also called on other tensors
    (TinyViT's MBConv reuses one GELU three times) keeps working.
    """

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(x, "_leansam_fused_act", None) is self:
            del x._leansam_fused_act
            return x
        return self.act(x)


def _bind(layer: nn.Module, consumer: FusedActivation | None) -> None:
    # A plain attribute, not a submodule: the consumer is registered where it lives in the model.
    object.__setattr__(layer, "_consumer", consumer)


def _mark(layer: nn.Module, y: torch.Tensor) -> torch.Tensor:
    consumer = getattr(layer, "_consumer", None)
    if consumer is not None:
        y._leansam_fused_act = consumer
    return y


class FloatWithActivation(nn.Module):
    """An fp32 layer followed by its activation, applied in place on the layer's fresh output.

    Used for layers that stay fp32 (depthwise convolutions) when an activation module consumes
    all of their output; exact (same kernels as the unfused model, checked on a calibration image).
    """

    def __init__(self, layer: nn.Module, kind: str) -> None:
        super().__init__()
        if kind not in CONV_POST_OPS:
            raise ValueError(f"kind must be one of {CONV_POST_OPS}, not {kind!r}")
        self.layer, self.kind = layer, kind

    def bind_activation(self, consumer: FusedActivation | None) -> None:
        _bind(self, consumer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _mark(self, _apply_activation(self.layer(x), self.kind, inplace=True))

    def extra_repr(self) -> str:
        return f"kind={self.kind}"
