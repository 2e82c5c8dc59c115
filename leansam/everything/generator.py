"""``AutomaticMaskGenerator``: segment everything in an image, with pluggable prompt samplers.

    gen = leansam.AutomaticMaskGenerator(model)                      # SAM's grid, SAM's defaults
    records = gen.generate(image)                                   # H x W x 3 uint8 RGB
    gen = leansam.AutomaticMaskGenerator(model, "hierarchical")     # TinySAM
    gen = leansam.AutomaticMaskGenerator(model, "boxes", boxes="detections.json")  # MobileSAMv2

Records are segment_anything's ``SamAutomaticMaskGenerator`` records (see
:func:`leansam.everything.records.to_records`), so code written for it keeps working.

Per crop the pipeline is: encode the crop once; for each prompt round and each
batch of up to ``points_per_batch`` prompts, ONE decoder pass (``model.decode``;
with a leansam ``Sam`` the decoder's upscaling runs only for prompts that keep a
mask); drop masks by predicted IoU before upscaling (the filter is per mask, so
this only skips work); upscale, score stability, threshold, box, edge-filter and
run-length encode in chunks of masks; keep only the RLEs. Box NMS per crop,
then across crops, then the optional clean-ups. Peak memory is set by the
batch size, not by the number of prompts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..models.mask_decoder import MaskDecoder
from ..models.sam import Sam
from . import ops
from .records import OUTPUT_MODES, MaskSet, make_non_overlapping, remove_small_regions, to_records
from .samplers import (
    BoxSampler,
    BoxSource,
    GridSampler,
    HierarchicalSampler,
    PromptRound,
    PromptSampler,
    check_points_per_side,
    load_boxes,
)

STRATEGIES = ("grid", "hierarchical", "boxes")
_STAGES = ("encode", "decode", "filter", "nms", "postprocess", "output")

# Strategy defaults for the thresholds left as None: segment_anything's values for clicks;
# no filtering for detector boxes (MobileSAMv2 keeps one mask per detected object).
_DEFAULTS = {
    "points": {"pred_iou_thresh": 0.88, "stability_score_thresh": 0.95, "box_nms_thresh": 0.7},
    "boxes": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0},
}


@dataclass
class GenerateStats:
    """What the last :meth:`AutomaticMaskGenerator.generate` call did.

    Attributes:
        strategy: sampler name.
        crops: crops encoded (= image-encoder calls).
        prompts_decoded: prompts sent to the mask decoder.
        prompts_skipped: candidate prompts dropped because confident masks already covered them.
        batches: ``model.decode`` calls.
        prompts_per_round: prompts decoded per round name (``grid``, ``sparse``, ``dense``, ``boxes``).
        masks_after_filters: masks that passed the IoU / stability / edge filters, before NMS.
        masks_out: records returned.
        seconds: wall time per stage: encode, decode, filter (upscale, stability, boxes, RLE),
            nms, postprocess (small regions, non-overlap), output (records).
        total_seconds: wall time of the whole call.
    """

    strategy: str = ""
    crops: int = 0
    prompts_decoded: int = 0
    prompts_skipped: int = 0
    batches: int = 0
    prompts_per_round: dict[str, int] = field(default_factory=dict)
    masks_after_filters: int = 0
    masks_out: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_STAGES, 0.0))
    total_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Progress:
    """tqdm bar or user callback ``(batches_done, batches_known)`` over prompt batches."""

    def __init__(self, progress: bool | Callable[[int, int], None]) -> None:
        self.callback = progress if callable(progress) else None
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=0, unit="batch", desc="segment everything")
        self.done = 0
        self.total = 0

    def add(self, n: int) -> None:
        self.total += n
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def step(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _NoModel:
    """Stands in for the model in :meth:`AutomaticMaskGenerator.check_options` (the constructor only calls eval)."""

    def eval(self) -> _NoModel:
        return self


class AutomaticMaskGenerator:
    """Generates masks for everything in an image by prompting a SAM-family model.

    Args:
        model: a :class:`leansam.Sam` (e.g. from :func:`leansam.build_model`).
        strategy: ``"grid"`` (segment_anything), ``"hierarchical"`` (TinySAM),
            ``"boxes"`` (MobileSAMv2 object-aware boxes), or a :class:`PromptSampler`.
        points_per_side: grid density (grid: N x N clicks; hierarchical: the dense density),
            None when ``point_grids`` is given. Must be positive.
        points_per_batch: click prompts per ``model.decode`` call (bounds memory).
        pred_iou_thresh: keep masks with predicted IoU above it (0 disables).
            None: 0.88 for clicks, 0.0 for boxes.
        stability_score_thresh: keep masks with stability score at least this (0 disables).
            None: 0.95 for clicks, 0.0 for boxes.
        stability_score_offset: logit offset of the stability score.
        box_nms_thresh: box-IoU threshold of NMS within a crop. None: 0.7 for clicks, 1.0 (off) for boxes.
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
        high_score_thresh: hierarchical only: logit above which a confident mask covers a pixel (8.5).
        boxes: boxes strategy: the prompts, see :func:`load_boxes` (JSON path, N x 4 XYXY array or
            tensor in pixels of the image, or a callable ``image -> boxes``); may also be given
            to :meth:`generate`.
        box_batch_size: box prompts per ``model.decode`` call (MobileSAMv2: 320).
        multimask_output: three masks per prompt; None: True for clicks, False for boxes.
        progress: True for a tqdm bar over prompt batches, or a callback ``(done, known_total)``.

    After :meth:`generate`, ``last_stats`` (:class:`GenerateStats`) holds counts and timings.
    """

    def __init__(
        self,
        model: Any,
        strategy: str | PromptSampler = "grid",
        *,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float | None = None,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float | None = None,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        non_overlapping: bool = False,
        mask_nms_thresh: float = 0.5,
        high_score_thresh: float = 8.5,
        boxes: BoxSource | None = None,
        box_batch_size: int = 320,
        multimask_output: bool | None = None,
        progress: bool | Callable[[int, int], None] = False,
    ) -> None:
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, not {output_mode!r}")
        for name, value in (("points_per_batch", points_per_batch), ("box_batch_size", box_batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(crop_n_layers, (int, np.integer)) or crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be a non-negative integer, got {crop_n_layers!r}")
        if (
            not isinstance(crop_n_points_downscale_factor, (int, np.integer))
            or crop_n_points_downscale_factor < 1
        ):
            raise ValueError(
                f"crop_n_points_downscale_factor must be >= 1, got {crop_n_points_downscale_factor!r}"
            )
        if not 0.0 <= crop_overlap_ratio < 1.0:
            raise ValueError(f"crop_overlap_ratio must be in [0, 1), got {crop_overlap_ratio}")
        if min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0, got {min_mask_region_area}")
        for name, value in (
            ("pred_iou_thresh", pred_iou_thresh),
            ("stability_score_thresh", stability_score_thresh),
            ("stability_score_offset", stability_score_offset),
            ("box_nms_thresh", box_nms_thresh),
            ("crop_nms_thresh", crop_nms_thresh),
            ("mask_nms_thresh", mask_nms_thresh),
            ("high_score_thresh", high_score_thresh),
        ):
            # NaN compares False with everything: it would silently switch a filter on or off.
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")

        if isinstance(strategy, str):
            if strategy not in STRATEGIES:
                raise ValueError(f"strategy must be one of {STRATEGIES} or a PromptSampler, not {strategy!r}")
            if strategy in ("grid", "hierarchical") and (points_per_side is None) == (point_grids is None):
                raise ValueError("give exactly one of points_per_side and point_grids")
            if points_per_side is not None:  # validated for every strategy, even where unused
                points_per_side = check_points_per_side(points_per_side)
            if strategy == "boxes" and point_grids is not None:
                raise ValueError("the boxes strategy uses box prompts; point_grids is not supported")
            if strategy == "grid":
                sampler: PromptSampler | None
                if point_grids is not None:
                    sampler = GridSampler(point_grids)
                else:
                    sampler = GridSampler.from_points_per_side(
                        points_per_side, crop_n_layers, crop_n_points_downscale_factor
                    )
            elif strategy == "hierarchical":
                if point_grids is not None:
                    raise ValueError(
                        "hierarchical sampling builds its own grids; point_grids is not supported"
                    )
                sampler = HierarchicalSampler(
                    points_per_side, high_score_thresh, crop_n_points_downscale_factor
                )
            else:
                if crop_n_layers:
                    raise ValueError("the boxes strategy prompts the whole image; crop_n_layers must be 0")
                sampler = None  # built per image from the boxes
            self.strategy = strategy
        elif isinstance(strategy, PromptSampler):
            sampler = strategy
            self.strategy = strategy.name
            if crop_n_layers and not strategy.supports_crops:
                raise ValueError(f"sampler {strategy.name!r} does not support crop layers")
        else:
            raise ValueError(f"strategy must be one of {STRATEGIES} or a PromptSampler, not {strategy!r}")

        kind = "boxes" if self.strategy == "boxes" else "points"
        d = _DEFAULTS[kind]
        self.model = model.eval()
        self.sampler = sampler
        self.points_per_batch = int(points_per_batch)
        self.box_batch_size = int(box_batch_size)
        self.pred_iou_thresh = d["pred_iou_thresh"] if pred_iou_thresh is None else float(pred_iou_thresh)
        self.stability_score_thresh = (
            d["stability_score_thresh"] if stability_score_thresh is None else float(stability_score_thresh)
        )
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = d["box_nms_thresh"] if box_nms_thresh is None else float(box_nms_thresh)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.non_overlapping = bool(non_overlapping)
        self.mask_nms_thresh = float(mask_nms_thresh)
        self.boxes = boxes
        self.multimask_output = multimask_output
        self.progress = progress
        self.mask_chunk = 32  # masks upscaled at once: bounds the float logits to mask_chunk x H x W
        self.last_stats = GenerateStats(strategy=self.strategy)

    @classmethod
    def check_options(cls, strategy: str | PromptSampler = "grid", **options: Any) -> None:
        """Raises ValueError for the options the constructor would reject, without a model
        (so that a command line can refuse bad options before it loads one)."""
        cls(_NoModel(), strategy, **options)

    # --- public --------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, image: np.ndarray, boxes: BoxSource | None = None) -> list[dict[str, Any]]:
        """Masks for everything in ``image``.

        Args:
            image: H x W x 3 uint8 RGB.
            boxes: boxes strategy only: prompts for this image (overrides the constructor's).

        Returns:
            segment_anything records (see :func:`~leansam.everything.records.to_records`).
        """
        data = self.generate_maskset(image, boxes)
        t = time.perf_counter()
        records = to_records(data, self.output_mode)
        self.last_stats.seconds["output"] += time.perf_counter() - t
        self.last_stats.total_seconds += time.perf_counter() - t
        return records

    @torch.no_grad()
    def generate_maskset(self, image: np.ndarray, boxes: BoxSource | None = None) -> MaskSet:
        """Like :meth:`generate`, but returns the columnar :class:`MaskSet` (masks as RLEs)."""
        start = time.perf_counter()
        image = self._check_image(image)
        size = (int(image.shape[0]), int(image.shape[1]))
        stats = self.last_stats = GenerateStats(strategy=self.strategy)
        sampler = self.sampler
        if self.strategy == "boxes" and sampler is None:
            source = boxes if boxes is not None else self.boxes
            if source is None:
                raise ValueError(
                    "the boxes strategy needs boxes (a JSON file, an N x 4 XYXY array or a callable)"
                )
            sampler = BoxSampler(load_boxes(source, size, image=image))
        elif boxes is not None:
            raise ValueError(f"boxes are only used by the boxes strategy, not {self.strategy!r}")

        crop_boxes, layers = ops.generate_crop_boxes(size, self.crop_n_layers, self.crop_overlap_ratio)
        progress = _Progress(self.progress)
        try:
            parts = [
                self._process_crop(image, crop, layer, size, sampler, progress)
                for crop, layer in zip(crop_boxes, layers)
            ]
        finally:
            progress.close()
        data = MaskSet.cat(parts, size)

        t = time.perf_counter()
        if len(crop_boxes) > 1 and len(data):
            # Across crops prefer masks from smaller crops (score = 1 / crop area).
            scores = 1.0 / ops.box_area(data.crop_boxes.double())
            data = data.select(ops.nms(data.boxes.float(), scores, self.crop_nms_thresh))
        stats.seconds["nms"] += time.perf_counter() - t

        t = time.perf_counter()
        if self.min_mask_region_area > 0:
            data = remove_small_regions(
                data, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh)
            )
        if self.non_overlapping:
            data = make_non_overlapping(data, self.mask_nms_thresh)
        stats.seconds["postprocess"] += time.perf_counter() - t
        stats.masks_out = len(data)
        stats.total_seconds = time.perf_counter() - start
        return data

    # --- internals -----------------------------------------------------------------------------
    @staticmethod
    def _check_image(image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an H x W x 3 uint8 RGB image, got shape {image.shape} and dtype {image.dtype}"
            )
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"image has zero size {image.shape[:2]}")
        return image

    def _process_crop(
        self,
        image: np.ndarray,
        crop_box: list[int],
        layer: int,
        size: tuple[int, int],
        sampler: PromptSampler,
        progress: _Progress,
    ) -> MaskSet:
        stats = self.last_stats
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        crop_size = (y1 - y0, x1 - x0)
        rounds = sampler.rounds(crop_size, layer)

        t = time.perf_counter()
        features = self.model.encode_image(self.model.preprocess(crop))
        stats.seconds["encode"] += time.perf_counter() - t
        stats.crops += 1

        covered: torch.Tensor | None = None
        if any(r.cover_thresh is not None for r in rounds):
            covered = torch.zeros(crop_size, dtype=torch.bool, device=self.model.device)
        parts: list[MaskSet] = []
        for rnd in rounds:
            rnd = self._drop_covered(rnd, covered)
            n = len(rnd)
            stats.prompts_per_round[rnd.name] = stats.prompts_per_round.get(rnd.name, 0) + n
            batch = self.box_batch_size if rnd.boxes is not None else self.points_per_batch
            progress.add(-(-n // batch))
            for s in range(0, n, batch):
                parts.append(self._process_batch(features, rnd, slice(s, s + batch), crop_box, size, covered))
                progress.step()
        data = MaskSet.cat(parts, size)
        stats.masks_after_filters += len(data)

        t = time.perf_counter()
        if len(data):
            data = data.select(ops.nms(data.boxes.float(), data.iou, self.box_nms_thresh))
        stats.seconds["nms"] += time.perf_counter() - t
        return data

    def _drop_covered(self, rnd: PromptRound, covered: torch.Tensor | None) -> PromptRound:
        """Removes the prompts of a ``skip_covered`` round that land on covered pixels."""
        if not rnd.skip_covered or covered is None or rnd.points is None or len(rnd) == 0:
            return rnd
        h, w = covered.shape
        # Pixel of a point: integer part of its coordinates (TinySAM indexes int(x), int(y)).
        xs = np.clip(rnd.points[:, 0].astype(np.int64), 0, w - 1)
        ys = np.clip(rnd.points[:, 1].astype(np.int64), 0, h - 1)
        hit = covered.cpu().numpy()[ys, xs]
        self.last_stats.prompts_skipped += int(hit.sum())
        return PromptRound(rnd.name, points=rnd.points[~hit], multimask_output=rnd.multimask_output)

    def _decode_kept(
        self, features: Any, prompts: Any, n: int, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decodes ``n`` prompts in one call and drops the masks whose predicted IoU is not above
        ``pred_iou_thresh`` (a per-mask filter, so dropping before upscaling changes no mask).

        Returns low-res logits K x h x w, predicted IoU K (float32) and the prompt index of each mask K
        (int64, CPU), in prompt-major order.

        With a leansam :class:`~leansam.models.sam.Sam` the IoU comes from the decoder's score head,
        which does not look at the masks: prompts with no mask above the threshold then skip the
        decoder's upscaling path (transposed convolutions and mask projection, about a third of the
        decoder's time), and the others are upscaled exactly as :meth:`Sam.decode` would.
        """
        model = self.model
        decoder = getattr(model, "mask_decoder", None)
        gate = (
            self.pred_iou_thresh > 0.0
            and isinstance(model, Sam)
            # A subclass or instance with its own decode is left alone.
            and type(model).decode is Sam.decode
            and "decode" not in vars(model)
            and isinstance(decoder, MaskDecoder)
            # SAM 2's single-mask rule picks a token from the masks themselves.
            and (multimask or not decoder.dynamic_multimask_via_stability)
        )
        if not gate:
            low, iou, _ = model.decode(features, prompts, None, multimask)
            m = iou.shape[1]
            low, iou = low.flatten(0, 1), iou.flatten(0, 1).float()
            owner = torch.arange(n).repeat_interleave(m)
            if self.pred_iou_thresh > 0.0:
                keep = (iou > self.pred_iou_thresh).cpu()
                low, iou, owner = low[keep.to(low.device)], iou[keep.to(iou.device)], owner[keep]
            return low, iou, owner
        # Sam.decode and MaskDecoder.forward, with the upscaling restricted to the prompts that keep a mask.
        sparse, dense = model.prompt_encoder(prompts, None, batch_size=n)
        tokens, src, size, iou, _ = decoder.predict_tokens(
            features.embed, model.prompt_encoder.get_dense_pe(), sparse, dense
        )
        sel = slice(1, None) if multimask else slice(0, 1)
        iou = iou[:, sel].float()
        keep = iou > self.pred_iou_thresh  # n x m
        rows = keep.any(dim=1).nonzero().flatten()
        high_res = features.high_res
        if high_res is not None:
            high_res = [f if f.shape[0] == 1 else f[rows] for f in high_res]
        low = decoder.masks_from_tokens(tokens[rows], src[rows], size, high_res)[:, sel]
        keep = keep[rows]
        owner = rows[:, None].expand_as(keep)[keep].cpu()
        return low[keep], iou[rows][keep], owner

    def _process_batch(
        self,
        features: Any,
        rnd: PromptRound,
        part: slice,
        crop_box: list[int],
        size: tuple[int, int],
        covered: torch.Tensor | None,
    ) -> MaskSet:
        """Decodes one batch of prompts in ONE ``model.decode`` call and keeps the surviving masks as RLEs."""
        stats = self.last_stats
        dev = self.model.device
        x0, y0, x1, y1 = crop_box
        crop_size = (y1 - y0, x1 - x0)
        multimask = rnd.multimask_output if self.multimask_output is None else self.multimask_output

        t = time.perf_counter()
        if rnd.points is not None:
            pts = torch.as_tensor(rnd.points[part], dtype=torch.float64)
            prompt_boxes = torch.full((len(pts), 4), float("nan"))
            prompts = self.model.prepare_prompts(
                pts.float().to(dev)[:, None, :],
                torch.ones(len(pts), 1, dtype=torch.int64, device=dev),
                None,
                crop_size,
            )
        else:
            prompt_boxes = torch.as_tensor(rnd.boxes[part], dtype=torch.float32)
            pts = ((prompt_boxes[:, :2] + prompt_boxes[:, 2:]) / 2).double()
            prompts = self.model.prepare_prompts(None, None, prompt_boxes.to(dev), crop_size)
        low, iou, owner = self._decode_kept(features, prompts, len(pts), multimask)
        stats.seconds["decode"] += time.perf_counter() - t
        stats.batches += 1
        stats.prompts_decoded += len(pts)

        t = time.perf_counter()
        offset = torch.tensor([x0, y0, x0, y0])
        full_box = [0, 0, size[1], size[0]]
        parts = []
        for s in range(0, len(low), self.mask_chunk):
            idx = torch.arange(s, min(s + self.mask_chunk, len(low)))  # masks of this chunk
            logits = self.model.postprocess_masks(low[s : s + self.mask_chunk, None], crop_size)[:, 0]
            stab = ops.stability_score(logits, self.model.mask_threshold, self.stability_score_offset)
            if self.stability_score_thresh > 0.0:
                keep = stab >= self.stability_score_thresh
                if not keep.any():
                    continue
                if not keep.all():
                    logits, stab, idx = logits[keep], stab[keep], idx[keep.cpu()]
            if covered is not None and rnd.cover_thresh is not None:
                covered |= (logits > rnd.cover_thresh).any(dim=0)
            masks = logits > self.model.mask_threshold
            del logits
            boxes, nonempty = ops.masks_to_boxes(masks, return_nonempty=True)
            boxes = boxes.cpu() + offset
            keep = nonempty.cpu()  # an empty mask is no segment
            if crop_box != full_box:
                keep &= ~ops.is_box_near_crop_edge(boxes, crop_box, full_box)
            if not keep.any():
                continue
            if not keep.all():
                masks, boxes, stab, idx = (
                    masks[keep.to(masks.device)],
                    boxes[keep],
                    stab[keep.to(stab.device)],
                    idx[keep],
                )
            sel = owner[idx]
            parts.append(
                MaskSet(
                    size,
                    ops.masks_to_rle(masks, (x0, y0), size),
                    boxes,
                    iou[idx.to(iou.device)].cpu(),
                    stab.cpu(),
                    pts[sel] + torch.tensor([x0, y0], dtype=torch.float64),
                    torch.tensor([crop_box], dtype=torch.int64).expand(len(idx), 4),
                    prompt_boxes[sel] + offset.float(),
                )
            )
        stats.seconds["filter"] += time.perf_counter() - t
        return MaskSet.cat(parts, size)
