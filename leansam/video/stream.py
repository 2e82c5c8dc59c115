"""Streaming tracking: frames arrive one at a time, masks leave as soon as each frame is done.

    tracker = StreamTracker("efficienttam_ti")
    prompts = {0: [Prompt(obj_id=1, box=[x0, y0, x1, y1])]}
    for frame_idx, obj_ids, logits in tracker.track(camera_frames(), prompts):
        show(logits > 0)                    # n_obj x 1 x H x W
        if needed: tracker.add_prompt(frame_idx + 1, Prompt(obj_id=2, points=[[x, y]], labels=[1]))

Memory is flat in the video length: per object the tracker keeps its prompted (conditioning) frames,
the memories of the last ``num_maskmem - 1`` frames and the object pointers of the last
``max_obj_ptrs - 1`` frames (what the memory attention reads), and only the current frame's image
features.

Same results as :class:`~leansam.video.predictor.VideoPredictor` when every prompt is on the first
frames and the video has at least ``max_obj_ptrs`` (16) frames. Two official behaviours a stream
cannot reproduce, because they depend on the future:

* SAM 2.1 encodes each pointer's frame offset relative to ``min(num_frames, 16) - 1``. The stream
  does not know the length and uses 16, so on clips shorter than 16 frames SAM 2.1's results differ
  from the offline predictor's (SAM 2 and EfficientTAM have no pointer encoding and match at any
  length).
* Offline, a frame attends to every conditioning frame of the object, also later ones; in a stream a
  prompt can only influence the frames after it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .frames import VideoError, check_frame
from .model import VideoModel
from .predictor import VideoPredictor
from .state import ObjectTrack, VideoState


@dataclass(frozen=True)
class Prompt:
    """A prompt for one object on one frame, in video pixels: clicks (N x 2 (x, y) + labels 1 / 0),
    a box (XYXY), or a mask (H x W bool)."""

    obj_id: Hashable
    points: Any = None
    labels: Any = None
    box: Any = None
    mask: Any = None

    def __post_init__(self) -> None:
        if self.mask is None and self.box is None and self.points is None:
            raise ValueError(f"the prompt for object {self.obj_id} has no points, box or mask")
        if (self.points is None) != (self.labels is None):
            raise ValueError("points and labels must be given together")


class _CurrentFrame:
    """The one frame a stream holds (indexed by its frame number)."""

    def __init__(self) -> None:
        self.index, self.frame = -1, None

    def __getitem__(self, i: int) -> np.ndarray:
        if i != self.index:
            raise IndexError(f"frame {i} is gone from the stream (current frame {self.index})")
        return self.frame


class StreamTracker:
    """Tracks objects through an iterable of frames (H x W x 3 uint8 RGB), one frame at a time.

    Args:
        model: a :class:`VideoPredictor` (its options are used), a :class:`VideoModel` or a registry name.
        **options: :class:`VideoPredictor` options when ``model`` is not a predictor.
    """

    def __init__(self, model: VideoPredictor | VideoModel | str, **options: Any) -> None:
        self.predictor = model if isinstance(model, VideoPredictor) else VideoPredictor(model, **options)
        self.state: VideoState | None = None
        self._pending: dict[int, list[Prompt]] = {}

    def add_prompt(self, frame_idx: int, prompt: Prompt) -> None:
        """Queues a prompt for frame ``frame_idx`` (a frame not processed yet)."""
        if self.state is not None and frame_idx <= self._frame_idx:
            raise ValueError(f"frame {frame_idx} was already processed (now at frame {self._frame_idx})")
        self._pending.setdefault(frame_idx, []).append(prompt)

    @property
    def _frame_idx(self) -> int:
        return self.state.frames.index if self.state is not None else -1

    @torch.inference_mode()
    def track(
        self,
        frames: Iterable[np.ndarray],
        prompts: Mapping[int, Sequence[Prompt]] | Callable[[int], Sequence[Prompt]] | None = None,
    ) -> Iterator[tuple[int, list, torch.Tensor]]:
        """Yields (frame_idx, obj_ids, logits n_obj x 1 x H x W at the frame size) per frame.

        ``prompts``: frame index -> prompts, or a function called with each frame index. Prompts can
        also be queued with :meth:`add_prompt` while iterating. Frames before the first prompt yield
        no objects (0 x 1 x H x W).
        """
        for t, ps in prompts.items() if isinstance(prompts, Mapping) else ():
            for p in ps:
                self.add_prompt(t, p)
        live = _CurrentFrame()
        self.state = None
        for t, frame in enumerate(frames):
            frame = check_frame(frame, f"frame {t}")
            if self.state is None:
                self.state = VideoState(live, None, *frame.shape[:2])
            elif frame.shape[:2] != (self.state.video_height, self.state.video_width):
                raise VideoError(
                    f"frame {t} is {frame.shape[1]}x{frame.shape[0]}, the stream started at "
                    f"{self.state.video_width}x{self.state.video_height}"
                )
            live.index, live.frame = t, frame
            self.state.feature_cache.clear()
            todo = self._pending.pop(t, [])
            if callable(prompts):
                todo += list(prompts(t) or ())
            logits = self._step(t, todo)
            yield t, list(self.state.obj_ids), logits

    def _step(self, t: int, prompts: list[Prompt]) -> torch.Tensor:
        pred, state = self.predictor, self.state
        prompted: set[int] = set()
        for p in prompts:
            idx = state.obj_idx(p.obj_id)
            track = state.tracks[idx]
            prev = track.cond.get(t)
            if p.mask is not None:
                out = pred.run_frame(state, track, t, True, None, pred.mask_to_model(p.mask), False, False)
            else:
                points = pred.points_to_model(
                    p.points, p.labels, p.box, (state.video_height, state.video_width)
                )
                prev_logits = None if prev is None else prev.pred_masks.clamp(-32.0, 32.0)
                out = pred.run_frame(state, track, t, True, points, None, False, False, prev_logits)
            track.cond[t] = out
            prompted.add(idx)
        vision = pred.features(state, t).vision
        for idx in prompted:
            pred.remember_prompted(vision, state.tracks[idx].cond[t])
        logits = []
        for idx, track in enumerate(state.tracks):
            if idx not in prompted:
                track.non_cond[t] = pred.run_frame(state, track, t, False, None, None, False, True)
            logits.append((track.cond.get(t) or track.non_cond[t]).pred_masks)
            self._forget(track, t)
        h, w = state.video_height, state.video_width
        if not logits:
            return torch.zeros(0, 1, h, w, device=pred.device)
        return pred._video_res(state, torch.cat(logits))

    def _forget(self, track: ObjectTrack, t: int) -> None:
        """Drops what the next frames will not read: tracked frames older than the pointer window,
        and the memories of tracked frames older than the memory window."""
        cfg = self.predictor.model.cfg
        for old in [k for k in track.non_cond if k <= t - (cfg.max_obj_ptrs - 1)]:
            del track.non_cond[old]
        for k, out in track.non_cond.items():
            if k <= t - (cfg.num_maskmem - 1):
                out.maskmem = None
