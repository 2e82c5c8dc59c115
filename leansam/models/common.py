"""Small layers shared by every model family.

Only pieces whose state_dict key names are identical across families live here
(``LayerNorm2d`` weight/bias, ``MLPBlock`` lin1/lin2, ``MLP`` layers.N), so an
official checkpoint of any family loads into them unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..transforms import interpolation_matrix


def eager() -> bool:
    """Not tracing, exporting or compiling: Python loops, caches and in-place writes are allowed."""
    return not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling())


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a B x C x H x W tensor.

    Keys: ``weight`` (C), ``bias`` (C). ``eps`` differs between families
    (SAM 1e-6, EfficientViT-SAM 1e-6, ...), so it is a constructor argument.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cl = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        onnx = x.dim() == 4 and torch.onnx.is_in_onnx_export()
        if (cl and x.dtype == self.weight.dtype and eager()) or onnx:
            # One layer_norm over the channels as the innermost dimension instead of strided
            # reductions over NCHW's channel axis: in eager mode on channels-last input (leansam's own
            # encoders), and in ONNX graphs (one LayerNormalization between two transposes), where
            # ONNX Runtime runs the explicit form's ReduceMean slowly.
            y = F.layer_norm(x.permute(0, 2, 3, 1), (self.weight.shape[0],), self.weight, self.bias, self.eps)
            return y.permute(0, 3, 1, 2)
        # Computed explicitly (not via permute + F.layer_norm) to keep the
        # reduction order of the official implementations: parity is checked at 1e-4.
        u = x.mean(1, keepdim=True)
        d = x - u
        s = d.pow(2).mean(1, keepdim=True)
        w, b = self.weight[:, None, None], self.bias[:, None, None]
        grad = torch.is_grad_enabled() and (d.requires_grad or w.requires_grad)
        if grad or not eager() or d.dtype != w.dtype:
            return w * (d / torch.sqrt(s + self.eps)) + b
        # Inference: the same operations in place on ``d`` (bitwise equal, one full-size temporary).
        return d.div_(torch.sqrt(s + self.eps)).mul_(w).add_(b)


class MLPBlock(nn.Module):
    """Two-layer transformer MLP. Keys: ``lin1``, ``lin2``. Input ... x dim."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """``num_layers`` Linear layers with an activation between them. Keys: ``layers.N``.

    Used by the mask decoder's hypernetworks and IoU head.
    ``sigmoid_output`` applies a sigmoid to the result (SAM 2's IoU head).
    ``act`` is the activation between layers: ReLU (SAM, default) or e.g. ``F.gelu``
    (EfficientSAM's decoder heads).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
        act: Callable[[torch.Tensor], torch.Tensor] = F.relu,
    ) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.sigmoid_output = sigmoid_output
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


def bicubic_as_matmuls(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bicubic", align_corners=False)`` as two matrix products.

    For ONNX export (EfficientViT-SAM's neck, EdgeSAM's fusion): ONNX Runtime's cubic ``Resize`` is
    slow on CPU (EfficientViT-SAM-L0: its two took ~15 % of the encoder). The matrices are
    :func:`leansam.transforms.interpolation_matrix`: PyTorch's own weights; only the order of the
    fp32 sums differs. B x C x h x w -> B x C x H x W.
    """
    (h, w), (oh, ow) = x.shape[-2:], size
    rows = interpolation_matrix(h, oh, "bicubic", x.dtype, x.device)
    cols = interpolation_matrix(w, ow, "bicubic", x.dtype, x.device)
    return rows @ x @ cols.T


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Folds an eval-mode BatchNorm2d into the preceding Conv2d.

    Returns a new Conv2d (with bias) computing ``bn(conv(x))`` for eval-mode
    statistics. Used by the re-parameterisation methods of the conv families
    (RepViT, EdgeSAM, TinyViT, EfficientViT).
    """
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((conv_bias - bn.running_mean) * scale + bn.bias)
    return fused
