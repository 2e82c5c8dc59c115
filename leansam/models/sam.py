"""The ``Sam`` model: a family-specific image encoder plus the shared prompt encoder and mask decoder.

Data flow (shapes for one image, B prompts)::

    image (H x W x 3 uint8)
      -> preprocess (ImageTransform)              1 x 3 x S x S
      -> image_encoder                            1 x 256 x 64 x 64 (+ SAM 2 high-res levels)
    prompts (pixels of the original image)
      -> prepare_prompts (PromptStyle)            coords B x N x 2, labels B x N (model frame)
      -> prompt_encoder                           sparse B x N x 256, dense B x 256 x 64 x 64
      -> mask_decoder                             low-res logits B x M x 256 x 256, IoU B x M
      -> postprocess (ImageTransform)             logits B x M x H x W
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..transforms import ImageTransform, postprocess_logits, preprocess
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


@dataclass(frozen=True)
class PromptStyle:
    """How a family lays out clicks and boxes before the prompt encoder.

    Attributes:
        box_first: put the two box corners before the clicks (SAM 2, EfficientSAM);
            SAM puts them after.
        pad: ``no_box``: one padding point when there is no box (SAM);
            ``always``: one padding point in every case (SAM 2, which passes boxes as points);
            ``fixed``: pad every point list to ``pad_to`` points (EfficientSAM).
        pad_to: list length for ``pad="fixed"``.
        pad_coord: coordinate of padding points in the model's prompt frame, i.e. after the
            original-to-frame rescaling (EfficientSAM pads its rescaled points with -1).
    """

    box_first: bool = False
    pad: Literal["no_box", "always", "fixed"] = "no_box"
    pad_to: int = 0
    pad_coord: float = 0.0

    def __post_init__(self) -> None:
        if self.pad not in ("no_box", "always", "fixed"):
            raise ValueError(f"pad must be 'no_box', 'always' or 'fixed', not {self.pad!r}")
        if self.pad == "fixed" and self.pad_to <= 0:
            raise ValueError("pad='fixed' needs pad_to > 0")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImageFeatures:
    """What the encoder computes once per image and every decode call reuses.

    embed: B x 256 x 64 x 64. high_res: SAM 2's projected skip features
    [B x 32 x 256 x 256, B x 64 x 128 x 128], else None.
    """

    embed: torch.Tensor
    high_res: list[torch.Tensor] | None = None

    def select(self, i: int) -> ImageFeatures:
        """The features of image ``i`` of the batch, keeping a batch dimension of 1."""
        hr = [h[i : i + 1] for h in self.high_res] if self.high_res is not None else None
        return ImageFeatures(self.embed[i : i + 1], hr)


class Sam(nn.Module):
    """Promptable segmentation model.

    Args:
        image_encoder: B x 3 x S x S -> B x 256 x 64 x 64, or (that, [two high-res levels]) for SAM 2.
        prompt_encoder: the shared :class:`PromptEncoder`.
        mask_decoder: the shared :class:`MaskDecoder`.
        transform: pre/post-processing of the family.
        prompt_style: prompt layout of the family.
        name: registry name (informational).
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder | None = None,
        mask_decoder: MaskDecoder | None = None,
        transform: ImageTransform | None = None,
        prompt_style: PromptStyle | None = None,
        name: str = "",
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder if prompt_encoder is not None else PromptEncoder()
        self.mask_decoder = mask_decoder if mask_decoder is not None else MaskDecoder()
        self.transform = transform if transform is not None else ImageTransform()
        self.prompt_style = prompt_style if prompt_style is not None else PromptStyle()
        self.name = name

    @property
    def device(self) -> torch.device:
        return self.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.device

    @property
    def mask_threshold(self) -> float:
        return 0.0

    # --- image -----------------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """H x W x 3 uint8 RGB -> 1 x 3 x S x S normalised, padded encoder input (on the model's device)."""
        return preprocess(image, self.transform).to(self.device)

    def encode_image(self, x: torch.Tensor) -> ImageFeatures:
        """B x 3 x S x S encoder input -> :class:`ImageFeatures`."""
        out = self.image_encoder(x)
        if isinstance(out, (tuple, list)):
            embed, high = out
            projected = (
                self.mask_decoder.project_high_res(high) if self.mask_decoder.use_high_res_features else None
            )
            return ImageFeatures(embed, projected)
        return ImageFeatures(out)

    # --- prompts ---------------------------------------------------------------------------------
    def prepare_prompts(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        original_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Lays out and rescales prompts for the prompt encoder.

        Args:
            point_coords: B x N x 2 (x, y) in pixels of the original image, or None.
            point_labels: B x N (1 foreground, 0 background), or None.
            boxes: B x 4 XYXY in pixels of the original image, or None.
            original_size: (H, W) of the original image.

        Returns:
            (coords B x N' x 2 in the model's prompt frame, labels B x N'), or None when there is no prompt.
        """
        style = self.prompt_style
        parts_c, parts_l = [], []
        if point_coords is not None:
            parts_c.append(point_coords.float())
            parts_l.append(point_labels.to(torch.int64))
        if boxes is not None:
            corners = boxes.float().reshape(-1, 2, 2)
            corner_labels = torch.tensor([2, 3], device=corners.device).expand(corners.shape[0], 2)
            if style.box_first:
                parts_c.insert(0, corners)
                parts_l.insert(0, corner_labels)
            else:
                parts_c.append(corners)
                parts_l.append(corner_labels)
        if not parts_c:
            return None
        b = max(p.shape[0] for p in parts_c)
        coords = torch.cat([p.expand(b, -1, -1) for p in parts_c], dim=1)
        labels = torch.cat([p.expand(b, -1) for p in parts_l], dim=1)
        h, w = original_size
        fh, fw = self.transform.frame_size(original_size)
        coords = coords * coords.new_tensor([fw / w, fh / h])
        n_pad = 0
        if style.pad == "always" or (style.pad == "no_box" and boxes is None):
            n_pad = 1
        elif style.pad == "fixed":
            n_pad = max(0, style.pad_to - coords.shape[1])
        if n_pad:
            # Padding is appended in the prompt frame (after rescaling), as upstream does.
            coords = torch.cat([coords, coords.new_full((b, n_pad, 2), style.pad_coord)], dim=1)
            labels = torch.cat([labels, labels.new_full((b, n_pad), -1)], dim=1)
        return coords, labels

    # --- decoding --------------------------------------------------------------------------------
    def decode(
        self,
        features: ImageFeatures,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decodes B prompts against one image's features in one batched call.

        Args:
            features: features of ONE image (batch 1), shared by all prompts.
            points: (coords B x N x 2 in the prompt frame, labels B x N) from :meth:`prepare_prompts`.
            mask_input: B x 1 x 256 x 256 low-res logits from an earlier call, or None.
            multimask_output: 3 masks per prompt (True) or 1.

        Returns:
            low-res logits B x M x 256 x 256, IoU predictions B x M, object-score logits B x 1.
        """
        batch = (
            points[0].shape[0]
            if points is not None
            else (mask_input.shape[0] if mask_input is not None else 1)
        )
        sparse, dense = self.prompt_encoder(points, mask_input, batch_size=batch)
        return self.mask_decoder(
            features.embed,
            self.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask_output,
            features.high_res,
        )

    def postprocess_masks(self, low_res: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """B x M x 256 x 256 low-res logits -> B x M x H x W logits at the original size."""
        return postprocess_logits(low_res, self.transform, original_size)

    def forward(
        self,
        image: np.ndarray,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One image, B prompts, end to end: (logits B x M x H x W, IoU B x M). See :class:`leansam.SamPredictor`."""
        size = image.shape[:2]
        feats = self.encode_image(self.preprocess(image))
        points = self.prepare_prompts(point_coords, point_labels, boxes, size)
        low, iou, _ = self.decode(feats, points, None, multimask_output)
        return self.postprocess_masks(low, size), iou
