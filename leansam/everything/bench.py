"""Timing of the segment-everything strategies against segment_anything's generator.

    from leansam.everything.bench import benchmark_generators
    result = benchmark_generators(model, image, official=SamAutomaticMaskGenerator(sam, points_per_side=16),
                                  points_per_side=16)
    print(result.table())

Every run is end to end (image encoder included) and timed with ``time.perf_counter``;
the best of ``repeats`` runs is reported. The official generator is optional and is
passed in by the caller, so leansam does not depend on segment_anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .generator import AutomaticMaskGenerator


@dataclass
class RunTiming:
    """One generator on one image.

    Attributes:
        name: e.g. ``"leansam grid"``, ``"segment_anything grid"``.
        seconds: best wall time over the repeats (seconds, encoder included).
        all_seconds: every repeat's wall time.
        masks: records returned.
        prompts: prompts decoded (leansam runs; None for the official generator).
        stats: leansam's :class:`~leansam.everything.GenerateStats` of the best run, as a dict.
    """

    name: str
    seconds: float
    all_seconds: list[float]
    masks: int
    prompts: int | None = None
    stats: dict[str, Any] | None = None


@dataclass
class BenchmarkResult:
    """Timings of several generators on the same image with the same options."""

    image_size: tuple[int, int]
    options: dict[str, Any]
    threads: int
    runs: list[RunTiming] = field(default_factory=list)

    def get(self, name: str) -> RunTiming:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(name)

    def speedup(self, name: str, baseline: str) -> float:
        """How many times faster ``name`` is than ``baseline`` (best times)."""
        return self.get(baseline).seconds / self.get(name).seconds

    def table(self) -> str:
        """A Markdown table: generator, seconds, masks, prompts decoded, and the leansam stage split."""
        lines = [
            f"image {self.image_size[1]}x{self.image_size[0]}, torch threads {self.threads}, options {self.options}",
            "",
            "| generator | seconds (best) | masks | prompts | encode / decode / filter+RLE / nms (s) |",
            "|---|---:|---:|---:|---|",
        ]
        for r in self.runs:
            split = ""
            if r.stats is not None:
                s = r.stats["seconds"]
                split = f"{s['encode']:.2f} / {s['decode']:.2f} / {s['filter']:.2f} / {s['nms']:.2f}"
            prompts = "" if r.prompts is None else str(r.prompts)
            lines.append(f"| {r.name} | {r.seconds:.2f} | {r.masks} | {prompts} | {split} |")
        return "\n".join(lines)


def _time(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    """Wall times of ``repeats`` calls and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        with torch.no_grad():
            out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def benchmark_generators(
    model: Any,
    image: np.ndarray,
    *,
    official: Any = None,
    strategies: Sequence[str] = ("grid", "hierarchical"),
    repeats: int = 1,
    **options: Any,
) -> BenchmarkResult:
    """Times leansam's strategies (and optionally segment_anything's generator) on one image.

    Args:
        model: a :class:`leansam.Sam`.
        image: H x W x 3 uint8 RGB.
        official: segment_anything's generator for the same weights and options, i.e. an
            object with ``generate(image)`` (``SamAutomaticMaskGenerator(sam, **options)``)
            or a callable ``image -> records``; None skips it.
        strategies: leansam strategies to time (``grid``, ``hierarchical``; ``boxes`` needs ``boxes=``).
        repeats: runs per generator; the best time is reported.
        **options: :class:`AutomaticMaskGenerator` options, the same for every leansam run
            (e.g. ``points_per_side=16``); pass the same values to the official generator.

    Returns:
        :class:`BenchmarkResult` with one :class:`RunTiming` per generator, leansam's first.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    result = BenchmarkResult(
        (int(image.shape[0]), int(image.shape[1])),
        {k: v for k, v in options.items() if k != "boxes"},
        torch.get_num_threads(),
    )
    for strategy in strategies:
        gen = AutomaticMaskGenerator(model, strategy, **options)
        stats: list[dict[str, Any]] = []

        def run(gen: AutomaticMaskGenerator = gen, stats: list = stats) -> list[dict[str, Any]]:
            out = gen.generate(image)
            stats.append(gen.last_stats.to_dict())
            return out

        times, records = _time(run, repeats)
        best = int(np.argmin(times))
        result.runs.append(
            RunTiming(
                f"leansam {strategy}",
                times[best],
                times,
                len(records),
                stats[best]["prompts_decoded"],
                stats[best],
            )
        )
    if official is not None:
        fn = official.generate if hasattr(official, "generate") else official
        times, records = _time(lambda: fn(image), repeats)
        result.runs.append(RunTiming("segment_anything grid", min(times), times, len(records)))
    return result


class StageTimer:
    """Wall time spent inside chosen modules and methods, summed per stage name, call after call.

    Both sides of a comparison can be split the same way (e.g. image encoder, mask decoder,
    upscaling) without touching their code:

        timer = StageTimer()
        timer.module("encoder", model.image_encoder)          # forward pre/post hooks
        timer.method("upscale", model, "postprocess_masks")   # an instance-attribute wrapper
        gen.generate(image); split = timer.take()             # {"encoder": s, "upscale": s}

    Several wrappers may feed one stage; they must not nest (nested time would count twice).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start: dict[str, float] = {}

    def _add(self, name: str, dt: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + dt

    def module(self, name: str, module: torch.nn.Module) -> None:
        """Adds the time of every ``module(...)`` call to stage ``name``."""

        def pre(_m: Any, _a: Any) -> None:
            self._start[name] = time.perf_counter()

        def post(_m: Any, _a: Any, _o: Any) -> None:
            self._add(name, time.perf_counter() - self._start.pop(name))

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    def method(self, name: str, obj: Any, attr: str) -> None:
        """Adds the time of every ``obj.attr(...)`` call to stage ``name`` (wraps the bound method)."""
        fn = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._add(name, time.perf_counter() - t)

        object.__setattr__(obj, attr, timed)  # plain attribute, also on an nn.Module

    def take(self) -> dict[str, float]:
        """The seconds per stage since the last ``take`` (then starts again from zero)."""
        out, self.seconds = self.seconds, {}
        return out


def rle_runs(mask: np.ndarray) -> int:
    """Runs in the column-major RLE of one H x W bool mask (what both generators store per mask)."""
    flat = mask.T.ravel()
    return 1 + int(np.count_nonzero(flat[1:] != flat[:-1]))


def compare_records(
    mine: list[dict[str, Any]],
    ref: list[dict[str, Any]],
    thresholds: dict[str, Any] | None = None,
    near: float = 1e-3,
) -> dict[str, Any]:
    """Agreement of two lists of segment_anything records with ``binary_mask`` segmentations.

    Masks are paired by prompt point (``point_coords``, to 1e-3 pixel), then by the closest
    predicted IoU (a click gives up to 3 masks). Returns the counts, how many were paired, the
    pairs' mask IoU (min, mean, how many >= 0.99), the largest predicted-IoU / stability / bbox
    differences, the mean RLE run count of the first 20 masks, and (given ``thresholds`` with
    ``pred_iou_thresh`` and ``stability_score_thresh``) how many of ``mine`` lie within ``near`` of
    a threshold, where float rounding may flip a keep/drop decision.
    """
    free: dict[tuple[float, ...], list[int]] = {}
    for j, r in enumerate(ref):
        free.setdefault(tuple(np.round(r["point_coords"][0], 3)), []).append(j)
    ious, d_iou, d_stab, d_box = [], [], [], []
    for a in mine:
        cands = free.get(tuple(np.round(a["point_coords"][0], 3)), [])
        if not cands:
            continue
        j = min(cands, key=lambda j: abs(ref[j]["predicted_iou"] - a["predicted_iou"]))
        cands.remove(j)
        b = ref[j]
        ma, mb = a["segmentation"], b["segmentation"]
        ious.append(float((ma & mb).sum() / max(1, (ma | mb).sum())))
        d_iou.append(abs(a["predicted_iou"] - b["predicted_iou"]))
        d_stab.append(abs(a["stability_score"] - b["stability_score"]))
        d_box.append(float(np.abs(np.array(a["bbox"]) - np.array(b["bbox"])).max()))
    out: dict[str, Any] = {
        "leansam_masks": len(mine),
        "official_masks": len(ref),
        "matched": len(ious),
        "unmatched_leansam": len(mine) - len(ious),
        "unmatched_official": len(ref) - len(ious),
        "matched_iou_min": min(ious) if ious else None,
        "matched_iou_mean": float(np.mean(ious)) if ious else None,
        "matched_iou_ge_099": int(sum(i >= 0.99 for i in ious)),
        "max_abs_predicted_iou_diff": max(d_iou) if d_iou else None,
        "max_abs_stability_diff": max(d_stab) if d_stab else None,
        "max_bbox_diff_px": max(d_box) if d_box else None,
        "mean_rle_runs_per_mask": float(np.mean([rle_runs(r["segmentation"]) for r in mine[:20]]))
        if mine
        else None,
    }
    if thresholds is not None:
        out["leansam_masks_near_a_threshold"] = int(
            sum(
                abs(a["predicted_iou"] - thresholds["pred_iou_thresh"]) < near
                or abs(a["stability_score"] - thresholds["stability_score_thresh"]) < near
                for a in mine
            )
        )
    return out
