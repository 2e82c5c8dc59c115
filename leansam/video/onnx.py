"""Export a tracking model as four ONNX graphs with fixed-size memory banks.

    from leansam.video.onnx import export_video_onnx
    export_video_onnx("efficienttam_ti", "onnx/efficienttam_ti")      # or a loaded VideoModel
    predictor = leansam.VideoPredictor(load_onnx_video_model("onnx/efficienttam_ti"))   # onnx_runtime.py

Graphs (batch 1 = one object; S = input size, h = w = S / 16, C = 256, M = memory slots, P = pointer
slots, both fixed at export):

``image_encoder.onnx``
    ``image`` 1 x 3 x S x S (the video preprocessing) -> ``vision`` 1 x C x h x w (before
    ``no_mem_embed``); SAM 2 also ``high_res_feats_0`` 1 x C/8 x 4h x 4w, ``high_res_feats_1``
    1 x C/4 x 2h x 2w (projected).
``memory_attention.onnx``
    ``vision``; ``memories`` M x 64 x h x w; ``memory_slots`` M int64 (temporal slot 0..num_maskmem-1);
    ``memory_valid`` M float (1 = used, 0 = empty slot); ``pointers`` P x C; ``pointer_offsets`` P float
    (signed frame offset / (window - 1)); ``pointer_valid`` P float -> ``conditioned`` 1 x C x h x w.
    Empty slots are dropped from the attention by a -1e9 logit bias.
``heads.onnx`` (prompt encoder + mask decoder)
    ``features`` 1 x C x h x w (+ the two high-res levels); ``point_coords`` 1 x N x 2 (model frame,
    padding point included), ``point_labels`` 1 x N float; ``mask_input`` 1 x 1 x 4h x 4w with
    ``has_mask_input`` [1] -> ``masks`` 1 x 4 x 4h x 4w and ``iou_predictions`` 1 x 4 for all mask
    tokens, ``object_score_logits`` 1 x 1, ``object_pointers`` 1 x 4 x C (each token's pointer).
``memory_encoder.onnx``
    ``vision``; ``mask`` 1 x 1 x S x S logits; ``object_score_logits`` 1 x 1; ``binarize`` [1]
    (1: hard mask, prompted frames; 0: sigmoid, tracked frames) -> ``memory`` 1 x 64 x h x w.

The selection logic (which mask, absent objects, which frames to remember) stays in
:class:`~leansam.video.predictor.VideoPredictor`. Every file carries ``leansam.*`` metadata: the model
name, its role, the slot counts and the few constants the driver needs (``no_mem_embed``,
``no_obj_ptr``, the mask prompt's 4 x 4 downsampling convolution, the decoder's stability rule).
EfficientTAM's pooled cross-attention (``_1`` / ``_2`` releases) is not exported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ..export.onnx import ONNX_HINT, OnnxExportConfig, OnnxExportError, _run_exporter, require_onnx
from ..io import OutputDir
from .build import load_video_model
from .memory import sine_1d
from .model import VideoModel, _decode

FILES = {
    "image_encoder": "image_encoder.onnx",
    "memory_attention": "memory_attention.onnx",
    "heads": "heads.onnx",
    "memory_encoder": "memory_encoder.onnx",
}
FORMAT = "video-1"
_DROP = -1e9


class FrameEncoderGraph(nn.Module):
    def __init__(self, model: VideoModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        f = self.model.encode_frame(image)
        return (f.vision, *f.high_res) if f.high_res is not None else f.vision


class MemoryAttentionGraph(nn.Module):
    """:meth:`VideoModel.attend_memory` over fixed memory and pointer slots (empty ones masked out)."""

    def __init__(self, model: VideoModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        vision: torch.Tensor,
        memories: torch.Tensor,
        memory_slots: torch.Tensor,
        memory_valid: torch.Tensor,
        pointers: torch.Tensor,
        pointer_offsets: torch.Tensor,
        pointer_valid: torch.Tensor,
    ) -> torch.Tensor:
        model, cfg = self.model, self.model.cfg
        _, c, h, w = vision.shape
        m, n_slots, n_ptr = cfg.mem_dim, memories.shape[0], pointers.shape[0]
        mem = memories.flatten(2).transpose(1, 2).reshape(1, -1, m)
        tpos = model.maskmem_tpos_enc[cfg.num_maskmem - 1 - memory_slots].reshape(n_slots, 1, m)
        pos = (model.memory_pos.flatten(2).transpose(1, 2) + tpos).reshape(1, -1, m)
        split = c // m
        if model.obj_ptr_tpos_proj is not None:
            ptr_pos = model.obj_ptr_tpos_proj(sine_1d(pointer_offsets, c))
        else:
            ptr_pos = pointers.new_zeros(n_ptr, m)
        tokens = torch.cat([mem, pointers.reshape(1, n_ptr * split, m)], dim=1)
        tokens_pos = torch.cat([pos, ptr_pos.repeat_interleave(split, dim=0)[None]], dim=1)
        bias = (
            ((1.0 - memory_valid) * _DROP)[None],
            ((1.0 - pointer_valid) * _DROP).repeat_interleave(split)[None],
        )
        curr = vision.flatten(2).transpose(1, 2)
        curr_pos = model.vision_pos.flatten(2).transpose(1, 2)
        out = model.memory_attention(curr, curr_pos, tokens, tokens_pos, n_ptr * split, key_bias=bias)
        return out.transpose(1, 2).reshape(1, c, h, w)


class HeadsGraph(nn.Module):
    """Prompt encoder + mask decoder: every mask token's mask, IoU and object pointer."""

    def __init__(self, model: VideoModel) -> None:
        super().__init__()
        self.model = model
        self.high_res = model.sam.mask_decoder.use_high_res_features

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        it = iter(inputs)
        feats = next(it)
        high_res = [next(it), next(it)] if self.high_res else None
        coords, labels, mask_input, has_mask = next(it), next(it), next(it), next(it)
        pe, dec = self.model.sam.prompt_encoder, self.model.sam.mask_decoder
        sparse = pe.embed_points(coords, labels)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = has_mask * pe.embed_masks(mask_input) + (1 - has_mask) * no_mask
        masks, iou, score, tokens = _decode(dec, feats, pe.get_dense_pe(), sparse, dense, high_res)
        return masks, iou, score, self.model.obj_ptr_proj(tokens)


