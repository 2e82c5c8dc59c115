"""Bad input to ``VideoPredictor``: a clear exception naming what is wrong, before any computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from leansam.video import NotTrackableError, VideoError, VideoPredictor
from leansam.video.predictor import UnknownObjectError
from tests.video import cases as C


@pytest.fixture(scope="module")
def predictor() -> VideoPredictor:
    _, spec = C.load("efficienttam_ti/a_box_click")
    return VideoPredictor(C.model_for(spec))


def _frames() -> np.ndarray:
    return np.zeros((3, 48, 64, 3), np.uint8)


def test_an_empty_folder_or_a_corrupt_file_is_a_video_error(predictor, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="no JPEG/PNG frames"):
        predictor.init_state(tmp_path / "empty")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    with pytest.raises(VideoError, match="cannot decode video"):
        predictor.init_state(broken)
    with pytest.raises(VideoError, match="no frames"):
        predictor.init_state(np.zeros((0, 48, 64, 3), np.uint8))


def test_a_prompt_past_the_last_frame_is_refused(predictor) -> None:
    state = predictor.init_state(_frames())
    with pytest.raises(ValueError, match=r"frame 3 is outside the video \(frames 0\.\.2\)"):
        predictor.add_new_points_or_box(state, 3, 1, points=[[5, 5]], labels=[1])
    with pytest.raises(ValueError, match="outside the video"):
        predictor.add_new_mask(state, 3, 1, np.ones((48, 64), bool))
    assert state.obj_ids == []


def test_a_mask_of_another_size_is_refused(predictor) -> None:
    state = predictor.init_state(_frames())
    with pytest.raises(ValueError, match=r"the mask is 32x48; it must have the video's size 64x48"):
        predictor.add_new_mask(state, 0, 1, np.ones((48, 32), bool))
    assert state.obj_ids == []


def test_an_object_id_never_prompted_is_refused(predictor) -> None:
    state = predictor.init_state(_frames())
    with pytest.raises(
        UnknownObjectError, match=r"object id 4 was never prompted; prompted object ids: \[\]"
    ):
        predictor.clear_all_prompts_in_frame(state, 0, 4)
    with pytest.raises(RuntimeError, match="object id 4 was never prompted"):
        predictor.remove_object(state, 4, strict=True)
    assert predictor.remove_object(state, 4) == ([], [])
    assert state.obj_ids == []
    with pytest.raises(RuntimeError, match="No input points or masks"):
        next(iter(predictor.propagate_in_video(state)))


def test_a_model_without_memory_names_the_models_that_can_track() -> None:
    with pytest.raises(NotTrackableError, match=r"'mobile_sam' has no video memory .* efficienttam_ti, "):
        VideoPredictor("mobile_sam")
