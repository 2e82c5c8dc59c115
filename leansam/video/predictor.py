"""``VideoPredictor``: a drop-in for sam2's ``SAM2VideoPredictor`` on every model that can track.

    predictor = leansam.VideoPredictor("sam2.1_hiera_tiny")           # or a loaded VideoModel
    state = predictor.init_state(video_path="frames/")               # folder, file, array, frames
    predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=[x0, y0, x1, y1])
    for frame_idx, obj_ids, logits in predictor.propagate_in_video(state):
        masks = logits > 0                                            # n_obj x 1 x H x W

Coordinates are pixels of the video (x, y; boxes XYXY); logits are at the video size. Call
semantics, defaults and outputs are the official ones (``apply_postprocessing=True`` builder
defaults: holes of up to 8 pixels filled, prompted frames remembered from their binarised mask).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .build import load_video_model
from .frames import FrameSource, frame_to_input, open_video
from .holes import fill_holes
from .model import NO_OBJ_SCORE, FrameFeatures, VideoModel
from .state import FrameOutput, ObjectTrack, VideoState, gather_memory

Points = tuple[torch.Tensor, torch.Tensor]
PRECISIONS = ("float32", "bfloat16")


class VideoPredictor:
    """Tracks prompted objects through a video with SAM 2 / SAM 2.1 / EfficientTAM's memory.

    Args:
        model: a :class:`VideoModel`, or a registry name (loaded from its official checkpoint,
            or from ``checkpoint``).
        fill_hole_area: background holes of at most this many low-res pixels become foreground (0: off).
        non_overlap_masks: at each pixel keep only the highest-scoring object in the returned logits.
        clear_non_cond_mem_around_input: forget tracked frames within ``num_maskmem`` of a prompted frame.
        add_all_frames_to_correct_as_cond: a prompt on an already tracked frame makes it a conditioning frame.
        binarize_mask_from_pts_for_mem_enc: remember prompted frames from their hard mask.
        feature_cache_mb: encoder features of the most recently used frames are kept up to this
            size (the frame in use always is), so prompting or propagating again over frames
            already seen does not re-encode them. About 16 MB a frame for SAM 2 at 1024.
        precision: ``"float32"`` (the official results) or ``"bfloat16"``: the networks run under
            bf16 autocast (the precision SAM 2's own examples use on GPU), and on CPU the memory
            attention uses bf16 matrix products (:mod:`leansam.models.fast.bf16`). Faster on CPUs
            with AVX512-BF16 or AMX; masks differ from float32 on a small fraction of pixels
            (docs/video.md). PyTorch models only.
    """

    def __init__(
        self,
        model: VideoModel | str,
        *,
        checkpoint: str | os.PathLike | None = None,
        fill_hole_area: int = 8,
        non_overlap_masks: bool = False,
        clear_non_cond_mem_around_input: bool = False,
        add_all_frames_to_correct_as_cond: bool = False,
        binarize_mask_from_pts_for_mem_enc: bool = True,
        feature_cache_mb: float = 1024.0,
        precision: Literal["float32", "bfloat16"] = "float32",
        device: str | torch.device | None = None,
    ) -> None:
        if isinstance(model, str):
            model = load_video_model(model, checkpoint)
        self.model = model.eval() if device is None else model.to(device).eval()
        self.fill_hole_area = fill_hole_area
        self.non_overlap_masks = non_overlap_masks
        self.clear_non_cond_mem_around_input = clear_non_cond_mem_around_input
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        self.binarize_mask_from_pts_for_mem_enc = binarize_mask_from_pts_for_mem_enc
        if not feature_cache_mb >= 0:
            raise ValueError(f"feature_cache_mb must be >= 0, got {feature_cache_mb}")
        self.feature_cache_bytes = int(feature_cache_mb * 2**20)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision != "float32" and not isinstance(self.model, torch.nn.Module):
            raise ValueError(f"precision {precision!r} needs a PyTorch model; ONNX graphs run in float32")
        if precision != "float32" and getattr(getattr(self.model, "sam", None), "_leansam_quant", None):
            raise ValueError(f"precision {precision!r} does not combine with an int8 model; use float32")
        self.precision = precision

    def _autocast(self) -> torch.autocast:
        """The networks' precision: bf16 autocast for ``precision="bfloat16"``, else a no-op."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16")

    @property
    def image_size(self) -> int:
        return self.model.cfg.image_size

    @property
    def device(self) -> torch.device:
        return self.model.device

    # --- state -----------------------------------------------------------------------------------
    def init_state(
        self, video_path: str | os.PathLike | np.ndarray | Sequence[np.ndarray], **_official_options
    ) -> VideoState:
        """A fresh state for a video: folder of frames, video file, T x H x W x 3 uint8 array or frames.

        The official ``offload_*`` / ``async_loading_frames`` options are accepted and have no
        effect: frames are kept as uint8 and encoded when first needed.
        """
        frames = open_video(video_path)
        return VideoState(frames, len(frames), frames.height, frames.width)

    def reset_state(self, state: VideoState) -> None:
        """Removes every object, prompt and result."""
        state.obj_ids.clear()
        state.tracks.clear()

    @torch.inference_mode()
    def features(self, state: VideoState, frame_idx: int) -> FrameFeatures:
        """Encoder features of a frame (cached, least recently used dropped past ``feature_cache_mb``)."""
        cache = state.feature_cache
        if frame_idx in cache:
            cache.move_to_end(frame_idx)
            return cache[frame_idx]
        x = frame_to_input(state.frames[frame_idx], self.image_size).to(self.device)
        with self._autocast():
            feats = self.model.encode_frame(x)
        cache[frame_idx] = feats
        while len(cache) > 1 and len(cache) * feats.nbytes() > self.feature_cache_bytes:
            cache.popitem(last=False)
        return feats

    # --- prompt conversion -----------------------------------------------------------------------
    def points_to_model(self, points, labels, box, video_size: tuple[int, int] | None) -> Points:
        """Clicks N x 2 (x, y) + labels N and / or a box XYXY in video pixels -> model-frame
        (coords 1 x P x 2, labels 1 x P), box corners first (labels 2, 3). ``video_size`` (H, W);
        None: coordinates already normalised to [0, 1]."""
        coords = torch.as_tensor(
            np.zeros((0, 2)) if points is None else np.asarray(points), dtype=torch.float32
        )
        labs = torch.as_tensor(np.zeros(0) if labels is None else np.asarray(labels), dtype=torch.int32)
        coords, labs = coords.reshape(1, -1, 2), labs.reshape(1, -1)
        if coords.shape[1] != labs.shape[1]:
            raise ValueError(f"{coords.shape[1]} points but {labs.shape[1]} labels")
        if box is not None:
            coords = torch.cat(
                [torch.as_tensor(np.asarray(box), dtype=torch.float32).reshape(1, 2, 2), coords], dim=1
            )
            labs = torch.cat([torch.tensor([[2, 3]], dtype=torch.int32), labs], dim=1)
        if video_size is not None:
            coords = coords / torch.tensor([video_size[1], video_size[0]])
        return (coords * self.image_size).to(self.device), labs.to(self.device)

    def mask_to_model(self, mask) -> torch.Tensor:
        """H x W bool mask -> 1 x 1 x S x S float (antialiased resize, then >= 0.5, when not S x S)."""
        mask = torch.as_tensor(np.asarray(mask), dtype=torch.bool)
        if mask.dim() != 2:
            raise ValueError(f"the mask must be 2-D (H x W), got shape {tuple(mask.shape)}")
        m = mask[None, None].float().to(self.device)
        s = self.image_size
        if m.shape[-2:] != (s, s):
            m = F.interpolate(m, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            m = (m >= 0.5).float()
        return m

    def remember_prompted(self, vision: torch.Tensor, out: FrameOutput) -> None:
        """Encodes the memory of a prompted frame from its stored (hole-filled) low-res logits."""
        high = _resize(out.pred_masks, (self.image_size, self.image_size))
        with self._autocast():
            mem = self.model.encode_memory(vision, high, out.score, self.binarize_mask_from_pts_for_mem_enc)
        out.maskmem = mem.to(torch.bfloat16)

    # --- prompts ---------------------------------------------------------------------------------
    def _check_frame(self, state: VideoState, frame_idx: int) -> None:
        if not 0 <= frame_idx < state.num_frames:
            raise ValueError(f"frame {frame_idx} is outside the video (frames 0..{state.num_frames - 1})")

    @torch.inference_mode()
    def add_new_points_or_box(
        self,
        inference_state: VideoState,
        frame_idx: int,
        obj_id,
        points=None,
        labels=None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box=None,
    ) -> tuple[int, list, torch.Tensor]:
        """Clicks (N x 2 (x, y) video pixels, labels 1 / 0) and / or a box (XYXY) on a frame.

        Returns (frame_idx, obj_ids, logits n_obj x 1 x H x W at the video size).
        """
        state = inference_state
        self._check_frame(state, frame_idx)
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be provided together")
        if points is None and box is None:
            raise ValueError("at least one of points or box must be provided as input")
        if box is not None and not clear_old_points:
            raise ValueError("cannot add a box without clearing old points (clear_old_points=True)")
        size = (state.video_height, state.video_width) if normalize_coords else None
        coords, labs = self.points_to_model(points, labels, box, size)
        idx = state.obj_idx(obj_id)
        track = state.tracks[idx]
        old = track.points.get(frame_idx) if not clear_old_points else None
        if old is not None:
            coords, labs = torch.cat([old[0], coords], dim=1), torch.cat([old[1], labs], dim=1)
        track.points[frame_idx] = (coords, labs)
        track.masks.pop(frame_idx, None)
        return self._prompt(state, idx, frame_idx, points=(coords, labs))

    @torch.inference_mode()
    def add_new_mask(
        self, inference_state: VideoState, frame_idx: int, obj_id, mask
    ) -> tuple[int, list, torch.Tensor]:
        """A mask prompt: H x W bool at the video size (or S x S, the model input). Same returns."""
        state = inference_state
        self._check_frame(state, frame_idx)
        shape, s = np.shape(mask), self.image_size
        if shape not in ((state.video_height, state.video_width), (s, s)):
            raise ValueError(
                f"the mask is {'x'.join(map(str, shape[::-1]))}; it must have the video's size "
                f"{state.video_width}x{state.video_height} (or the model's input size {s}x{s})"
            )
        m = self.mask_to_model(mask)
        idx = state.obj_idx(obj_id)
        state.tracks[idx].masks[frame_idx] = m
        state.tracks[idx].points.pop(frame_idx, None)
        return self._prompt(state, idx, frame_idx, mask=m)

    def _prompt(
        self,
        state: VideoState,
        idx: int,
        frame_idx: int,
        points: Points | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[int, list, torch.Tensor]:
        track = state.tracks[idx]
        is_init = frame_idx not in track.tracked
        reverse = False if is_init else track.tracked[frame_idx]
        is_cond = is_init or self.add_all_frames_to_correct_as_cond
        prev = None
        if points is not None:
            temp = track.temp_cond if is_cond else track.temp_non_cond
            out = temp.get(frame_idx) or track.cond.get(frame_idx) or track.non_cond.get(frame_idx)
            prev = None if out is None else out.pred_masks.clamp(-32.0, 32.0)
        out = self.run_frame(state, track, frame_idx, is_init, points, mask, reverse, False, prev)
        (track.temp_cond if is_cond else track.temp_non_cond)[frame_idx] = out
        return frame_idx, list(state.obj_ids), self._consolidate(state, frame_idx, is_cond)

    def _consolidate(self, state: VideoState, frame_idx: int, is_cond: bool) -> torch.Tensor:
        """Every object's latest logits on a frame at the video size (-1024 for objects without one)."""
        h, w = state.video_height, state.video_width
        out = torch.full((len(state.obj_ids), 1, h, w), NO_OBJ_SCORE, device=self.device)
        for i, track in enumerate(state.tracks):
            temp = track.temp_cond if is_cond else track.temp_non_cond
            o = temp.get(frame_idx) or track.cond.get(frame_idx) or track.non_cond.get(frame_idx)
            if o is not None:
                out[i : i + 1] = _resize(o.pred_masks, (h, w))
        return self._video_res(state, out, resized=True)

    def _video_res(self, state: VideoState, logits: torch.Tensor, resized: bool = False) -> torch.Tensor:
        if not resized:
            logits = _resize(logits, (state.video_height, state.video_width))
        if self.non_overlap_masks and logits.shape[0] > 1:
            keep = (
                logits.argmax(dim=0, keepdim=True)
                == torch.arange(logits.shape[0], device=logits.device)[:, None, None, None]
            )
            logits = torch.where(keep, logits, logits.clamp(max=-10.0))
        return logits

    # --- one frame -------------------------------------------------------------------------------
    def run_frame(
        self,
        state: VideoState,
        track: ObjectTrack,
        frame_idx: int,
        is_init: bool,
        points: Points | None,
        mask: torch.Tensor | None,
        reverse: bool,
        encode_memory: bool,
        prev_logits: torch.Tensor | None = None,
    ) -> FrameOutput:
        """One object on one frame: memory attention (unless an initial prompt), decoder, memory."""
        feats = self.features(state, frame_idx)
        model = self.model
        maskmem = None
        with self._autocast():
            if mask is not None:
                head = model.mask_as_output(feats.vision, feats.high_res, mask)
            else:
                if is_init:
                    pix = feats.vision + model.no_mem_embed.view(1, -1, 1, 1)
                else:
                    mems, ptrs, window = gather_memory(
                        model.cfg, track.cond, track.non_cond, frame_idx, reverse, state.num_frames
                    )
                    pix = model.attend_memory(feats.vision, mems, ptrs, window)
                n_pts = 0 if points is None else points[1].shape[1]
                head = model.sam_heads(pix, feats.high_res, points, prev_logits, multimask=n_pts <= 1)
            if encode_memory:
                mem = model.encode_memory(feats.vision, head.high_res, head.score, binarize=False)
                maskmem = mem.to(torch.bfloat16)
        low, ptr, score = head.low_res.float(), head.obj_ptr.float(), head.score.float()
        return FrameOutput(fill_holes(low, self.fill_hole_area), ptr, score, maskmem)

    # --- tracking --------------------------------------------------------------------------------
    @torch.inference_mode()
    def propagate_in_video_preflight(self, inference_state: VideoState) -> None:
        """Encodes the memories of prompted frames and moves them into the memory banks."""
        state = inference_state
        if not state.obj_ids:
            raise RuntimeError(
                "No input points or masks are provided for any object; please add inputs first."
            )
        for obj_id, track in zip(state.obj_ids, state.tracks):
            for temp, bank in ((track.temp_non_cond, track.non_cond), (track.temp_cond, track.cond)):
                for frame_idx, out in temp.items():
                    if out.maskmem is None:
                        self.remember_prompted(self.features(state, frame_idx).vision, out)
                    bank[frame_idx] = out
                    if self.clear_non_cond_mem_around_input:
                        self._clear_around(track, frame_idx)
                temp.clear()
            if not track.cond:
                raise RuntimeError(
                    f"No input points or masks are provided for object id {obj_id}; please add inputs first."
                )
            for frame_idx in track.cond:
                track.non_cond.pop(frame_idx, None)

    def _clear_around(self, track: ObjectTrack, frame_idx: int) -> None:
        n = self.model.cfg.num_maskmem
        for t in range(frame_idx - n, frame_idx + n + 1):
            track.non_cond.pop(t, None)

    @torch.inference_mode()
    def propagate_in_video(
        self,
        inference_state: VideoState,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[int, list, torch.Tensor]]:
        """Tracks every object from ``start_frame_idx`` (default: the first prompted frame) forward,
        or backward with ``reverse``; yields (frame_idx, obj_ids, logits n_obj x 1 x H x W)."""
        state = inference_state
        self.propagate_in_video_preflight(state)
        if start_frame_idx is None:
            start_frame_idx = min(t for track in state.tracks for t in track.cond)
        if max_frame_num_to_track is None:
            max_frame_num_to_track = state.num_frames
        if reverse:
            end = max(start_frame_idx - max_frame_num_to_track, 0)
            order = range(start_frame_idx, end - 1, -1) if start_frame_idx > 0 else range(0)
        else:
            end = min(start_frame_idx + max_frame_num_to_track, state.num_frames - 1)
            order = range(start_frame_idx, end + 1)
        obj_ids = list(state.obj_ids)
        for frame_idx in order:
            logits = []
            for track in state.tracks:
                if frame_idx in track.cond:
                    out = track.cond[frame_idx]
                    if self.clear_non_cond_mem_around_input:
                        self._clear_around(track, frame_idx)
                else:
                    out = self.run_frame(state, track, frame_idx, False, None, None, reverse, True)
                    track.non_cond[frame_idx] = out
                track.tracked[frame_idx] = reverse
                logits.append(out.pred_masks)
            yield frame_idx, obj_ids, self._video_res(state, torch.cat(logits))

    # --- editing ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def clear_all_prompts_in_frame(
        self, inference_state: VideoState, frame_idx: int, obj_id, need_output: bool = True
    ):
        """Removes an object's prompts on a frame (its output there becomes a tracked one)."""
        state = inference_state
        track = state.tracks[_prompted_idx(state, obj_id)]
        for d in (track.points, track.masks, track.temp_cond, track.temp_non_cond):
            d.pop(frame_idx, None)
        out = track.cond.pop(frame_idx, None)
        if out is not None:
            track.non_cond[frame_idx] = out
            track.tracked.pop(frame_idx, None)
        if not need_output:
            return None
        is_cond = any(frame_idx in t.temp_cond for t in state.tracks)
        return frame_idx, list(state.obj_ids), self._consolidate(state, frame_idx, is_cond)

    @torch.inference_mode()
    def remove_object(
        self, inference_state: VideoState, obj_id, strict: bool = False, need_output: bool = True
    ):
        """Removes an object; returns (remaining obj_ids, [(frame_idx, logits) of its prompted frames])."""
        state = inference_state
        idx = state.obj_idx(obj_id, create=False)
        if idx is None:
            if strict:
                _prompted_idx(state, obj_id)
            return list(state.obj_ids), []
        if len(state.obj_ids) == 1:
            self.reset_state(state)
            return [], []
        frames = sorted(set(state.tracks[idx].points) | set(state.tracks[idx].masks))
        for frame_idx in frames:
            self.clear_all_prompts_in_frame(state, frame_idx, obj_id, need_output=False)
        del state.obj_ids[idx]
        del state.tracks[idx]
        updated = []
        if need_output:
            for frame_idx in frames:
                is_cond = any(frame_idx in t.temp_cond for t in state.tracks)
                updated.append((frame_idx, self._consolidate(state, frame_idx, is_cond)))
        return list(state.obj_ids), updated


class UnknownObjectError(ValueError, RuntimeError):
    """An object id that was never prompted (a ``RuntimeError`` as the official predictor's)."""


def _prompted_idx(state: VideoState, obj_id) -> int:
    """Index of an object that has been prompted; :class:`UnknownObjectError` naming the known ids otherwise."""
    idx = state.obj_idx(obj_id, create=False)
    if idx is None:
        raise UnknownObjectError(
            f"object id {obj_id} was never prompted; prompted object ids: {state.obj_ids}"
        )
    return idx


def _resize(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def track_prompts(
    predictor: VideoPredictor,
    video: str | os.PathLike | np.ndarray | Sequence[np.ndarray] | FrameSource,
    prompts: dict[int, list],
    reverse: bool = False,
) -> Iterator[tuple[int, list, torch.Tensor]]:
    """Offline tracking of ``prompts`` (frame -> [:class:`~leansam.video.stream.Prompt`]): every
    prompt is added, then the video is propagated (backwards from the last prompted frame when
    ``reverse``); yields ``propagate_in_video``'s ``(frame_idx, obj_ids, video_res_logits)``."""
    state = predictor.init_state(video)
    for frame, ps in prompts.items():
        for p in ps:
            if p.mask is not None:
                predictor.add_new_mask(state, frame, p.obj_id, p.mask)
            else:
                predictor.add_new_points_or_box(state, frame, p.obj_id, p.points, p.labels, box=p.box)
    start = max(prompts) if reverse else None
    yield from predictor.propagate_in_video(state, start_frame_idx=start, reverse=reverse)
