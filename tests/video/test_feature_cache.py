"""The offline predictor's feature cache: frames already seen are not encoded again, within its budget."""

from __future__ import annotations

import numpy as np
import pytest

from leansam.video import VideoPredictor
from tests.video import cases as C

# Box on frame 0, propagate, correction click on frame 3, propagate again: 6 frames seen twice.
CASE = "sam2.1_hiera_tiny/d_correct_as_cond"


def _replay_counting(cache_mb: float) -> tuple[list[C.Output], int]:
    """Replays CASE with a cache of ``cache_mb``: (outputs, number of frames encoded)."""
    z, spec = C.load(CASE)
    model = C.model_for(spec)
    pred = VideoPredictor(model, feature_cache_mb=cache_mb, **spec["constructor"]["then_set_attributes"])
    encoded = 0
    real = model.encode_frame

    def counting(x):
        nonlocal encoded
        encoded += 1
        return real(x)

    model.encode_frame = counting
    try:
        outs = C.replay(pred, z, spec)
    finally:
        del model.encode_frame
    return outs, encoded


@pytest.mark.slow
def test_repropagation_reuses_features_and_matches_without_cache() -> None:
    z, _ = C.load(CASE)
    n_frames = len(z["frames"])
    cached, enc_cached = _replay_counting(1024.0)
    uncached, enc_uncached = _replay_counting(0.0)
    assert enc_cached == n_frames  # each frame encoded once
    assert enc_uncached > n_frames  # the second propagation re-encodes
    assert len(cached) == len(uncached)
    for a, b in zip(cached, uncached):
        assert a.frame_idx == b.frame_idx
        np.testing.assert_array_equal(a.logits, b.logits)
    assert C.mismatches(cached, z) == []


def test_the_cache_serves_hits_and_stays_within_its_budget() -> None:
    """On the clip model (cheaper than CASE's 1024 px sam2.1): the cache is the predictor's."""
    model, frames = C.clip_model(), C.load(C.CLIP_CASE)[0]["frames"][:4]
    pred = VideoPredictor(model, feature_cache_mb=0.0)
    state = pred.init_state(frames)
    per_frame = pred.features(state, 0).nbytes()
    assert list(state.feature_cache) == [0]  # a zero budget still keeps the frame in use
    pred.feature_cache_bytes = 2 * per_frame
    first = {t: pred.features(state, t) for t in range(len(frames))}
    assert list(state.feature_cache) == [2, 3]
    model.encode_frame = lambda x: pytest.fail("a cached frame was encoded again")
    try:
        assert pred.features(state, 2) is first[2]  # a hit moves the frame to the end
    finally:
        del model.encode_frame
    assert list(state.feature_cache) == [3, 2]


def test_negative_budget_is_rejected() -> None:
    with pytest.raises(ValueError, match="feature_cache_mb"):
        VideoPredictor(C.clip_model(), feature_cache_mb=-1)
