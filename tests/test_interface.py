"""The model interface and the one prompt layout (leansam/interface.py)."""

from __future__ import annotations

import torch

import leansam
from leansam.interface import PromptableModel, PromptStyle, join_box_corners, keep_confident, layout_prompts
from leansam.transforms import ImageTransform

SQUARE = ImageTransform(resize="square")  # the prompt frame is 1024 x 1024 whatever the image size


def test_the_torch_model_satisfies_the_protocol() -> None:
    assert isinstance(leansam.build_model("leansam_tiny"), PromptableModel)


def test_layouts_of_the_three_padding_styles() -> None:
    pts, lab = torch.tensor([[[10.0, 20.0]]]), torch.tensor([[1]])
    box = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    size = (1024, 1024)
    sam = layout_prompts(PromptStyle(), SQUARE, pts, lab, box, size)
    assert sam[1].tolist() == [[1, 2, 3]]  # box after the clicks, no padding with a box
    assert layout_prompts(PromptStyle(), SQUARE, pts, lab, None, size)[1].tolist() == [[1, -1]]
    sam2 = layout_prompts(PromptStyle(box_first=True, pad="always"), SQUARE, pts, lab, box, size)
    assert sam2[1].tolist() == [[2, 3, 1, -1]]
    assert sam2[0][0].tolist() == [[1.0, 2.0], [3.0, 4.0], [10.0, 20.0], [0.0, 0.0]]
    fixed = PromptStyle(box_first=True, pad="fixed", pad_to=6, pad_coord=-1.0)
    coords, labels = layout_prompts(fixed, SQUARE, None, None, box, size)
    assert labels.tolist() == [[2, 3, -1, -1, -1, -1]] and coords[0, 2:].eq(-1).all()
    assert layout_prompts(PromptStyle(), SQUARE, None, None, None, size) is None


def test_one_side_of_batch_one_is_broadcast_and_coordinates_are_rescaled() -> None:
    boxes = torch.tensor([[0.0, 0.0, 50.0, 100.0], [10.0, 10.0, 20.0, 20.0]])
    coords, labels = layout_prompts(
        PromptStyle(), SQUARE, torch.tensor([[[50.0, 25.0]]]), torch.tensor([[0]]), boxes, (200, 100)
    )
    assert labels.tolist() == [[0, 2, 3]] * 2
    # (x, y) scaled by (1024 / 100, 1024 / 200)
    torch.testing.assert_close(coords[1, 0], torch.tensor([512.0, 128.0]))
    torch.testing.assert_close(coords[1, 2], torch.tensor([204.8, 102.4]))


def test_join_box_corners_places_k_boxes() -> None:
    c, lab = join_box_corners(torch.zeros(2, 1, 2), torch.ones(2, 1), torch.ones(2, 4, 2), box_first=False)
    assert lab.tolist() == [[1, 2, 3, 2, 3]] * 2 and c[:, 1:].eq(1).all()


def test_keep_confident_flattens_prompt_major_and_filters() -> None:
    low = torch.arange(6.0).view(2, 3, 1, 1)
    iou = torch.tensor([[0.1, 0.9, 0.5], [0.95, 0.2, 0.6]])
    masks, scores, owner = keep_confident(low, iou, 0.55)
    assert masks.flatten().tolist() == [1.0, 3.0, 5.0]
    assert owner.tolist() == [0, 1, 1]
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.95, 0.6]))
    assert len(keep_confident(low, iou, 0.0)[0]) == 6
