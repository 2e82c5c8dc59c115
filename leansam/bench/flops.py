"""Parameter and MAC counts, from ``torch.utils.flop_counter.FlopCounterMode``.

MACs = FLOPs / 2 (the counter counts a multiply-add as 2 FLOPs). Counted ops are the
counter's registry (matmuls, convolutions, attention kernels); element-wise ops, norms and
interpolation are not counted, as in the published tables.

Attention: on CPU, ``F.scaled_dot_product_attention`` dispatches to
``aten._scaled_dot_product_flash_attention_for_cpu``, which torch's counter does not know
(it would count 0); :data:`SDPA_MAPPING` adds it (and the fused-overrideable variant) with
the standard formula ``2 x B x H x L x S x (E + Ev)`` FLOPs. On the meta device SDPA decomposes
into two ``bmm`` which the counter already counts, so both devices give the same number.

Counting needs no weights: :func:`model_macs` builds the architecture on the ``meta`` device
(no memory, no initialisation), so even SAM ViT-H is counted in seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..models.sam import Sam


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_mapping() -> dict[Any, Any]:
    aten = torch.ops.aten
    mapping = {}
    for name in (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_fused_attention_overrideable",
    ):
        op = getattr(aten, name, None)
        if op is not None:
            mapping[op] = _sdpa_flops
    return mapping


#: Extra flop formulas for attention kernels torch's counter misses (see the module docstring).
SDPA_MAPPING: dict[Any, Any] = _sdpa_mapping()


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts CPU attention kernels."""
    return FlopCounterMode(display=False, custom_mapping=SDPA_MAPPING)


@dataclass(frozen=True)
class ParamCounts:
    """``nn.Parameter`` counts (buffers excluded, as ``ModelInfo.n_params``)."""

    image_encoder: int
    prompt_decoder: int  # prompt encoder + mask decoder
    total: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class MacCounts:
    """Multiply-accumulates of one image at the model's native input size, with ``n_boxes`` box prompts.

    ``image_encoder`` is ``Sam.encode_image`` (for SAM 2 including the decoder's projection of the
    high-resolution features, which runs once per image); ``prompt_decoder`` is the prompt encoder
    plus mask decoder (low-res logits, no upscaling).
    """

    image_encoder: int
    prompt_decoder: int
    input_size: int
    n_boxes: int

    @property
    def total(self) -> int:
        return self.image_encoder + self.prompt_decoder

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def param_counts(model: Sam) -> ParamCounts:
    """Parameters of the image encoder, of the prompt encoder + mask decoder, and in all."""
    enc = sum(p.numel() for p in model.image_encoder.parameters())
    dec = sum(p.numel() for p in model.prompt_encoder.parameters()) + sum(
        p.numel() for p in model.mask_decoder.parameters()
    )
    total = sum(p.numel() for p in model.parameters())
    return ParamCounts(enc, dec, total)


def count_macs(fn: Any) -> int:
    """MACs (FLOPs / 2) of calling ``fn()`` once, under ``torch.no_grad``."""
    with torch.no_grad(), flop_counter() as counter:
        fn()
    return int(counter.get_total_flops()) // 2


def model_macs(model: Sam, n_boxes: int = 1, multimask_output: bool = False) -> MacCounts:
    """MACs of ``model`` for one image at its native input size and ``n_boxes`` box prompts.

    Works on any device, ``meta`` included (see :func:`build_meta`).
    """
    s = model.transform.encoder_size
    dev = model.device
    dtype = next(model.parameters()).dtype
    x = torch.zeros(1, 3, s, s, device=dev, dtype=dtype)
    holder: dict[str, Any] = {}

    def encode() -> None:
        holder["f"] = model.encode_image(x)

    # The counter's module tracker trips over parameter views made under no_grad (they keep
    # requires_grad without a grad_fn): count with gradients switched off, then restore the flags.
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    # Count the decoder as published (the reference forward): the fast decoder (leansam.models.fast)
    # is an execution strategy with a per-image setup, not the architecture.
    impl = model.decoder_impl
    model.decoder_impl = "reference"
    try:
        enc = count_macs(encode)
        frame = model.transform.prompt_frame
        boxes = torch.tensor([[0.1, 0.1, 0.6, 0.6]], device=dev).repeat(n_boxes, 1) * frame
        points = model.prepare_prompts(None, None, boxes, (frame, frame))
        dec = count_macs(lambda: model.decode(holder["f"], points, None, multimask_output))
    finally:
        model.decoder_impl = impl
        for p in params:
            p.requires_grad_(True)
    return MacCounts(enc, dec, s, n_boxes)


def build_meta(name: str) -> Sam:
    """The architecture of a registered model on the ``meta`` device (shapes only, no memory)."""
    from ..registry import get_model_info

    with torch.device("meta"):
        return get_model_info(name).build()
