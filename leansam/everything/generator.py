"""``AutomaticMaskGenerator``: segment everything in an image, with pluggable prompt samplers.

    gen = leansam.AutomaticMaskGenerator(model)                      # SAM's grid, the model's defaults
    records = gen.generate(image)                                   # H x W x 3 uint8 RGB
    gen = leansam.AutomaticMaskGenerator(model, "hierarchical")     # TinySAM
    gen = leansam.AutomaticMaskGenerator(model, "boxes", boxes="detections.json")  # MobileSAMv2

Records are segment_anything's ``SamAutomaticMaskGenerator`` records (see
:func:`leansam.everything.records.to_records`), so code written for it keeps working.

Per crop the pipeline is: encode the crop once; for each prompt round and each
batch of up to ``points_per_batch`` prompts, ONE decoder pass
(``model.decode_confident``: masks are dropped by predicted IoU before upscaling; the filter is
per mask, so this only skips work); upscale, score stability, threshold, box, edge-filter and
run-length encode in chunks of masks; keep only the RLEs. Box NMS per crop,
then across crops, then the optional clean-ups. Peak memory is set by the
batch size, not by the number of prompts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..interface import ImageFeatures, PromptableModel
from ..registry import everything_defaults
from . import ops
from .options import STRATEGIES, GeneratorOptions, check_memory, make_sampler, strategy_name
from .records import MaskSet, make_non_overlapping, remove_small_regions, to_records
from .samplers import BoxSampler, BoxSource, PromptRound, PromptSampler, load_boxes

__all__ = ["STRATEGIES", "AutomaticMaskGenerator", "GenerateStats", "GeneratorOptions"]

_STAGES = ("encode", "decode", "filter", "nms", "postprocess", "output")


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


class AutomaticMaskGenerator:
    """Generates masks for everything in an image by prompting a SAM-family model.

    Args:
        model: a :class:`~leansam.interface.PromptableModel` (e.g. from :func:`leansam.build_model`).
        strategy: ``"grid"`` (segment_anything), ``"hierarchical"`` (TinySAM),
            ``"boxes"`` (MobileSAMv2 object-aware boxes), or a :class:`PromptSampler`.
        options: a :class:`GeneratorOptions` (default: all defaults).
        **overrides: fields of :class:`GeneratorOptions` by name (``points_per_side=16``, ...), as
            segment_anything's generator takes them. Thresholds left unset come from the model's
            registry entry (``ModelInfo.everything``, by ``model.name``), else segment_anything's.

    The resolved options are ``self.options``. After :meth:`generate`, ``last_stats``
    (:class:`GenerateStats`) holds counts and timings.
    """

    #: Masks upscaled at once: bounds the float logits to mask_chunk x H x W.
    mask_chunk = 32

    def __init__(
        self,
        model: PromptableModel,
        strategy: str | PromptSampler = "grid",
        options: GeneratorOptions | None = None,
        **overrides: Any,
    ) -> None:
        opts = GeneratorOptions.from_kwargs(options, **overrides)
        # resolved first: the hierarchical sampler takes the model's confident-logit threshold
        self.options = opts.resolved(
            strategy_name(strategy), everything_defaults(getattr(model, "name", None))
        )
        self.strategy, self.sampler = make_sampler(strategy, self.options)
        self.model = model.eval()
        self.last_stats = GenerateStats(strategy=self.strategy)

    @classmethod
    def check_options(cls, strategy: str | PromptSampler = "grid", **options: Any) -> None:
        """Raises ValueError for the options the constructor would reject, without a model
        (so that a command line can refuse bad options before it loads one)."""
        make_sampler(strategy, GeneratorOptions.from_kwargs(**options).resolved(strategy_name(strategy)))

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
        records = to_records(data, self.options.output_mode)
        self.last_stats.seconds["output"] += time.perf_counter() - t
        self.last_stats.total_seconds += time.perf_counter() - t
        return records

    @torch.no_grad()
    def generate_maskset(self, image: np.ndarray, boxes: BoxSource | None = None) -> MaskSet:
        """Like :meth:`generate`, but returns the columnar :class:`MaskSet` (masks as RLEs)."""
        start = time.perf_counter()
        image = self._check_image(image)
        size = (int(image.shape[0]), int(image.shape[1]))
        check_memory(self.options, size, self.mask_chunk)
        stats = self.last_stats = GenerateStats(strategy=self.strategy)
        sampler = self.sampler
        if self.strategy == "boxes" and sampler is None:
            source = boxes if boxes is not None else self.options.boxes
            if source is None:
                raise ValueError(
                    "the boxes strategy needs boxes (a JSON file, an N x 4 XYXY array or a callable)"
                )
            sampler = BoxSampler(load_boxes(source, size, image=image))
        elif boxes is not None:
            raise ValueError(f"boxes are only used by the boxes strategy, not {self.strategy!r}")

        crop_boxes, layers = ops.generate_crop_boxes(
            size, self.options.crop_n_layers, self.options.crop_overlap_ratio
        )
        progress = _Progress(self.options.progress)
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
            data = data.select(ops.nms(data.boxes.float(), scores, self.options.crop_nms_thresh))
        stats.seconds["nms"] += time.perf_counter() - t

        t = time.perf_counter()
        if self.options.min_mask_region_area > 0:
            data = remove_small_regions(
                data,
                self.options.min_mask_region_area,
                max(self.options.box_nms_thresh, self.options.crop_nms_thresh),
            )
        if self.options.non_overlapping:
            data = make_non_overlapping(data, self.options.mask_nms_thresh)
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
            batch = self.options.box_batch_size if rnd.boxes is not None else self.options.points_per_batch
            progress.add(-(-n // batch))
            for s in range(0, n, batch):
                parts.append(self._process_batch(features, rnd, slice(s, s + batch), crop_box, size, covered))
                progress.step()
        data = MaskSet.cat(parts, size)
        stats.masks_after_filters += len(data)

        t = time.perf_counter()
        if len(data):
            data = data.select(ops.nms(data.boxes.float(), data.iou, self.options.box_nms_thresh))
        stats.seconds["nms"] += time.perf_counter() - t
        return data

    def _drop_covered(self, rnd: PromptRound, covered: torch.Tensor | None) -> PromptRound:
        """Removes the prompts of a ``skip_covered`` round that land on covered pixels."""
        if not rnd.skip_covered or covered is None or rnd.points is None or len(rnd) == 0:
            return rnd
        xs, ys = rnd.click_pixels(tuple(covered.shape))
        hit = covered.cpu().numpy()[ys, xs]
        self.last_stats.prompts_skipped += int(hit.sum())
        return PromptRound(rnd.name, points=rnd.points[~hit], multimask_output=rnd.multimask_output)

    def _batch_prompts(
        self, rnd: PromptRound, part: slice, crop_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The prompts ``part`` of a round: (points K x 2 float64, boxes K x 4 (NaN for clicks), laid out),
        in pixels of the crop (box prompts are recorded at their centres)."""
        dev = self.model.device
        if rnd.points is not None:
            pts = torch.as_tensor(rnd.points[part], dtype=torch.float64)
            prompt_boxes = torch.full((len(pts), 4), float("nan"))
            labels = torch.ones(len(pts), 1, dtype=torch.int64, device=dev)
            return (
                pts,
                prompt_boxes,
                self.model.prepare_prompts(pts.float().to(dev)[:, None, :], labels, None, crop_size),
            )
        prompt_boxes = torch.as_tensor(rnd.boxes[part], dtype=torch.float32)
        pts = ((prompt_boxes[:, :2] + prompt_boxes[:, 2:]) / 2).double()
        return pts, prompt_boxes, self.model.prepare_prompts(None, None, prompt_boxes.to(dev), crop_size)

    def _process_batch(
        self,
        features: ImageFeatures,
        rnd: PromptRound,
        part: slice,
        crop_box: list[int],
        size: tuple[int, int],
        covered: torch.Tensor | None,
    ) -> MaskSet:
        """Decodes one batch of prompts in ONE decoder call and keeps the surviving masks as RLEs."""
        stats = self.last_stats
        x0, y0, x1, y1 = crop_box
        crop_size = (y1 - y0, x1 - x0)
        multimask = (
            rnd.multimask_output if self.options.multimask_output is None else self.options.multimask_output
        )

        t = time.perf_counter()
        pts, prompt_boxes, prompts = self._batch_prompts(rnd, part, crop_size)
        # One decoder call; masks whose predicted IoU is not above the threshold are dropped (a per-mask
        # filter, so the model may skip upscaling them).
        low, iou, owner = self.model.decode_confident(
            features, prompts, multimask, self.options.pred_iou_thresh
        )
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
            stab = ops.stability_score(logits, self.model.mask_threshold, self.options.stability_score_offset)
            if self.options.stability_score_thresh > 0.0:
                keep = stab >= self.options.stability_score_thresh
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
