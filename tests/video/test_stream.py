"""The streaming tracker: one frame at a time, flat memory, same tracks as the offline predictor."""

from __future__ import annotations

import numpy as np
import pytest

from leansam.video import VideoPredictor
from leansam.video.stream import Prompt, StreamTracker
from tests.video import cases as C


def _stream_outputs(tracker: StreamTracker, frames, prompts) -> list[C.Output]:
    outs = []
    for t, ids, logits in tracker.track(iter(frames), prompts):
        state = tracker.state
        stored = [tr.cond.get(t) or tr.non_cond[t] for tr in state.tracks]
        outs.append(
            C.Output(
                2,
                t,
                t,
                ids,
                logits[:, 0].numpy(),
                np.stack([s.pred_masks[0, 0].numpy() for s in stored]),
                np.array([s.score.item() for s in stored], dtype=np.float32),
                np.array([t in tr.cond for tr in state.tracks]),
            )
        )
        # Only what the memory attention can still read is kept.
        for tr in state.tracks:
            assert all(t - k < 15 for k in tr.non_cond)
            assert all(t - k < 6 for k, o in tr.non_cond.items() if o.maskmem is not None)
        assert list(state.feature_cache) == [t]
    return outs


def test_stream_equals_the_offline_predictor_on_efficienttam() -> None:
    """EfficientTAM has no pointer time encoding, so even a 3-frame clip tracks identically."""
    z, _ = C.load(C.CLIP_CASE)
    model, frames, box = C.clip_model(), z["frames"][:3], z["c1_box"]
    offline = VideoPredictor(model)
    state = offline.init_state(frames)
    offline.add_new_points_or_box(state, 0, 1, box=box)
    expected = [(ids, logits) for _, ids, logits in offline.propagate_in_video(state)]
    tracker = StreamTracker(VideoPredictor(model))
    got = _stream_outputs(tracker, frames, {0: [Prompt(1, box=box)]})
    assert len(got) == len(expected) == len(frames)
    assert all(o.obj_ids == ids == [1] for o, (ids, _) in zip(got, expected))
    assert all(np.array_equal(o.logits, e[:, 0].numpy()) for o, (_, e) in zip(got, expected))
    with pytest.raises(ValueError, match="already processed"):
        tracker.add_prompt(2, Prompt(2, points=[[10, 10]], labels=[1]))


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in C.CASES if c.endswith("b_stream18")])
def test_stream_matches_the_recorded_18_frame_case(case: str) -> None:
    z, spec = C.load(case)
    assert [c["op"] for c in spec["calls"][1:]] == ["add_new_points_or_box", "propagate_in_video"]
    tracker = StreamTracker(VideoPredictor(C.model_for(spec), **spec["constructor"]["then_set_attributes"]))
    prompt = Prompt(spec["calls"][1]["obj_id"], box=z["c1_box"])
    outs = _stream_outputs(tracker, z["frames"], {0: [prompt]})
    assert len(outs) == len(z["c2_frames"]) == 18
    assert C.mismatches(outs, z) == []
    # After 18 frames: the prompted frame, 15 pointers, 6 memories.
    (track,) = tracker.state.tracks
    assert list(track.cond) == [0] and len(track.non_cond) == 15
    assert sum(o.maskmem is not None for o in track.non_cond.values()) == 6
