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

from collections.abc import Iterator
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


#: Images above this many pixels are resized in bounded memory: one channel at a time (torch
#: interpolation), or one band of rows at a time (Pillow; :func:`leansam.large_images.resize_bilinear`).
LARGE_IMAGE_PIXELS = 1 << 24


def preprocess(image: np.ndarray, t: ImageTransform) -> torch.Tensor:
    """H x W x 3 uint8 RGB -> 1 x 3 x S x S float32 encoder input (S = ``t.encoder_size``)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got shape {image.shape} dtype {image.dtype}")
    h, w = image.shape[:2]
    new_h, new_w = t.frame_size((h, w), t.encoder_size)
    mean = torch.tensor(t.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(t.std, dtype=torch.float32).view(1, 3, 1, 1)
    if t.interpolation == "pil_bilinear":
        if (new_h, new_w) != (h, w) and h * w > LARGE_IMAGE_PIXELS:
            from .large_images import resize_bilinear

            image = resize_bilinear(image, (new_h, new_w))  # the same pixels, no Pillow copy of the image
        elif (new_h, new_w) != (h, w):
            image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
        x = _to_tensor(image)
        if t.input_scale != 1.0:
            x = x * t.input_scale
    elif (new_h, new_w) != (h, w) and h * w > LARGE_IMAGE_PIXELS:
        # One channel at a time, so that one full-size float plane exists instead of three (and
        # their scaled copy); equal to the three-channel call up to float rounding.
        x = torch.cat([_resized_channel(image, c, (new_h, new_w), t) for c in range(3)], dim=1)
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


def _resized_channel(image: np.ndarray, c: int, size: tuple[int, int], t: ImageTransform) -> torch.Tensor:
    """Channel ``c`` of an H x W x 3 uint8 image, scaled by ``t.input_scale`` and resized to
    ``size``: 1 x 1 x h x w float32."""
    plane = torch.from_numpy(np.ascontiguousarray(image[..., c])).float()[None, None]
    if t.input_scale != 1.0:
        plane.mul_(t.input_scale)
    return F.interpolate(
        plane, size, mode="bilinear", align_corners=False, antialias=t.interpolation == "bilinear_antialias"
    )


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
    rows = _resize_matrix(lh, t, original_size, 0)  # H x kh
    cols = _resize_matrix(lw, t, original_size, 1).to(low_res)  # W x kw
    # Only the leading kh rows / kw columns reach the output (the rest is padding, cropped away).
    x = low_res[..., : rows.shape[1], : cols.shape[1]] @ cols.t()  # B x M x kh x W
    starts, weights = _row_bands(lh, t, original_size)
    # Each output row reads a handful of neighbouring rows: apply the row matrix one block of
    # output rows at a time, to the band of rows that block reads (far fewer multiply-adds than the
    # dense H x kh product, the same weights; docs/performance.md).
    band = weights.shape[-1]
    idx = (starts[:, None] + torch.arange(band)).clamp_(max=x.shape[-2] - 1).flatten().to(x.device)
    windows = x[..., idx, :].unflatten(-2, (len(starts), band))  # B x M x blocks x band x W
    out = torch.matmul(weights.to(x), windows)  # B x M x blocks x block x W
    return out.flatten(-3, -2)[..., : rows.shape[0], :]


@lru_cache(maxsize=64)
def _row_bands(
    n: int, t: ImageTransform, original_size: tuple[int, int], block: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_resize_matrix` along rows as bands: output rows in blocks of ``block``, each reading
    ``band`` consecutive input rows from its start. Returns (starts: blocks, weights: blocks x block x
    band); rows past the output (last block) and columns past the matrix have weight 0."""
    mat = _resize_matrix(n, t, original_size, 0)
    h, k = mat.shape
    nb = -(-h // block)
    padded = torch.zeros(nb * block, k + block * k)  # room for any band width
    padded[:h, :k] = mat
    blocks = padded.view(nb, block, -1)
    nz = blocks.abs().sum(1) > 0  # blocks x columns: the columns each block reads
    first = torch.where(nz.any(1), nz.float().argmax(1), torch.zeros(nb, dtype=torch.long))
    last = torch.where(nz.any(1), k - 1 - nz[:, :k].flip(1).float().argmax(1), first)
    band = int((last - first).max()) + 1
    starts = first.clamp(max=max(k - band, 0))
    cols = starts[:, None] + torch.arange(band)
    weights = torch.gather(blocks, 2, cols[:, None, :].expand(nb, block, band))
    return starts, weights.contiguous()


# Above this many output pixels the dense matrices cost more than step-by-step interpolation:
# the products take about (rows kept) multiply-adds per output pixel, interpolation a handful.
SEPARABLE_MAX_PIXELS = 2**21


def _resize_stepwise(
    low_res: torch.Tensor, t: ImageTransform, original_size: tuple[int, int]
) -> torch.Tensor:
    """The postprocessing as segment-anything writes it: upscale, crop, resize (``F.interpolate``)."""
    b, m = low_res.shape[:2]
    x = F.interpolate(
        _frame_logits(low_res, t, original_size), original_size, mode=t.upsample, align_corners=False
    )
    return x.reshape(b, m, *original_size)


def _frame_logits(low_res: torch.Tensor, t: ImageTransform, original_size: tuple[int, int]) -> torch.Tensor:
    """B x M x h x w low-res logits -> (B M) x 1 x h' x w', what the last resize of
    :func:`_resize_stepwise` reads: cropped to the image in the prompt frame (``t.crop``), or as is."""
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
    return x


#: Binary masks of images above this many pixels (and above :data:`SEPARABLE_MAX_PIXELS`, where the
#: stepwise path applies) are thresholded one block of columns at a time (:func:`threshold_in_blocks`).
BANDED_MASK_PIXELS = SEPARABLE_MAX_PIXELS


#: ``F.interpolate`` on CPU takes another kernel when output height + width <= 128; with both sides
#: at least this long, every resize of :func:`stepwise_column_blocks` takes the one the whole takes.
MIN_BLOCK_SIDE = 128


def thresholds_in_blocks(original_size: tuple[int, int], low_res: torch.Tensor) -> bool:
    """Whether binary masks of an image of (H, W) from the logits ``low_res`` are made by
    :func:`threshold_in_blocks`: float32 logits (16-bit ones would round between its two resizes)
    on the CPU (whose ``F.interpolate`` kernels the split is checked against)."""
    large = original_size[0] * original_size[1] > max(SEPARABLE_MAX_PIXELS, BANDED_MASK_PIXELS)
    fits = min(original_size) >= MIN_BLOCK_SIDE
    return large and fits and low_res.dtype == torch.float32 and low_res.device.type == "cpu"


def threshold_in_blocks(
    low_res: torch.Tensor,
    t: ImageTransform,
    original_size: tuple[int, int],
    threshold: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``_resize_stepwise(low_res, t, original_size) > threshold`` without the full-size float logits:
    B x M x h x w low-res logits -> B x M x H x W bool masks (written to ``out``, contiguous, if given).
    """
    b, m = low_res.shape[:2]
    h, w = original_size
    if out is None:
        out = torch.empty((b, m, h, w), dtype=torch.bool, device=low_res.device)
    flat = out.view(b * m, h, w)
    for i, cols, logits in stepwise_column_blocks(low_res, t, original_size):
        flat[i, :, cols] = logits > threshold
    return out


def stepwise_column_blocks(
    low_res: torch.Tensor, t: ImageTransform, original_size: tuple[int, int], block_bytes: int = 1 << 22
) -> Iterator[tuple[int, slice, torch.Tensor]]:
    """:func:`_resize_stepwise` one block of columns of one mask at a time: (mask index in B x M
    flattened, columns, H x columns float logits), equal to those of ``_resize_stepwise``.

    ``F.interpolate``'s 2-D kernel computes each output as the vertical combination of horizontal
    combinations, and resizing an axis to its own size has weights 1 and 0. So its last resize splits
    exactly into a horizontal resize to (h', W), then vertical resizes of blocks of columns to (H, columns).
    Both H and W must be at least :data:`MIN_BLOCK_SIDE`.
    """
    h, w = original_size
    if min(h, w) < MIN_BLOCK_SIDE:
        raise ValueError(f"column blocks need both sides >= {MIN_BLOCK_SIDE}, not {original_size}")
    frame = _frame_logits(low_res, t, original_size)
    step = max(1, block_bytes // (4 * h))
    for i in range(frame.shape[0]):  # one mask at a time: only its h' x W intermediate
        rows = F.interpolate(frame[i : i + 1], (frame.shape[-2], w), mode=t.upsample, align_corners=False)
        for c in range(0, w, step):
            part = rows[..., c : c + step].contiguous()
            full = F.interpolate(part, (h, part.shape[-1]), mode=t.upsample, align_corners=False)
            yield i, slice(c, c + part.shape[-1]), full[0, 0]


def interpolation_matrix(
    n: int, m: int, mode: str, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> torch.Tensor:
    """``F.interpolate`` from n to m samples along one axis (``align_corners=False``) as an m x n matrix.

    Bilinear and bicubic interpolation are separable and linear, so resizing one axis is a matrix
    product; interpolating the n unit vectors gives that matrix with PyTorch's own weights (border
    clamping included). Only the order of the sums differs from ``F.interpolate`` itself.
    """
    eye = torch.eye(n, dtype=dtype, device=device).reshape(n, 1, n, 1)
    return F.interpolate(eye, size=(m, 1), mode=mode, align_corners=False).reshape(n, m).T


@lru_cache(maxsize=64)
def _resize_matrix(n: int, t: ImageTransform, original_size: tuple[int, int], axis: int) -> torch.Tensor:
    """The whole postprocessing along one axis (0: rows, 1: columns) as an out x k matrix.

    Upscale to the prompt frame, crop to the image and resize to the original size, composed from
    :func:`interpolation_matrix` (float32: the weights float32 interpolation uses). k <= n: the
    output reads only the first k low-res samples (those beyond lie in the cropped-away padding).
    """
    out = original_size[axis]
    if t.crop:
        keep = t.frame_size(original_size)[axis]
        to_frame = interpolation_matrix(n, t.prompt_frame, t.upsample)[:keep]  # keep x n
        mat = interpolation_matrix(keep, out, t.upsample) @ to_frame
    else:
        mat = interpolation_matrix(n, out, t.upsample)
    used = torch.nonzero(mat.abs().sum(0)).flatten()
    k = int(used.max()) + 1 if len(used) else 1
    return mat[:, :k].contiguous()
