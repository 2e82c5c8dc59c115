"""``SamPredictor``: a drop-in for segment_anything's predictor, for every registered model.

    predictor = leansam.SamPredictor(leansam.build_model("mobile_sam"))
    predictor.set_image(image)                                   # H x W x 3 uint8 RGB
    masks, scores, low_res = predictor.predict(box=np.array([x0, y0, x1, y1]))

Coordinate conventions:

* :meth:`SamPredictor.predict` takes prompts in pixels of the original image
  (x, y; boxes XYXY), exactly like segment_anything.
* :meth:`SamPredictor.predict_torch` takes prompts already mapped to the
  model's input frame with ``predictor.transform.apply_coords_torch`` /
  ``apply_boxes_torch`` (again like segment_anything), or, with
  ``original_coords=True``, in pixels of the original image.
"""

from __future__ import annotations

import numpy as np
import torch

from .interface import ImageFeatures, PromptableModel, Prompts
from .transforms import ImageTransform, threshold_in_blocks, thresholds_in_blocks


class PromptTransform:
    """Maps prompts from original-image pixels to the model's input frame.

    Mirrors segment_anything's ``ResizeLongestSide`` methods so code written for
    it keeps working, but follows the model's own transform (squashing families included).
    """

    def __init__(self, transform: ImageTransform) -> None:
        self.t = transform

    def _scale(self, original_size: tuple[int, int]) -> tuple[float, float]:
        fh, fw = self.t.frame_size(tuple(original_size))
        return fw / original_size[1], fh / original_size[0]

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """... x 2 (x, y) original pixels -> input frame."""
        sx, sy = self._scale(original_size)
        out = np.array(coords, dtype=float, copy=True)
        out[..., 0] *= sx
        out[..., 1] *= sy
        return out

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """B x 4 XYXY original pixels -> input frame."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        sx, sy = self._scale(original_size)
        return coords.float() * coords.new_tensor([sx, sy], dtype=torch.float)

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)


class SamPredictor:
    """Computes an image's features once, then answers many prompts against them.

    Args:
        model: a :class:`~leansam.interface.PromptableModel`: a :class:`~leansam.models.sam.Sam`
            (e.g. from :func:`leansam.build_model`) or an ONNX Runtime :class:`~leansam.export.OnnxSam`.
        mask_threshold: logit threshold for binary masks (0.0).
        max_hole_area: fill background holes up to this many pixels in each mask (SAM 2 option; 0 = off).
        max_sprinkle_area: remove foreground specks up to this many pixels (SAM 2 option; 0 = off).
            Both act as in SAM 2's predictor: on the 256 x 256 low-res logits (areas in low-res
            pixels, 8-connectivity, components of the uncleaned logits) before upsampling; the
            returned low-res logits are not cleaned (see
            :func:`leansam.postprocess.fill_holes_and_remove_sprinkles`).
        prompt_block: :meth:`predict_torch` decodes and upscales its B prompts in blocks of this
            many (None: all B at once). Each block is one batched decoder call. Each prompt carries its
            own image-token state and 3 masks at full size, so small blocks keep the working set near
            the cache (docs/performance.md). Results do not depend on it.
    """

    def __init__(
        self,
        model: PromptableModel,
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
        prompt_block: int | None = 4,
    ) -> None:
        if prompt_block is not None and prompt_block < 1:
            raise ValueError(f"prompt_block must be a positive number of prompts or None, not {prompt_block}")
        self.model = model.eval()
        self.prompt_block = prompt_block
        self.transform = PromptTransform(model.transform)
        self.mask_threshold = mask_threshold
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    # --- image -------------------------------------------------------------------------------------
    @torch.no_grad()
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Computes the features of ``image`` (H x W x 3 uint8, RGB or BGR per ``image_format``).

        The new :class:`~leansam.interface.ImageFeatures` start with an empty per-image cache, which the
        fast decoder fills on the first prompts (docs/performance.md); :meth:`reset_image` drops it.
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', not {image_format!r}")
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an H x W x 3 uint8 image, got shape {image.shape} and dtype {image.dtype}"
            )
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"image has zero size {image.shape[:2]}")
        if image_format == "BGR":
            image = image[..., ::-1]
        self.reset_image()
        x = self.model.preprocess(image)
        self.features = self.model.encode_image(x)
        self.original_size = (int(image.shape[0]), int(image.shape[1]))
        self.input_size = self.model.transform.frame_size(self.original_size)
        self.is_image_set = True

    @torch.no_grad()
    def set_features(self, features: ImageFeatures, original_size: tuple[int, int]) -> None:
        """Uses precomputed features (e.g. from a batched encoder call) for the image of ``original_size``."""
        self.reset_image()
        self.features = features
        self.original_size = (int(original_size[0]), int(original_size[1]))
        self.input_size = self.model.transform.frame_size(self.original_size)
        self.is_image_set = True

    def get_image_embedding(self) -> torch.Tensor:
        """The image embedding, 1 x C x h x w (1 x 256 x 64 x 64 for SAM)."""
        self._check_image()
        return self.features.embed

    def low_res_size(self) -> tuple[int, int]:
        """(h, w) of the low-res logits and of ``mask_input``: 4x the embedding grid."""
        self._check_image()
        h, w = self.features.embed.shape[-2:]
        return 4 * int(h), 4 * int(w)

    def _mask_input(self, mask_input: np.ndarray) -> torch.Tensor:
        h, w = self.low_res_size()
        arr = np.asarray(mask_input, dtype=np.float32)
        if arr.size != h * w:
            raise ValueError(
                f"mask_input of shape {tuple(arr.shape)} does not fit this model: it takes 1 x {h} x {w} "
                "low-res logits (the third output of a previous predict call)"
            )
        return torch.as_tensor(arr, device=self.device).reshape(1, 1, h, w)

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features: ImageFeatures | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    def _check_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("call set_image() before predicting")

    # --- prompts -----------------------------------------------------------------------------------
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt set, all coordinates in pixels of the original image.

        Args:
            point_coords: N x 2 (x, y), or None.
            point_labels: N (1 foreground, 0 background), or None.
            box: 4 (or 1 x 4) XYXY, or None.
            mask_input: 1 x h x w low-res logits from a previous call, or None; h x w is 4x the
                embedding grid (:meth:`low_res_size`: 256 x 256 for SAM).
            multimask_output: 3 candidate masks (True) or 1.
            return_logits: return logits instead of binary masks.

        Returns:
            masks C x H x W (bool, or float32 logits), scores C, low-res logits C x h x w.
        """
        self._check_image()
        dev = self.device
        coords = labels = boxes = masks = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords")
            coords = torch.as_tensor(np.asarray(point_coords, dtype=np.float32), device=dev).reshape(1, -1, 2)
            labels = torch.as_tensor(np.asarray(point_labels), device=dev).reshape(1, -1)
            if coords.shape[1] != labels.shape[1]:
                raise ValueError(f"{coords.shape[1]} points but {labels.shape[1]} labels")
        if box is not None:
            boxes = torch.as_tensor(np.asarray(box, dtype=np.float32), device=dev).reshape(1, 4)
        if mask_input is not None:
            masks = self._mask_input(mask_input)
        out_masks, iou, low = self.predict_torch(
            coords, labels, boxes, masks, multimask_output, return_logits, original_coords=True
        )
        return out_masks[0].cpu().numpy(), iou[0].float().cpu().numpy(), low[0].float().cpu().numpy()

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        *,
        original_coords: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """B prompt sets decoded in one call, batched (in blocks of ``prompt_block`` prompts).

        Args:
            point_coords: B x N x 2 (x, y), or None.
            point_labels: B x N, or None.
            boxes: B x 4 XYXY, or None (B boxes: one mask set per box).
            mask_input: B x 1 x 256 x 256 low-res logits, or None.
            multimask_output: 3 masks per prompt set (True) or 1.
            return_logits: return logits instead of binary masks.
            original_coords: prompts are in original-image pixels (True) or already in
                the model's input frame as segment_anything expects (False, default).

        Returns:
            masks B x C x H x W, IoU predictions B x C, low-res logits B x C x 256 x 256.
        """
        self._check_image()
        if point_coords is None and boxes is None and mask_input is None:
            raise ValueError("no prompt given: pass point_coords/point_labels, boxes or mask_input")
        size = self.original_size
        if not original_coords:
            # Undo the frame mapping: the model lays out and maps prompts from original pixels itself.
            sx, sy = self.transform._scale(size)
            inv = torch.tensor([1.0 / sx, 1.0 / sy], device=self.device)
            point_coords = point_coords.float() * inv if point_coords is not None else None
            boxes = (boxes.float().reshape(-1, 2, 2) * inv).reshape(-1, 4) if boxes is not None else None
        self._check_prompts(point_coords, point_labels, boxes)
        points = self.model.prepare_prompts(point_coords, point_labels, boxes, size)
        batch = mask_input.shape[0] if points is None else points[0].shape[0]
        block = self.prompt_block or max(batch, 1)
        outs: tuple[torch.Tensor, ...] | None = None
        for start in range(0, batch, block) if batch else [0]:
            part = slice(start, start + block)
            masks_in = (
                mask_input[part] if mask_input is not None and mask_input.shape[0] == batch else mask_input
            )
            dest = tuple(o[part] for o in outs) if outs is not None else None
            block_points = (points[0][part], points[1][part]) if points is not None else None
            res = self._decode_block(block_points, masks_in, multimask_output, return_logits, dest)
            if start == 0 and block >= batch:
                return res
            if outs is None:  # later blocks are written in place: no final copy of all B prompts' masks
                outs = tuple(r.new_empty((batch, *r.shape[1:])) for r in res)
                for o, r in zip(outs, res):
                    o[part] = r
        return outs

    def _decode_block(
        self,
        points: Prompts | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
        return_logits: bool,
        out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batched decoder call and its upscaling: see :meth:`predict_torch`. With ``out``
        (masks, IoU, low-res views of the caller's result) the results are written there."""
        size = self.original_size
        low, iou, _ = self.model.decode(self.features, points, mask_input, multimask_output)
        cleaned = low
        if self.max_hole_area > 0 or self.max_sprinkle_area > 0:
            from .postprocess import fill_holes_and_remove_sprinkles

            cleaned = fill_holes_and_remove_sprinkles(
                low, self.mask_threshold, self.max_hole_area, self.max_sprinkle_area
            ).to(low.dtype)
        t = self.model.transform
        if not return_logits and thresholds_in_blocks(size, cleaned):  # no full-size float logits
            masks = threshold_in_blocks(cleaned, t, size, self.mask_threshold, out[0] if out else None)
        else:
            masks = self.model.postprocess_masks(cleaned, size)
            if not return_logits:
                masks = torch.gt(masks, self.mask_threshold, out=out[0] if out else None)
            elif out is not None:
                out[0].copy_(masks)
        if t.low_res_clamp is not None:
            low = low.clamp(-t.low_res_clamp, t.low_res_clamp)
        if out is None:
            return masks, iou, low
        out[1].copy_(iou)
        out[2].copy_(low)
        return out

    def _check_prompts(
        self, coords: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None
    ) -> None:
        if coords is not None:
            if labels is None or coords.shape[:-1] != labels.shape or coords.shape[-1] != 2:
                raise ValueError("point_coords must be B x N x 2 with point_labels B x N")
            if not torch.isfinite(coords).all():
                raise ValueError("point coordinates must be finite (got NaN or inf)")
            bad = set(torch.unique(labels).tolist()) - {0, 1, -1, 2, 3}
            if bad:
                raise ValueError(f"point labels must be 1 (foreground) or 0 (background), got {sorted(bad)}")
        if boxes is not None:
            if boxes.shape[-1] != 4:
                raise ValueError("boxes must be B x 4 (XYXY)")
            if not torch.isfinite(boxes).all():
                raise ValueError("box coordinates must be finite (got NaN or inf)")
            if coords is not None and coords.shape[0] not in (1, boxes.shape[0]) and boxes.shape[0] != 1:
                raise ValueError(f"{coords.shape[0]} point sets but {boxes.shape[0]} boxes")
