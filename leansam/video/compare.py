"""Track agreement: a candidate tracking model's masks against a reference's, frame by frame.

    report = compare_tracks(VideoPredictor(reference), VideoPredictor(candidate), "clip.mp4",
                            {0: [Prompt(1, box=(10, 20, 90, 120))]}, TrackGates(min_mean_iou=0.95))
    print(report.table())

Both predictors get the same prompts on the same frames and are propagated in lockstep (one frame
of the reference, the same frame of the candidate), so no track is held in memory. For every
yielded frame and object the masks (logits > 0 at the video size) give an IoU (two empty masks:
1) and a count of differing pixels. A candidate is anything a :class:`VideoPredictor` runs: a
model in another precision, an int8 model (:mod:`leansam.video.quantize`), ONNX graphs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..eval.evaluators import mask_iou
from ..fidelity import Check, Gated, Stats
from .frames import FrameSource, open_video
from .predictor import VideoPredictor, track_prompts

__all__ = ["FrameAgreement", "TrackComparison", "TrackGates", "compare_tracks"]


@dataclass(frozen=True)
class TrackGates:
    """Thresholds of the track gate (None: not gated).

    Attributes:
        min_mean_iou: mean mask IoU over every frame and object.
        min_frame_iou: the worst frame's (and object's) mask IoU.
        max_pixel_fraction: fraction of the video's pixels (frames x objects x H x W) that differ.
    """

    min_mean_iou: float | None = None
    min_frame_iou: float | None = None
    max_pixel_fraction: float | None = None

    def __post_init__(self) -> None:
        for name, v in asdict(self).items():
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"TrackGates.{name} must be in [0, 1], got {v}")


@dataclass(frozen=True)
class FrameAgreement:
    """One object on one frame: mask IoU, pixels of each mask and pixels that differ."""

    frame_idx: int
    obj_id: Any
    iou: float
    reference_pixels: int
    candidate_pixels: int
    differing_pixels: int


@dataclass
class TrackComparison(Gated):
    """Result of :func:`compare_tracks`; ``passed`` is True when every gate holds."""

    frame_size: tuple[int, int]
    rows: list[FrameAgreement]
    seconds: dict[str, float]
    checks: list[Check] = field(default_factory=list)

    @property
    def iou(self) -> Stats | None:
        return Stats.of([r.iou for r in self.rows])

    @property
    def pixel_fraction(self) -> float:
        """Differing pixels over frames x objects x H x W."""
        total = len(self.rows) * self.frame_size[0] * self.frame_size[1]
        return sum(r.differing_pixels for r in self.rows) / max(total, 1)

    @property
    def worst(self) -> FrameAgreement | None:
        return min(self.rows, key=lambda r: r.iou, default=None)

    def per_object(self) -> dict[Any, Stats]:
        """Mask-IoU statistics of each object over its frames."""
        ids = list(dict.fromkeys(r.obj_id for r in self.rows))
        return {o: Stats.of([r.iou for r in self.rows if r.obj_id == o]) for o in ids}

    def to_dict(self) -> dict[str, Any]:
        iou, worst = self.iou, self.worst
        return {
            "frame_size": list(self.frame_size),
            "frames": len({r.frame_idx for r in self.rows}),
            "mask_iou": None if iou is None else asdict(iou),
            "worst": None if worst is None else asdict(worst),
            "pixel_fraction": self.pixel_fraction,
            "per_object": {str(o): asdict(s) for o, s in self.per_object().items()},
            "seconds": self.seconds,
            "checks": [{**asdict(c), "passed": c.passed} for c in self.checks],
            "passed": self.passed,
            "rows": [asdict(r) for r in self.rows],
        }

    def table(self) -> str:
        """A Markdown table: mask IoU overall and per object, differing pixels, time, gates."""
        gates = {c.name: c for c in self.checks}

        def gate(key: str) -> str:
            g = gates.get(key)
            return f"{g.op} {g.threshold:g}: {'pass' if g.passed else 'FAIL'}" if g else "-"

        iou, worst = self.iou, self.worst
        frames = len({r.frame_idx for r in self.rows})
        lines = ["| measure | value | gate |", "|---|---|---|"]
        if iou is not None:
            lines.append(
                f"| mask IoU, mean over {len(self.rows)} frame-objects | {iou.mean:.4f} | {gate('mean_iou')} |"
            )
            lines.append(
                f"| mask IoU, worst (frame {worst.frame_idx}, object {worst.obj_id}) | {iou.min:.4f} "
                f"| {gate('frame_iou')} |"
            )
            for o, s in self.per_object().items():
                lines.append(
                    f"| object {o}: mean / worst IoU over {s.n} frames | {s.mean:.4f} / {s.min:.4f} | |"
                )
        lines.append(f"| pixels that differ | {100 * self.pixel_fraction:.3f}% | {gate('pixel_fraction')} |")
        for side, s in self.seconds.items():
            lines.append(f"| {side}: seconds per frame | {s / max(frames, 1):.3f} | |")
        return "\n".join(lines)


def _timed(results: Iterator, seconds: dict[str, float], side: str) -> Iterator:
    while True:
        t0 = time.perf_counter()
        item = next(results, None)
        seconds[side] += time.perf_counter() - t0
        if item is None:
            return
        yield item


def _gate(report: TrackComparison, gates: TrackGates) -> list[Check]:
    iou = report.iou
    checks = []
    if gates.min_mean_iou is not None:
        checks.append(Check("mean_iou", None if iou is None else iou.mean, gates.min_mean_iou, ">="))
    if gates.min_frame_iou is not None:
        checks.append(Check("frame_iou", None if iou is None else iou.min, gates.min_frame_iou, ">="))
    if gates.max_pixel_fraction is not None:
        value = report.pixel_fraction if report.rows else None
        checks.append(Check("pixel_fraction", value, gates.max_pixel_fraction, "<="))
    return checks


def compare_tracks(
    reference: VideoPredictor,
    candidate: VideoPredictor,
    video: str | os.PathLike | np.ndarray | Sequence[np.ndarray] | FrameSource,
    prompts: dict[int, list],
    gates: TrackGates | None = None,
    reverse: bool = False,
) -> TrackComparison:
    """Tracks ``prompts`` (frame -> [:class:`~leansam.video.stream.Prompt`], video pixels) with
    both predictors and compares their masks on every yielded frame and object.

    Raises:
        RuntimeError: the two predictors yield different frames or objects (not the same video
            or options).
    """
    frames = open_video(video)
    seconds = {"reference": 0.0, "candidate": 0.0}
    ref = _timed(track_prompts(reference, frames, prompts, reverse), seconds, "reference")
    cand = _timed(track_prompts(candidate, frames, prompts, reverse), seconds, "candidate")
    rows: list[FrameAgreement] = []
    for (fa, ids_a, la), (fb, ids_b, lb) in zip(ref, cand, strict=True):
        if fa != fb or list(ids_a) != list(ids_b):
            raise RuntimeError(
                f"the tracks diverge: frame {fa} objects {ids_a} against frame {fb} objects {ids_b}"
            )
        a, b = (la[:, 0] > 0).cpu().numpy(), (lb[:, 0] > 0).cpu().numpy()
        ious = mask_iou(b, a)
        for k, obj in enumerate(ids_a):
            rows.append(
                FrameAgreement(
                    fa,
                    obj,
                    float(ious[k]),
                    int(a[k].sum()),
                    int(b[k].sum()),
                    int(np.count_nonzero(a[k] != b[k])),
                )
            )
    report = TrackComparison((frames.height, frames.width), rows, seconds)
    report.checks = _gate(report, gates or TrackGates())
    return report
