"""``GeneratorOptions``: the validated settings of :class:`~leansam.everything.AutomaticMaskGenerator`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .records import OUTPUT_MODES
from .samplers import BoxSource, GridSampler, HierarchicalSampler, PromptSampler, check_points_per_side

if TYPE_CHECKING:
    from ..registry import EverythingDefaults

STRATEGIES = ("grid", "hierarchical", "boxes")

#: segment_anything's generator thresholds (SAM ViT-H's): what click strategies use for the
#: options left as None when the model's registry entry declares none.
SAM_DEFAULTS = {
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "stability_score_offset": 1.0,
    "box_nms_thresh": 0.7,
}
#: TinySAM's confident-logit threshold (SAM-H's logits): the hierarchical default of a model that
#: declares none.
TINYSAM_HIGH_SCORE = 8.5
# Detector boxes are not filtered (MobileSAMv2 keeps one mask per detected object).
_BOX_DEFAULTS = {
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "stability_score_offset": 1.0,
    "box_nms_thresh": 1.0,
}
_FINITE = (
    "pred_iou_thresh",
    "stability_score_thresh",
    "stability_score_offset",
    "box_nms_thresh",
    "crop_nms_thresh",
    "mask_nms_thresh",
    "high_score_thresh",
)


def _is_int(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


@dataclass(frozen=True)
class GeneratorOptions:
    """Options of the mask generator, checked on construction (ValueError names the bad one).

    Attributes:
        points_per_side: grid density (grid: N x N clicks; hierarchical: the dense density),
            None when ``point_grids`` is given. Must be positive.
        points_per_batch: click prompts per decoder call (bounds memory).
        pred_iou_thresh: keep masks with predicted IoU above it (0 disables).
            None: the model's default for clicks (see below), else 0.88; 0.0 for boxes.
        stability_score_thresh: keep masks with stability score at least this (0 disables).
            None: the model's default for clicks, else 0.95; 0.0 for boxes.
        stability_score_offset: logit offset of the stability score. None: the model's default
            for clicks, else 1.0.
        box_nms_thresh: box-IoU threshold of NMS within a crop. None: the model's default for
            clicks, else 0.7; 1.0 (off) for boxes.
        crop_n_layers: extra crop layers; layer i has (2**i)^2 crops, each encoded once.
        crop_nms_thresh: box-IoU threshold of NMS across crops (prefers masks from smaller crops).
        crop_overlap_ratio: overlap of neighbouring crops, as a fraction of the short side.
        crop_n_points_downscale_factor: points per side in layer i are divided by this**i.
        point_grids: explicit grids, one N x 2 array of (x, y) in [0, 1] per crop layer (grid only).
        min_mask_region_area: fill holes / remove islands smaller than this (pixels), then re-NMS.
        output_mode: ``"binary_mask"`` (H x W bool), ``"uncompressed_rle"`` or ``"coco_rle"``.
        non_overlapping: mask-level NMS at ``mask_nms_thresh``, then every pixel belongs to
            at most one mask (the highest predicted IoU); area, bbox and RLE are recomputed.
        mask_nms_thresh: mask-IoU threshold used with ``non_overlapping``.
        high_score_thresh: hierarchical only: logit above which a confident sparse mask covers a
            pixel (its dense clicks are skipped). None: the model's default, else TinySAM's 8.5.
        boxes: boxes strategy: the prompts, see :func:`~leansam.everything.load_boxes` (JSON path,
            N x 4 XYXY array or tensor in pixels of the image, or a callable ``image -> boxes``).
        box_batch_size: box prompts per decoder call (MobileSAMv2: 320).
        multimask_output: three masks per prompt; None: True for clicks, False for boxes.
        progress: True for a tqdm bar over prompt batches, or a callback ``(done, known_total)``.

    "The model's default" is the :class:`leansam.registry.EverythingDefaults` of its registry entry
    (``ModelInfo.everything``, looked up by ``model.name``); official models declare none and get
    segment_anything's values. A value set here always wins.
    """

    points_per_side: int | None = 32
    points_per_batch: int = 64
    pred_iou_thresh: float | None = None
    stability_score_thresh: float | None = None
    stability_score_offset: float | None = None
    box_nms_thresh: float | None = None
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    point_grids: list[np.ndarray] | None = None
    min_mask_region_area: int = 0
    output_mode: str = "binary_mask"
    non_overlapping: bool = False
    mask_nms_thresh: float = 0.5
    high_score_thresh: float | None = None
    boxes: BoxSource | None = None
    box_batch_size: int = 320
    multimask_output: bool | None = None
    progress: bool | Callable[[int, int], None] = False

    def __post_init__(self) -> None:
        if self.output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, not {self.output_mode!r}")
        for name in ("points_per_batch", "box_batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not _is_int(self.crop_n_layers) or self.crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be a non-negative integer, got {self.crop_n_layers!r}")
        factor = self.crop_n_points_downscale_factor
        if not _is_int(factor) or factor < 1:
            raise ValueError(f"crop_n_points_downscale_factor must be >= 1, got {factor!r}")
        if not 0.0 <= self.crop_overlap_ratio < 1.0:
            raise ValueError(f"crop_overlap_ratio must be in [0, 1), got {self.crop_overlap_ratio}")
        if self.min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0, got {self.min_mask_region_area}")
        for name in _FINITE:
            # NaN compares False with everything: it would silently switch a filter on or off.
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.points_per_side is not None:  # validated for every strategy, even where unused
            object.__setattr__(self, "points_per_side", check_points_per_side(self.points_per_side))

    @classmethod
    def from_kwargs(cls, options: GeneratorOptions | None = None, **overrides: Any) -> GeneratorOptions:
        """``options`` (default: all defaults) with the named fields replaced; unknown names raise TypeError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown mask generator option(s): {', '.join(unknown)}")
        return replace(options if options is not None else cls(), **overrides)

    def resolved(self, strategy: str, model_defaults: EverythingDefaults | None = None) -> GeneratorOptions:
        """The options left as None filled in: for click strategies from ``model_defaults`` (a
        model's registered defaults) where it sets them, else segment_anything's; for boxes with
        the boxes strategy's (no filtering)."""
        d = {
            **(_BOX_DEFAULTS if strategy == "boxes" else SAM_DEFAULTS),
            "high_score_thresh": TINYSAM_HIGH_SCORE,
        }
        if strategy != "boxes" and model_defaults is not None:
            d.update(model_defaults.thresholds())
        return replace(self, **{k: float(d[k] if getattr(self, k) is None else getattr(self, k)) for k in d})


