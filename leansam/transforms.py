"""Image pre-processing and mask post-processing, described as data.

Every family's pipeline is one :class:`ImageTransform`:

* SAM / MobileSAM / EdgeSAM / ... : longest side to 1024 with PIL bilinear on
  uint8, normalise in 0..255 units, zero-pad bottom/right; masks are upscaled
  to the padded frame, cropped, then resized to the original size.
* EfficientViT-SAM L: the same at 512 for the encoder, prompts and masks in the 1024 frame.
* EfficientSAM: squash to 1024x1024 with ``F.interpolate`` (no aspect, no pad),
  [0, 1] ImageNet normalisation, bicubic upscaling straight to the original size.
* SAM 2: squash with antialiased bilinear, [0, 1] ImageNet normalisation,
  bilinear straight to the original size.

Coordinate conventions: ``original_size`` is (H, W) of the user's image;
``frame_size`` is (h, w) that image occupies in the prompt frame (e.g. 768 x 1024
for a 480 x 640 image under SAM; 1024 x 1024 when squashed). A point (x, y) in
original pixels maps to (x * w / W, y * h / H) in the frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

SAM_MEAN = (123.675, 116.28, 103.53)
SAM_STD = (58.395, 57.12, 57.375)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageTransform:
    """How an image becomes encoder input, and how low-res logits become full-size masks.

    Attributes:
        encoder_size: side S of the square encoder input (1024; 512 for EfficientViT-SAM L).
        prompt_frame: side of the square frame prompts and mask crops live in (1024).
        resize: ``longest_side`` keeps the aspect ratio and pads; ``square`` squashes.
        interpolation: ``pil_bilinear`` (PIL on uint8), ``bilinear``, ``bilinear_antialias``
            (torch, on float pixels after ``input_scale``).
        input_scale: pixels are multiplied by it before normalising (1/255 for [0, 1] families).
        mean, std: per-channel normalisation in the units after ``input_scale``.
        upsample: interpolation of low-res logits (``bilinear`` or ``bicubic``).
        crop: upscale to the padded prompt frame and crop (SAM); else resize straight to (H, W).
        low_res_clamp: SAM 2's predictor clamps the low-res logits it returns to [-c, c]
            (after the full-size masks were computed from the unclamped ones).
    """

    encoder_size: int = 1024
    prompt_frame: int = 1024
    resize: Literal["longest_side", "square"] = "longest_side"
    interpolation: Literal["pil_bilinear", "bilinear", "bilinear_antialias"] = "pil_bilinear"
    input_scale: float = 1.0
    mean: tuple[float, float, float] = SAM_MEAN
    std: tuple[float, float, float] = SAM_STD
    upsample: Literal["bilinear", "bicubic"] = "bilinear"
    crop: bool = True
    low_res_clamp: float | None = None

    def __post_init__(self) -> None:
        if self.encoder_size <= 0 or self.prompt_frame <= 0:
            raise ValueError("encoder_size and prompt_frame must be positive")
        if self.resize not in ("longest_side", "square"):
            raise ValueError(f"resize must be 'longest_side' or 'square', not {self.resize!r}")
        if self.interpolation not in ("pil_bilinear", "bilinear", "bilinear_antialias"):
            raise ValueError(f"unknown interpolation {self.interpolation!r}")
        if self.upsample not in ("bilinear", "bicubic"):
            raise ValueError(f"unknown upsample {self.upsample!r}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    def frame_size(self, original_size: tuple[int, int], side: int | None = None) -> tuple[int, int]:
        """(h, w) of the image inside a square frame of ``side`` (default: the prompt frame)."""
        side = self.prompt_frame if side is None else side
        if self.resize == "square":
            return side, side
        return longest_side_shape(original_size, side)


SAM_TRANSFORM = ImageTransform()


def longest_side_shape(size: tuple[int, int], side: int) -> tuple[int, int]:
    """(h, w) scaled so the longer side is ``side``, rounded half up as segment-anything does."""
    h, w = size
    scale = side / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def preprocess(image: np.ndarray, t: ImageTransform) -> torch.Tensor:
    """H x W x 3 uint8 RGB -> 1 x 3 x S x S float32 encoder input (S = ``t.encoder_size``)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got shape {image.shape} dtype {image.dtype}")
    h, w = image.shape[:2]
    new_h, new_w = t.frame_size((h, w), t.encoder_size)
    mean = torch.tensor(t.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(t.std, dtype=torch.float32).view(1, 3, 1, 1)
    if t.interpolation == "pil_bilinear":
        if (new_h, new_w) != (h, w):
            image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
        x = _to_tensor(image)
        if t.input_scale != 1.0:
            x = x * t.input_scale
    else:
        x = _to_tensor(image)
        if t.input_scale != 1.0:
            x = x * t.input_scale
        if (new_h, new_w) != (h, w):
            x = F.interpolate(
                x,
                (new_h, new_w),
                mode="bilinear",
                align_corners=False,
                antialias=t.interpolation == "bilinear_antialias",
            )
    x = (x - mean) / std
    s = t.encoder_size
    if (new_h, new_w) != (s, s):
        # Pad after normalising: the padding is 0 in normalised units, as upstream.
        x = F.pad(x, (0, s - new_w, 0, s - new_h))
    return x.contiguous()


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x H x W float32 (copies read-only arrays such as PIL's)."""
    if not image.flags.writeable or not image.flags.c_contiguous:
        image = np.array(image, copy=True, order="C")
    return torch.from_numpy(image).permute(2, 0, 1)[None].float()


def postprocess_logits(
    low_res: torch.Tensor, t: ImageTransform, original_size: tuple[int, int]
) -> torch.Tensor:
    """B x M x 256 x 256 low-res logits -> B x M x H x W logits at the original image size.

    Images up to :data:`SEPARABLE_MAX_PIXELS` take :func:`_resize_separable` (two small matrix
    products, the same weights); larger ones the step-by-step :func:`_resize_stepwise`.
    """
    b, m, lh, lw = low_res.shape
    if b * m == 0 or original_size[0] * original_size[1] > SEPARABLE_MAX_PIXELS:
        return _resize_stepwise(low_res, t, original_size)
    rows = _resize_matrix(lh, t, original_size, 0)
    cols = _resize_matrix(lw, t, original_size, 1)
    return _resize_separable(low_res, rows, cols)


# Above this many output pixels the dense matrices cost more than step-by-step interpolation:
# the products take about (rows kept) multiply-adds per output pixel, interpolation a handful.
SEPARABLE_MAX_PIXELS = 2**21


def _resize_separable(
    low_res: torch.Tensor, rows: tuple[torch.Tensor, int], cols: tuple[torch.Tensor, int]
) -> torch.Tensor:
    """Applies ``R @ x @ C^T`` to every B x M plane: R is H x kh, C is W x kw (kh/kw leading
    low-res rows/columns that reach the output; the rest have zero weight)."""
    r, kh = rows
    c, kw = cols
    r, ct = r.to(low_res), c.t().to(low_res)
    x = low_res[..., :kh, :kw] @ ct  # B x M x kh x W
    return torch.matmul(r, x)  # B x M x H x W


def _resize_stepwise(
    low_res: torch.Tensor, t: ImageTransform, original_size: tuple[int, int]
) -> torch.Tensor:
    """The postprocessing as segment-anything writes it: upscale, crop, resize (``F.interpolate``)."""
    b, m, lh, lw = low_res.shape
    x = low_res.reshape(b * m, 1, lh, lw)
    if t.crop:
        side = t.prompt_frame
        fh, fw = t.frame_size(original_size)
        # Only the rows/columns that survive the crop are upscaled. With an exact
        # integer factor and align_corners=False, output pixel i reads source
        # pixels around floor((i + .5) / f - .5) (one more for bilinear, two
        # more for bicubic), so keeping that margin gives bit-identical values
        # to upscaling the whole frame and cropping.
        f_h, f_w = side // lh, side // lw
        margin = 1 if t.upsample == "bilinear" else 2
        if f_h * lh == side and f_w * lw == side:
            keep_h = min(lh, -(-fh // f_h) + margin)
            keep_w = min(lw, -(-fw // f_w) + margin)
            x = F.interpolate(
                x[..., :keep_h, :keep_w], (keep_h * f_h, keep_w * f_w), mode=t.upsample, align_corners=False
            )
        else:
            x = F.interpolate(x, (side, side), mode=t.upsample, align_corners=False)
        x = x[..., :fh, :fw]
    x = F.interpolate(x, original_size, mode=t.upsample, align_corners=False)
    return x.reshape(b, m, *original_size)


@lru_cache(maxsize=64)
def _resize_matrix(
    n: int, t: ImageTransform, original_size: tuple[int, int], axis: int
) -> tuple[torch.Tensor, int]:
    """The whole postprocessing along one axis (0: rows, 1: columns) as a matrix.

    Bilinear and bicubic ``F.interpolate`` are separable, so upscale-crop-resize along one axis is a
    linear map from the ``n`` low-res samples to the output's. Running :func:`_resize_stepwise` on
    the ``n`` one-hot vectors (the other axis of size 1, which interpolation leaves untouched) gives
    that map with exactly the weights interpolation uses. Returns (out x k matrix, k): the output
    reads only the first k low-res samples (the padding rows/columns beyond are cropped away).
    """
    eye = torch.eye(n).view(n, 1, n, 1)  # float32: the very weights float32 interpolation uses
    if axis == 1:
        eye = eye.transpose(2, 3)
    size = (original_size[0], 1) if axis == 0 else (1, original_size[1])
    # One-axis frame: the other axis has one pixel in and out. Crop families scale the frame's
    # other side in proportion, so compute frame rows/columns from the real size.
    if t.crop:
        fh, fw = t.frame_size(original_size)
        side, keep = t.prompt_frame, (fh if axis == 0 else fw)
        shape = (side, 1) if axis == 0 else (1, side)
        x = F.interpolate(eye, shape, mode=t.upsample, align_corners=False)
        x = x[:, :, :keep] if axis == 0 else x[:, :, :, :keep]
    else:
        x = eye
    x = F.interpolate(x, size, mode=t.upsample, align_corners=False)
    mat = x.reshape(n, -1).t()  # out x n
    used = torch.nonzero(mat.abs().sum(0)).flatten()
    k = int(used.max()) + 1 if len(used) else 1
    return mat[:, :k].float().contiguous(), k