class MemoryEncoderGraph(nn.Module):
    def __init__(self, model: VideoModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, vision: torch.Tensor, mask: torch.Tensor, score: torch.Tensor, binarize: torch.Tensor
    ) -> torch.Tensor:
        m = torch.where(binarize > 0, (mask > 0).float(), torch.sigmoid(mask))
        return self.model.memory_of(vision, m, score)


def _examples(model: VideoModel, memory_slots: int, pointer_slots: int) -> dict[str, tuple]:
    cfg = model.cfg
    s, c, m = cfg.image_size, cfg.hidden_dim, cfg.mem_dim
    side = s // 16
    vision = torch.randn(1, c, side, side)
    high = [torch.randn(1, c // 8, 4 * side, 4 * side), torch.randn(1, c // 4, 2 * side, 2 * side)]
    high = high if model.sam.mask_decoder.use_high_res_features else []
    slots = torch.arange(memory_slots) % cfg.num_maskmem
    ones_m, ones_p = torch.ones(memory_slots), torch.ones(pointer_slots)
    return {
        "image_encoder": (torch.randn(1, 3, s, s),),
        "memory_attention": (
            vision,
            torch.randn(memory_slots, m, side, side),
            slots,
            ones_m,
            torch.randn(pointer_slots, c),
            torch.linspace(-1, 1, pointer_slots),
            ones_p,
        ),
        "heads": (
            vision,
            *high,
            torch.rand(1, 3, 2) * s,
            torch.tensor([[2.0, 3.0, -1.0]]),
            torch.randn(1, 1, 4 * side, 4 * side),
            torch.ones(1),
        ),
        "memory_encoder": (vision, torch.randn(1, 1, s, s), torch.ones(1, 1), torch.ones(1)),
    }


def _io(model: VideoModel) -> dict[str, tuple[list[str], list[str], dict]]:
    high = ["high_res_feats_0", "high_res_feats_1"] if model.sam.mask_decoder.use_high_res_features else []
    points = {0: "batch", 1: "num_points"}
    return {
        "image_encoder": (["image"], ["vision", *high], {}),
        "memory_attention": (
            [
                "vision",
                "memories",
                "memory_slots",
                "memory_valid",
                "pointers",
                "pointer_offsets",
                "pointer_valid",
            ],
            ["conditioned"],
            {},
        ),
        "heads": (
            ["features", *high, "point_coords", "point_labels", "mask_input", "has_mask_input"],
            ["masks", "iou_predictions", "object_score_logits", "object_pointers"],
            {"point_coords": points, "point_labels": points},
        ),
        "memory_encoder": (["vision", "mask", "object_score_logits", "binarize"], ["memory"], {}),
    }


def _constants(model: VideoModel, name: str, memory_slots: int, pointer_slots: int) -> dict[str, str]:
    dec = model.sam.mask_decoder
    dyn = None
    if dec.dynamic_multimask_via_stability:
        dyn = [dec.dynamic_multimask_stability_delta, dec.dynamic_multimask_stability_thresh]
    conv = model.mask_downsample

    def floats(t: torch.Tensor) -> str:
        return json.dumps(t.detach().float().flatten().tolist())

    return {
        "leansam.format": FORMAT,
        "leansam.model": name,
        "leansam.memory_slots": str(memory_slots),
        "leansam.pointer_slots": str(pointer_slots),
        "leansam.no_mem_embed": floats(model.no_mem_embed),
        "leansam.no_obj_ptr": floats(model.no_obj_ptr),
        "leansam.mask_downsample": json.dumps(
            {"weight": json.loads(floats(conv.weight)), "bias": json.loads(floats(conv.bias))}
        ),
        "leansam.dynamic_multimask": json.dumps(dyn),
    }


def export_video_onnx(
    model: VideoModel | str,
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    memory_slots: int | None = None,
    pointer_slots: int | None = None,
    opset: int = 20,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Writes the four graphs into ``out_dir`` (all or nothing; ``overwrite`` replaces earlier
    graphs there); returns role -> path.

    ``model``: a registry name (loaded from its official checkpoint or ``checkpoint``) or a loaded
    :class:`VideoModel` with its registry ``name``.

    ``memory_slots`` (default ``num_maskmem + 1``: two prompted frames and the last six tracked ones)
    and ``pointer_slots`` (default ``max_obj_ptrs + 1``) fix the memory bank sizes; tracking that
    needs more raises an error naming the option.
    """
    onnx = require_onnx()
    if isinstance(model, str):
        name, model = model, load_video_model(model, checkpoint)
    elif name is None:
        raise ValueError("give the registry name of the model (name=...)")
    if model.cfg.cross_attention != "rope":
        raise OnnxExportError(
            f"{name}: EfficientTAM's pooled cross-attention ({model.cfg.cross_attention}) has no ONNX export"
        )
    model = model.eval().to("cpu")
    mem_slots = memory_slots or model.cfg.num_maskmem + 1
    ptr_slots = pointer_slots or model.cfg.max_obj_ptrs + 1
    config = OnnxExportConfig(opset=opset, exporter="torchscript")
    graphs = {
        "image_encoder": FrameEncoderGraph(model),
        "memory_attention": MemoryAttentionGraph(model),
        "heads": HeadsGraph(model),
        "memory_encoder": MemoryEncoderGraph(model),
    }
    examples, io = _examples(model, mem_slots, ptr_slots), _io(model)
    meta = _constants(model, name, mem_slots, ptr_slots)
    out = OutputDir(out_dir, overwrite, owned_patterns=tuple(FILES.values()))
    try:
        for role, graph in graphs.items():
            inputs, outputs, axes = io[role]
            with torch.inference_mode(False), torch.no_grad():
                proto = _run_exporter(graph, examples[role], inputs, outputs, axes, config, f"{name} {role}")
            for k, v in {**meta, "leansam.role": role}.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = k, v
            proto.producer_name = "leansam"
            onnx.checker.check_model(proto)
            onnx.save_model(proto, str(out.path(FILES[role])))
    except BaseException:
        out.discard()
        raise
    out.commit()
    return {role: Path(out_dir) / f for role, f in FILES.items()}


__all__ = ["FILES", "ONNX_HINT", "export_video_onnx"]