def strategy_name(strategy: str | PromptSampler) -> str | PromptSampler:
    """The name a strategy's options are resolved for: a sampler's ``name``, else ``strategy`` as
    given (:func:`make_sampler` rejects what is not a strategy)."""
    return strategy.name if isinstance(strategy, PromptSampler) else strategy


def make_sampler(strategy: str | PromptSampler, o: GeneratorOptions) -> tuple[str, PromptSampler | None]:
    """(strategy name, sampler) for ``strategy`` with the :meth:`~GeneratorOptions.resolved` options
    ``o``; the boxes strategy's sampler is built per image (None)."""
    if isinstance(strategy, PromptSampler):
        if o.crop_n_layers and not strategy.supports_crops:
            raise ValueError(f"sampler {strategy.name!r} does not support crop layers")
        return strategy.name, strategy
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES} or a PromptSampler, not {strategy!r}")
    if strategy in ("grid", "hierarchical") and (o.points_per_side is None) == (o.point_grids is None):
        raise ValueError("give exactly one of points_per_side and point_grids")
    if strategy == "boxes":
        if o.point_grids is not None:
            raise ValueError("the boxes strategy uses box prompts; point_grids is not supported")
        if o.crop_n_layers:
            raise ValueError("the boxes strategy prompts the whole image; crop_n_layers must be 0")
        return strategy, None
    if strategy == "hierarchical":
        if o.point_grids is not None:
            raise ValueError("hierarchical sampling builds its own grids; point_grids is not supported")
        check_memory(o, (0, 0))
        return strategy, HierarchicalSampler(
            o.points_per_side, o.high_score_thresh, o.crop_n_points_downscale_factor
        )
    check_memory(o, (0, 0))  # the prompt grids, before they are built
    if o.point_grids is not None:
        return strategy, GridSampler(o.point_grids)
    return strategy, GridSampler.from_points_per_side(
        o.points_per_side, o.crop_n_layers, o.crop_n_points_downscale_factor
    )


def memory_estimate(o: GeneratorOptions, image_size: tuple[int, int], mask_chunk: int = 32) -> int:
    """Bytes the generator needs about at its peak for an image of ``image_size`` (H, W).

    The terms: the prompts of every crop (coordinates and per-prompt bookkeeping, ~64 bytes each),
    one batch of low-resolution logits (``points_per_batch`` x 3 x 256 x 256 float32) and one
    chunk of ``mask_chunk`` masks upscaled to the full image (float32 logits, their threshold and
    the stability score's comparisons: ~8 bytes per pixel per mask).
    """
    h, w = image_size
    layers = min(int(o.crop_n_layers), 64)  # 4**64 crops is far past any limit already
    factor = int(o.crop_n_points_downscale_factor)
    if o.point_grids is not None:
        per_layer = [len(g) for g in o.point_grids]
        points = sum(4**i * per_layer[min(i, len(per_layer) - 1)] for i in range(layers + 1))
    elif o.points_per_side is not None:
        pps = int(o.points_per_side)
        points = sum(4**i * max(1, pps // factor**i) ** 2 for i in range(layers + 1))
    else:
        points = 0
    batch = max(int(o.points_per_batch), int(o.box_batch_size)) * 3 * 256 * 256 * 4
    return int(points * 64 + batch + mask_chunk * h * w * 8)


def check_memory(o: GeneratorOptions, image_size: tuple[int, int], mask_chunk: int = 32) -> None:
    """Refuses options whose :func:`memory_estimate` is above ``LEANSAM_MAX_MEMORY``.

    Raises:
        leansam.io.InputError (a ValueError): naming the options, the estimate and how to raise the limit.
    """
    from .. import limits

    h, w = image_size
    what = (
        f"segment-everything on a {w} x {h} image with points_per_side={o.points_per_side}, "
        f"crop_n_layers={o.crop_n_layers}, points_per_batch={o.points_per_batch}"
    )
    limits.check(limits.MEMORY, memory_estimate(o, image_size, mask_chunk), what)
