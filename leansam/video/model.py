"""The tracking model: an image-mode :class:`~leansam.models.sam.Sam` plus the official video memory.

One tracking step on a frame (shapes for 1024 input, one object)::

    frame features  vision 1 x 256 x 64 x 64 (raw neck output), SAM 2: high-res levels
      -> condition on memory (memory attention over remembered frames + object pointers),
         or + no_mem_embed on a frame prompted without memory
      -> prompt encoder + mask decoder (the image model's)   low-res logits 1 x 1 x 256 x 256,
                                                             object score 1 x 1, pointer 1 x 256
      -> memory encoder on the 1024 x 1024 mask              memory 1 x 64 x 64 x 64

The image encoder, prompt encoder and mask decoder are the image model's own modules; only the
memory modules are added here, under their official top-level names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models.common import MLP
from ..models.hiera import HieraImageEncoder
from ..models.mask_decoder import MaskDecoder
from ..models.sam import Sam
from ..models.vit import ViTImageEncoder
from .config import VideoConfig
from .memory import MemoryAttention, MemoryEncoder, sine_1d, sine_position_encoding

NO_OBJ_SCORE = -1024.0


@dataclass
class FrameFeatures:
    """Per-frame encoder outputs: ``vision`` 1 x C x h x w (before ``no_mem_embed``), SAM 2's
    projected high-res levels (or None)."""

    vision: torch.Tensor
    high_res: list[torch.Tensor] | None

    def nbytes(self) -> int:
        """Memory held by the tensors."""
        return sum(t.numel() * t.element_size() for t in [self.vision, *(self.high_res or [])])


@dataclass
class HeadOutput:
    """Result of the prompt encoder + mask decoder on one frame for B objects.

    low_res B x 1 x 256 x 256 (object-absent -> -1024), high_res B x 1 x S x S, obj_ptr B x C,
    score B x 1 (object-score logit).
    """

    low_res: torch.Tensor
    high_res: torch.Tensor
    obj_ptr: torch.Tensor
    score: torch.Tensor


class VideoModel(nn.Module):
    """``sam`` (image model, leansam keys under ``sam.``) + memory modules (official keys).

    Args:
        sam: the image-mode model of the same release (SAM 2 Hiera or EfficientTAM).
        cfg: the release's :class:`VideoConfig`.
    """

    def __init__(self, sam: Sam, cfg: VideoConfig) -> None:
        super().__init__()
        self.sam = sam
        self.cfg = cfg
        c, m = cfg.hidden_dim, cfg.mem_dim
        side = cfg.image_size // 16
        self.memory_attention = MemoryAttention(c, m, feat_side=side, kind=cfg.cross_attention)
        self.memory_encoder = MemoryEncoder(c, m)
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(cfg.num_maskmem, 1, 1, m))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, c))  # in the files; unused at inference
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, c))
        self.obj_ptr_proj = MLP(c, c, c, 3)
        self.obj_ptr_tpos_proj = nn.Linear(c, m) if cfg.tpos_obj_ptrs else None
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, m)) if cfg.no_obj_embed_spatial else None
        self.register_buffer("vision_pos", sine_position_encoding(c, side, side), persistent=False)
        self.register_buffer("memory_pos", sine_position_encoding(m, side, side), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.no_obj_ptr.device

    @property
    def no_mem_embed(self) -> torch.Tensor:
        return self.sam.image_encoder.no_mem_embed

    # --- frames ----------------------------------------------------------------------------------
    def encode_frame(self, x: torch.Tensor) -> FrameFeatures:
        """1 x 3 x S x S normalised frame -> :class:`FrameFeatures` (neck output before ``no_mem_embed``)."""
        enc = self.sam.image_encoder
        if isinstance(enc, HieraImageEncoder):
            feats = enc.neck(enc.trunk(x))
            if enc.cfg.scalp:
                feats = feats[: -enc.cfg.scalp]
            high, vision = feats[:-1], feats[-1]
            dec = self.sam.mask_decoder
            return FrameFeatures(vision, dec.project_high_res(high) if dec.use_high_res_features else None)
        if isinstance(enc, ViTImageEncoder):  # EfficientTAM: the plain ViT + neck, one level
            return FrameFeatures(ViTImageEncoder.forward(enc, x), None)
        raise TypeError(f"no video support for image encoder {type(enc).__name__}")

    # --- prompt encoder + mask decoder -----------------------------------------------------------
    def sam_heads(
        self,
        feats: torch.Tensor,
        high_res: list[torch.Tensor] | None,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        mask_input: torch.Tensor | None,
        multimask: bool,
    ) -> HeadOutput:
        """Decodes B objects on one frame.

        Args:
            feats: B x C x h x w (memory-conditioned, or + ``no_mem_embed``).
            high_res: SAM 2's projected high-res levels (batch 1 or B), or None.
            points: (coords B x P x 2 in the S x S model frame, labels B x P) or None.
            mask_input: B x 1 x 256 x 256 logits (or any size, resized with antialiasing) or None.
            multimask: 3 candidate masks, keep the best by predicted IoU (pointer from its token).
        """
        size = self.sam.prompt_encoder.mask_input_size
        coords, labels, mask_input = head_inputs(feats, points, mask_input, size)
        masks, iou, score, tokens = self.decode_all(feats, high_res, coords, labels, mask_input)
        rows = torch.arange(feats.shape[0], device=feats.device)
        return self.finish_heads(
            masks, iou, score, lambda token: self.obj_ptr_proj(tokens[rows, token]), multimask
        )

    def decode_all(
        self,
        feats: torch.Tensor,
        high_res: list[torch.Tensor] | None,
        coords: torch.Tensor,
        labels: torch.Tensor,
        mask_input: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder, every mask token: masks B x (M+1) x 256 x 256, iou B x (M+1),
        object score B x 1 and the mask tokens' outputs B x (M+1) x C (from which pointers are made)."""
        pe, dec = self.sam.prompt_encoder, self.sam.mask_decoder
        sparse, dense = pe((coords, labels), mask_input, batch_size=feats.shape[0])
        return _decode(dec, feats, pe.get_dense_pe(), sparse, dense, high_res)

    def select_masks(
        self, masks: torch.Tensor, iou: torch.Tensor, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens' outputs -> the returned ones (the decoder's rule)."""
        return self.sam.mask_decoder.select_masks(masks, iou, multimask)

    def finish_heads(
        self,
        masks: torch.Tensor,
        iou: torch.Tensor,
        score: torch.Tensor,
        pointer_of: Callable[[torch.Tensor], torch.Tensor],
        multimask: bool,
    ) -> HeadOutput:
        """Selects the mask the official heads keep (best of 3 by IoU, or the single mask with SAM 2's
        stability fallback) from :meth:`decode_all`'s outputs; ``pointer_of(token index B)`` gives the
        B x C object pointers of those mask tokens. Absent objects get -1024 logits and ``no_obj_ptr``."""
        b = masks.shape[0]
        rows = torch.arange(b, device=masks.device)
        masks, iou = self.select_masks(masks, iou, multimask)
        best = iou.argmax(dim=-1) if multimask else torch.zeros(b, dtype=torch.long, device=masks.device)
        present = score > 0
        masks = torch.where(present[:, :, None, None], masks, NO_OBJ_SCORE).float()
        low = masks[rows, best][:, None]
        size_hw = (self.cfg.image_size, self.cfg.image_size)
        high = F.interpolate(low, size=size_hw, mode="bilinear", align_corners=False)
        ptr = pointer_of(best + 1 if multimask else best)
        lam = present.float()
        ptr = lam * ptr + (1 - lam) * self.no_obj_ptr
        return HeadOutput(low, high, ptr, score)

    def mask_as_output(
        self, feats: torch.Tensor, high_res: list[torch.Tensor] | None, mask: torch.Tensor
    ) -> HeadOutput:
        """A mask prompt taken as the frame's output (B x 1 x S x S binary mask); the pointer still
        comes from the decoder run on the mask downsampled by ``mask_downsample``."""
        mask = mask.float()
        high = mask * 20.0 - 10.0
        low = F.interpolate(
            high,
            size=(high.shape[-2] // 4, high.shape[-1] // 4),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        ptr = self.sam_heads(feats, high_res, None, self.mask_downsample(mask), multimask=False).obj_ptr
        lam = (mask.flatten(1) > 0).any(dim=1, keepdim=True).float()
        ptr = lam * ptr + (1 - lam) * self.no_obj_ptr
        return HeadOutput(low, high, ptr, lam * 20.0 - 10.0)

    # --- memory ----------------------------------------------------------------------------------
    def encode_memory(
        self, vision: torch.Tensor, high_res_mask: torch.Tensor, score: torch.Tensor, binarize: bool
    ) -> torch.Tensor:
        """Memory of a frame: vision B x C x h x w, mask logits B x 1 x S x S, score B x 1 -> B x 64 x h x w.

        ``binarize``: prompted frames are encoded from the hard mask, tracked ones from its sigmoid.
        """
        m = (high_res_mask > 0).float() if binarize else torch.sigmoid(high_res_mask)
        return self.memory_of(vision, m, score)

    def memory_of(self, vision: torch.Tensor, mask01: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """Memory encoder on a mask in [0, 1] (B x 1 x S x S), plus SAM 2.1's no-object vector where
        the object score is <= 0: B x 64 x h x w."""
        mem = self.memory_encoder(vision, mask01 * 20.0 - 10.0)
        if self.no_obj_embed_spatial is not None:
            absent = 1.0 - (score > 0).float()
            mem = mem + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        return mem

    def attend_memory(
        self,
        vision: torch.Tensor,
        memories: list[tuple[int, torch.Tensor]],
        pointers: list[tuple[int, torch.Tensor]],
        ptr_window: int,
    ) -> torch.Tensor:
        """Conditions a frame on its memory bank.

        Args:
            vision: B x C x h x w raw frame features.
            memories: (temporal slot t_pos in 0..num_maskmem-1, B x 64 x h x w memory) per frame;
                slot 0 for conditioning frames, num_maskmem-1 for the previous frame.
            pointers: (signed frame offset, B x C pointer) per remembered pointer.
            ptr_window: ``min(num_frames, max_obj_ptrs)``: offsets are encoded relative to
                ``ptr_window - 1`` (SAM 2.1).

        Returns B x C x h x w.
        """
        b, c, h, w = vision.shape
        n_mem = self.cfg.num_maskmem
        mem = [x.float().flatten(2).transpose(1, 2) for _, x in memories]
        pos_m = self.memory_pos.flatten(2).transpose(1, 2)
        pos = [
            (pos_m + self.maskmem_tpos_enc[n_mem - t - 1].view(1, 1, -1)).expand(b, -1, -1)
            for t, _ in memories
        ]
        n_ptr_tokens = 0
        if pointers:
            ptrs = torch.stack([p for _, p in pointers], dim=1)  # B x P x C
            if self.obj_ptr_tpos_proj is not None:
                offsets = torch.tensor([o for o, _ in pointers], dtype=torch.float32, device=vision.device)
                ptr_pos = self.obj_ptr_tpos_proj(sine_1d(offsets / (ptr_window - 1), c))
            else:
                ptr_pos = vision.new_zeros(len(pointers), self.cfg.mem_dim)
            split = c // self.cfg.mem_dim
            mem.append(ptrs.reshape(b, -1, self.cfg.mem_dim))  # each pointer as `split` tokens
            pos.append(ptr_pos.repeat_interleave(split, dim=0)[None].expand(b, -1, -1))
            n_ptr_tokens = ptrs.shape[1] * split
        curr = vision.flatten(2).transpose(1, 2)
        curr_pos = self.vision_pos.flatten(2).transpose(1, 2).expand(b, -1, -1)
        out = self.memory_attention(curr, curr_pos, torch.cat(mem, 1), torch.cat(pos, 1), n_ptr_tokens)
        return out.transpose(1, 2).reshape(b, c, h, w)


def head_inputs(
    feats: torch.Tensor,
    points: tuple[torch.Tensor, torch.Tensor] | None,
    mask_input: torch.Tensor | None,
    mask_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The decoder's prompt inputs as the official heads build them for B = ``feats.shape[0]`` objects:
    coords B x (P+1) x 2 and labels B x (P+1) int64 with one padding point (label -1) appended (one
    empty point when there are no clicks), the mask input resized (antialiased) to ``mask_size``."""
    b = feats.shape[0]
    if points is None:
        points = (
            feats.new_zeros(b, 1, 2),
            torch.full((b, 1), -1, dtype=torch.int64, device=feats.device),
        )
    coords, labels = points
    coords = torch.cat([coords.float(), feats.new_zeros(b, 1, 2)], dim=1)
    labels = torch.cat([labels.to(torch.int64), labels.new_full((b, 1), -1).to(torch.int64)], dim=1)
    if mask_input is not None and mask_input.shape[-2:] != mask_size:
        mask_input = F.interpolate(
            mask_input.float(), size=mask_size, mode="bilinear", align_corners=False, antialias=True
        )
    return coords, labels, mask_input


def _decode(
    dec: MaskDecoder,
    image: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    high_res: list[torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decoder's outputs for all mask tokens (masks B x (M+1) x h x w, iou B x (M+1), scores B x 1),
    plus the outputs of its mask tokens (B x (M+1) x C, read from its two-way transformer), which SAM 2
    turns into object pointers."""
    captured: list[torch.Tensor] = []
    handle = dec.transformer.register_forward_hook(lambda _m, _args, out: captured.append(out[0]))
    try:
        masks, iou, score = dec.predict_masks(image, image_pe, sparse, dense, high_res)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(
            "the mask decoder did not run its two-way transformer once; cannot read its tokens"
        )
    first = 1 if dec.pred_obj_score else 0
    return masks, iou, score, captured[0][:, first + 1 : first + 1 + dec.num_mask_tokens]
