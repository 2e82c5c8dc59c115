"""Prompts derived from ground-truth masks: boxes, the most interior click, seeded random clicks."""

from __future__ import annotations

import numpy as np
import pytest

from leansam.eval.gt_prompts import (
    PROMPT_KINDS,
    check_prompt_kind,
    instance_rng,
    make_prompts,
    mask_center,
    random_points,
    tight_box,
    xywh_to_xyxy,
)


def rect(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_center_of_a_rectangle_is_its_middle():
    m = rect(40, 60, 10, 5, 31, 26)  # 21 x 21 square, centre pixel (20, 15)
    assert mask_center(m) == (20, 15)


def test_center_of_an_l_shape_lies_inside_the_thick_part():
    m = rect(50, 50, 0, 0, 10, 50) | rect(50, 50, 0, 30, 50, 50)  # thin bar + thick foot
    x, y = mask_center(m)
    assert m[y, x]
    assert y >= 30  # the foot (20 px thick) is thicker than the bar (10 px)


def test_center_treats_the_image_border_as_boundary():
    m = np.zeros((30, 30), dtype=bool)
    m[:, :20] = True  # touches the left, top and bottom borders
    x, y = mask_center(m)
    assert x in (9, 10) and 9 <= y <= 20  # 10 px from the left border and from the mask's edge


def test_center_of_an_empty_mask_raises():
    with pytest.raises(ValueError, match="empty"):
        mask_center(np.zeros((4, 4), dtype=bool))


def test_random_points_are_inside_distinct_and_seeded():
    m = rect(64, 64, 5, 7, 40, 30)
    a = random_points(m, 5, instance_rng(0, 3, 9))
    b = random_points(m, 5, instance_rng(0, 3, 9))
    c = random_points(m, 5, instance_rng(1, 3, 9))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert m[a[:, 1], a[:, 0]].all()
    assert len({tuple(p) for p in a}) == 5


def test_random_points_repeat_only_when_the_mask_is_too_small():
    m = np.zeros((8, 8), dtype=bool)
    m[2, 3] = m[5, 6] = True
    pts = random_points(m, 5, instance_rng(0, 0, 0))
    assert m[pts[:, 1], pts[:, 0]].all()


def test_boxes_tight_and_annotation():
    m = rect(20, 30, 4, 2, 9, 12)
    np.testing.assert_array_equal(tight_box(m), [4, 2, 9, 12])
    np.testing.assert_array_equal(xywh_to_xyxy(np.array([[4, 2, 5, 10]])), [[4, 2, 9, 12]])
    masks = np.stack([m])
    loose = np.array([[0, 0, 20, 20]], dtype=np.float32)
    box = make_prompts("box", masks, loose)
    tight = make_prompts("tight-box", masks, loose)
    np.testing.assert_array_equal(box.boxes, [[0, 0, 20, 20]])
    np.testing.assert_array_equal(tight.boxes, [[4, 2, 9, 12]])
    assert not box.multimask and box.points is None


def test_click_prompts_use_multimask_only_for_one_click():
    masks = np.stack([rect(32, 32, 2, 2, 20, 20), rect(32, 32, 10, 12, 30, 31)])
    boxes = np.zeros((2, 4), np.float32)
    center = make_prompts("center", masks, boxes)
    assert center.points.shape == (2, 1, 2) and center.multimask
    r3 = make_prompts("random3", masks, boxes, image_id=7, ann_ids=[11, 12], seed=0)
    assert r3.points.shape == (2, 3, 2) and not r3.multimask
    assert (r3.labels == 1).all()
    # Order / sharding independence: one instance alone gets the same clicks.
    alone = make_prompts("random3", masks[1:], boxes[1:], image_id=7, ann_ids=[12], seed=0)
    np.testing.assert_array_equal(alone.points[0], r3.points[1])


def test_unknown_prompt_kind():
    assert set(PROMPT_KINDS) == {"box", "tight-box", "center", "random1", "random3", "random5"}
    with pytest.raises(ValueError, match="random3"):
        check_prompt_kind("random2")
