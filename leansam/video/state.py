"""Per-frame outputs, per-object memory banks, and which of them a tracking step reads."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from .config import VideoConfig
from .frames import FrameSource


@dataclass
class FrameOutput:
    """What is kept of one object on one frame.

    pred_masks: 1 x 1 x 256 x 256 low-res logits (after hole filling); obj_ptr: 1 x C;
    score: 1 x 1 object-score logit; maskmem: 1 x 64 x 64 x 64 memory (bfloat16), or None until
    the memory encoder ran on it.
    """

    pred_masks: torch.Tensor
    obj_ptr: torch.Tensor
    score: torch.Tensor
    maskmem: torch.Tensor | None = None


@dataclass
class ObjectTrack:
    """One object's prompts and outputs (frame index -> ...)."""

    points: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    masks: dict[int, torch.Tensor] = field(default_factory=dict)
    cond: dict[int, FrameOutput] = field(default_factory=dict)
    non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    temp_cond: dict[int, FrameOutput] = field(default_factory=dict)
    temp_non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    tracked: dict[int, bool] = field(default_factory=dict)  # frame -> tracked in reverse

    def stored(self, frame_idx: int) -> FrameOutput | None:
        """The latest output of this object on a frame (prompt results first), or None."""
        for d in (self.temp_cond, self.temp_non_cond, self.cond, self.non_cond):
            if frame_idx in d:
                return d[frame_idx]
        return None

    def clear(self) -> None:
        for d in (
            self.points,
            self.masks,
            self.cond,
            self.non_cond,
            self.temp_cond,
            self.temp_non_cond,
            self.tracked,
        ):
            d.clear()


@dataclass
class VideoState:
    """The inference state of :class:`~leansam.video.predictor.VideoPredictor` (``inference_state``)."""

    frames: FrameSource
    num_frames: int
    video_height: int
    video_width: int
    obj_ids: list = field(default_factory=list)
    tracks: list[ObjectTrack] = field(default_factory=list)
    feature_cache: OrderedDict = field(default_factory=OrderedDict)

    def obj_idx(self, obj_id, create: bool = True) -> int | None:
        """Index of ``obj_id`` in :attr:`obj_ids`, adding the object when new and ``create``."""
        if obj_id in self.obj_ids:
            return self.obj_ids.index(obj_id)
        if not create:
            return None
        self.obj_ids.append(obj_id)
        self.tracks.append(ObjectTrack())
        return len(self.obj_ids) - 1

    def stored_output(self, frame_idx: int, obj_id) -> FrameOutput | None:
        """The output kept for ``obj_id`` on ``frame_idx`` (None when there is none)."""
        idx = self.obj_idx(obj_id, create=False)
        return None if idx is None else self.tracks[idx].stored(frame_idx)


def gather_memory(
    cfg: VideoConfig,
    cond: dict[int, FrameOutput],
    non_cond: dict[int, FrameOutput],
    frame_idx: int,
    reverse: bool,
    num_frames: int | None,
) -> tuple[list[tuple[int, torch.Tensor]], list[tuple[int, torch.Tensor]], int]:
    """What the memory attention reads when tracking ``frame_idx`` (official selection rules).

    Returns (memories as (temporal slot, memory), pointers as (frame offset, pointer), pointer window):
    every conditioning frame in slot 0; the previous ``num_maskmem - 1`` frames (following ones in
    reverse) in slots ``num_maskmem - 1`` (nearest) down to 1; the pointers of conditioning frames
    not after the frame (not before it in reverse) and of the previous ``window - 1`` frames, with
    ``window = min(num_frames, max_obj_ptrs)`` (``max_obj_ptrs`` when the length is unknown).
    """
    n_mem = cfg.num_maskmem
    step = 1 if reverse else -1
    memories = [(0, out.maskmem) for out in cond.values()]
    for t_pos in range(1, n_mem):
        out = non_cond.get(frame_idx + step * (n_mem - t_pos))
        if out is not None:
            memories.append((t_pos, out.maskmem))
    window = cfg.max_obj_ptrs if num_frames is None else min(num_frames, cfg.max_obj_ptrs)
    sign = -1 if reverse else 1
    pointers = [
        ((frame_idx - t) * sign, out.obj_ptr)
        for t, out in cond.items()
        if (t >= frame_idx if reverse else t <= frame_idx)
    ]
    for t_diff in range(1, window):
        t = frame_idx + t_diff if reverse else frame_idx - t_diff
        if t < 0 or (num_frames is not None and t >= num_frames):
            break
        out = non_cond.get(t)
        if out is not None:
            pointers.append((t_diff, out.obj_ptr))
    return memories, pointers, window
