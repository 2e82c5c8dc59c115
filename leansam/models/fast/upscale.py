"""The mask decoder's upscaling and mask projection, channels-last (inference).

Same function as the reference ``output_upscaling`` followed by ``hyper_in @ upscaled``: each
kernel-2 stride-2 transposed convolution is one matrix product whose output columns are ordered
(dy, dx, channel), so the per-pixel norm works on the last dimension and only the final M-channel
logits are permuted into image layout. On large grids it runs one prompt at a time and a few grid
rows at a time, so every intermediate stays small (docs/performance.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..mask_decoder import MaskDecoder
from .factored import FactoredBatch, FactoredKeys

ImageTokens = torch.Tensor | FactoredKeys | FactoredBatch


def norm_act(decoder: MaskDecoder, up: torch.Tensor, per_prompt: int) -> torch.Tensor:
    """The upscaling's norm and first activation on channels-last ... x C/4 features, ``per_prompt``
    elements per prompt (sizes passed in as Python ints: the ONNX tracer needs them constant)."""
    norm, act = decoder.output_upscaling[1], decoder.output_upscaling[2]
    if isinstance(norm, nn.GroupNorm):  # EfficientSAM: statistics over channels and pixels
        flat = F.layer_norm(up.reshape(-1, per_prompt), (per_prompt,), eps=norm.eps).view_as(up)
        return act(flat * norm.weight + norm.bias)
    c1 = decoder.output_upscaling[0].out_channels
    return act(F.layer_norm(up, (c1,), norm.weight, norm.bias, norm.eps))


def upscale_batched(
    decoder: MaskDecoder,
    src: torch.Tensor,
    h: int,
    w: int,
    hyper_in: torch.Tensor,
    high_res_features: list[torch.Tensor] | None,
) -> torch.Tensor:
    """Image tokens B x h*w x C and ``hyper_in`` B x M x C/8 -> mask logits B x M x 4h x 4w, all at once."""
    b = src.shape[0]  # not len(src): the ONNX tracer keeps shapes symbolic but bakes len() in
    dc1, _, _, dc2, act2 = decoder.output_upscaling
    c1, c2 = dc1.out_channels, dc2.out_channels
    feat_s0 = feat_s1 = None
    if high_res_features is not None:
        f0, f1 = high_res_features  # Bf x c2 x 4h x 4w, Bf x c1 x 2h x 2w (Bf = 1 or B)
        feat_s1 = f1.reshape(-1, c1, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1)
        feat_s0 = f0.reshape(-1, c2, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1)
    w1 = dc1.weight.permute(0, 2, 3, 1).reshape(dc1.in_channels, 4 * c1)
    up = torch.addmm(dc1.bias.repeat(4), src.reshape(-1, src.shape[-1]), w1).view(b, h, w, 2, 2, c1)
    up = norm_act(decoder, up if feat_s1 is None else up + feat_s1, up[0].numel())
    w2 = dc2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
    up = torch.addmm(dc2.bias.repeat(4), up.reshape(-1, c1), w2).view(b, h, w, 2, 2, 2, 2, c2)
    up = act2(up if feat_s0 is None else up + feat_s0)
    # B x (h w dy1 dx1 dy2 dx2) x C/8  @  B x C/8 x M
    masks = torch.bmm(up.view(b, -1, c2), hyper_in.transpose(1, 2))
    m = hyper_in.shape[1]
    masks = masks.view(b, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
    return masks.reshape(b, m, 4 * h, 4 * w)


def upscale_in_chunks(
    decoder: MaskDecoder,
    src: ImageTokens,
    h: int,
    w: int,
    hyper_in: torch.Tensor,
    high_res_features: list[torch.Tensor] | None,
    chunk_tokens: int,
) -> torch.Tensor:
    """:func:`upscale_batched` one prompt at a time, the second convolution ``chunk_tokens`` tokens of
    the 2h x 2w grid at a time (eager inference only).

    The first convolution's output is laid out as a raster of the 2h x 2w grid, and the second is
    evaluated for even and odd output rows separately (half of its weight columns each), so each
    chunk's logits are whole image rows: writing them out is a strided copy of 4w-long runs instead
    of a 7-d permutation. Same arithmetic as the batched form.
    """
    dc1, _, _, dc2, act2 = decoder.output_upscaling
    c1, c2 = dc1.out_channels, dc2.out_channels
    b, m = len(src), hyper_in.shape[1]
    w1 = dc1.weight.permute(0, 2, 3, 1).reshape(dc1.in_channels, 4 * c1)  # columns (dy1, dx1, c1)
    b1 = dc1.bias.repeat(4)
    w2 = dc2.weight.permute(2, 0, 3, 1).reshape(2, c1, 2 * c2)  # [dy2]: c1 x (dx2, c2), contiguous
    b2 = dc2.bias.repeat(2)
    f0 = f1 = None
    if high_res_features is not None:
        f0, f1 = high_res_features  # Bf x c2 x 4h x 4w, Bf x c1 x 2h x 2w (Bf = 1 or B)
        f0 = f0.permute(0, 2, 3, 1).unflatten(1, (2 * h, 2))  # Bf x 2h x dy2 x 4w x c2
        f1 = f1.permute(0, 2, 3, 1)  # Bf x 2h x 2w x c1
    out = hyper_in.new_empty(b, m, 2 * h, 2, 4 * w)  # rows 2 * y1 + dy2
    rows = max(1, chunk_tokens // (2 * w))  # rows of the 2h x 2w grid per chunk
    factored = isinstance(src, FactoredKeys | FactoredBatch)
    for i in range(b):
        up = src[i : i + 1].linear(w1, b1, id(dc1)) if factored else torch.addmm(b1, src[i], w1)
        # (y, x, dy1, dx1, c1) -> raster (2y + dy1, 2x + dx1) x c1
        up = up.view(h, w, 2, 2, c1).transpose(1, 2).reshape(2 * h, 2 * w, c1)
        if f1 is not None:
            up = up + f1[i if f1.shape[0] > 1 else 0]
        up = norm_act(decoder, up, up.numel()).view(2 * h * 2 * w, c1)
        for y0 in range(0, 2 * h, rows):
            y1 = min(2 * h, y0 + rows)
            chunk = up[y0 * 2 * w : y1 * 2 * w]
            for dy in (0, 1):
                y = torch.addmm(b2, chunk, w2[dy]).view(y1 - y0, 4 * w, c2)  # columns 2x + dx2
                if f0 is not None:
                    y = y + f0[i if f0.shape[0] > 1 else 0, y0:y1, dy]
                logits = hyper_in[i] @ act2(y).view(-1, c2).T  # M x (rows * 4w)
                out[i, :, y0:y1, dy].copy_(logits.view(m, y1 - y0, 4 * w))
    return out.view(b, m, 4 * h, 4 * w)
