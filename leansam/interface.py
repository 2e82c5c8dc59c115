"""What the predictor, the mask generator and the runtimes need from a model, and the prompt layout.

:class:`PromptableModel` is the interface :class:`leansam.SamPredictor` and
:class:`leansam.AutomaticMaskGenerator` program against. The PyTorch model
(:class:`leansam.models.sam.Sam`) and the ONNX Runtime model (:class:`leansam.export.OnnxSam`) both
satisfy it; neither caller checks which one it has.

Data across the interface:

* an image: H x W x 3 uint8 RGB -> ``preprocess`` -> 1 x 3 x S x S -> ``encode_image`` ->
  :class:`ImageFeatures` (one per image, kept by the caller);
* prompts: points B x N x 2 (x, y) and boxes B x 4 (XYXY), pixels of the original image ->
  :func:`layout_prompts` -> :data:`Prompts`, ``(coords B x N' x 2, labels B x N')`` in the model's
  prompt frame, in the family's order and padding (:class:`PromptStyle`);
* ``decode`` -> low-res logits B x M x 4h x 4w, IoU B x M, object-score logits B x 1 ->
  ``postprocess_masks`` -> logits B x M x H x W.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from .transforms import ImageTransform

#: Prompts laid out for the prompt encoder: (coords B x N x 2 in the prompt frame, labels B x N).
#: Labels: 1 foreground, 0 background, 2 / 3 box corners, -1 padding.
Prompts = tuple[torch.Tensor, torch.Tensor]


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
    [B x 32 x 256 x 256, B x 64 x 128 x 128], else None. cache: per-image products a decoder
    strategy may keep between decode calls on these features (see :mod:`leansam.models.fast`);
    it starts empty with every new features object.
    """

    embed: torch.Tensor
    high_res: list[torch.Tensor] | None = None
    cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def select(self, i: int) -> ImageFeatures:
        """The features of image ``i`` of the batch, keeping a batch dimension of 1."""
        hr = [h[i : i + 1] for h in self.high_res] if self.high_res is not None else None
        return ImageFeatures(self.embed[i : i + 1], hr)


def join_box_corners(
    coords: torch.Tensor, labels: torch.Tensor, corners: torch.Tensor, box_first: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points (B x N x 2, B x N) and K boxes' corners (B x 2K x 2) -> one list, corners labelled 2, 3.

    The corners go before the points (``box_first``) or after them. Traceable (the ONNX decoder
    graph builds its layout with it).
    """
    b = coords.shape[0]
    corner_labels = (torch.arange(corners.shape[1], device=corners.device) % 2 + 2).to(labels.dtype)
    corner_labels = corner_labels.expand(b, -1)
    if box_first:
        return torch.cat([corners, coords], dim=1), torch.cat([corner_labels, labels], dim=1)
    return torch.cat([coords, corners], dim=1), torch.cat([labels, corner_labels], dim=1)


def layout_prompts(
    style: PromptStyle,
    transform: ImageTransform,
    point_coords: torch.Tensor | None,
    point_labels: torch.Tensor | None,
    boxes: torch.Tensor | None,
    original_size: tuple[int, int],
) -> Prompts | None:
    """Lays out and rescales prompts for the prompt encoder, as the family ``style`` expects.

    Args:
        style: the family's order and padding.
        transform: the family's transform (gives the prompt frame of ``original_size``).
        point_coords: B x N x 2 (x, y) in pixels of the original image, or None.
        point_labels: B x N (1 foreground, 0 background), or None.
        boxes: B x 4 XYXY in pixels of the original image, or None.
        original_size: (H, W) of the original image.

    Returns:
        (coords B x N' x 2 in the model's prompt frame, labels B x N'), or None when there is no prompt.
        A batch of 1 on one side is broadcast to the other's B.
    """
    if point_coords is None and boxes is None:
        return None
    b = max(t.shape[0] for t in (point_coords, boxes) if t is not None)
    if point_coords is not None:
        coords = point_coords.float().expand(b, -1, -1)
        labels = point_labels.to(torch.int64).expand(b, -1)
    else:
        coords = boxes.new_zeros((b, 0, 2), dtype=torch.float)
        labels = torch.zeros((b, 0), dtype=torch.int64, device=boxes.device)
    if boxes is not None:
        corners = boxes.float().reshape(-1, 2, 2).expand(b, -1, -1)
        coords, labels = join_box_corners(coords, labels, corners, style.box_first)
    h, w = original_size
    fh, fw = transform.frame_size(original_size)
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


def keep_confident(
    low: torch.Tensor, iou: torch.Tensor, iou_thresh: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masks whose predicted IoU is above ``iou_thresh`` (0: all), flattened over prompts and masks.

    low B x M x h x w, iou B x M -> (low K x h x w, iou K float32, prompt index K int64 on the CPU),
    prompt-major.
    """
    b, m = iou.shape
    low, iou = low.flatten(0, 1), iou.flatten(0, 1).float()
    owner = torch.arange(b).repeat_interleave(m)
    if iou_thresh > 0.0:
        keep = (iou > iou_thresh).cpu()
        low, iou, owner = low[keep.to(low.device)], iou[keep.to(iou.device)], owner[keep]
    return low, iou, owner


@runtime_checkable
class PromptableModel(Protocol):
    """A promptable segmentation model as the predictor and the mask generator use it.

    Attributes: ``transform`` (:class:`ImageTransform`), ``prompt_style`` (:class:`PromptStyle`),
    ``device`` (where its inputs and outputs live), ``mask_threshold`` (logit threshold of a mask).
    """

    transform: ImageTransform
    prompt_style: PromptStyle

    @property
    def device(self) -> torch.device: ...

    @property
    def mask_threshold(self) -> float: ...

    def eval(self) -> PromptableModel: ...

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """H x W x 3 uint8 RGB -> 1 x 3 x S x S encoder input."""
        ...

    def encode_image(self, x: torch.Tensor) -> ImageFeatures:
        """B x 3 x S x S encoder input -> :class:`ImageFeatures`."""
        ...

    def prepare_prompts(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        original_size: tuple[int, int],
    ) -> Prompts | None:
        """:func:`layout_prompts` with the model's style and transform."""
        ...

    def decode(
        self,
        features: ImageFeatures,
        points: Prompts | None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """B prompts on one image -> (low-res logits B x M x h x w, IoU B x M, object scores B x 1)."""
        ...

    def decode_confident(
        self, features: ImageFeatures, points: Prompts, multimask_output: bool, iou_thresh: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`decode` then :func:`keep_confident` (a model may skip work for the dropped masks)."""
        ...

    def postprocess_masks(self, low_res: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """B x M x h x w low-res logits -> B x M x H x W logits at the original size."""
        ...
