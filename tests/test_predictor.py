"""SamPredictor: prompt blocks do not change results; option validation."""

from __future__ import annotations

import pytest
import torch

import leansam
from leansam.bench.protocol import test_image as synthetic_image


@pytest.fixture(scope="module")
def predictor():
    p = leansam.SamPredictor(leansam.build_model("leansam_nano"))
    p.set_image(synthetic_image((120, 160), 0)[0])
    return p


def _prompts(n: int):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([110.0, 80.0])
    boxes = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 40], 1)
    points = torch.rand(n, 2, 2, generator=g) * torch.tensor([160.0, 120.0])
    labels = torch.tensor([[1, 0]]).expand(n, 2)
    return boxes, points, labels


@pytest.mark.parametrize("block", [1, 3, 7, 100])
def test_prompt_blocks_give_the_same_results(predictor, block):
    boxes, points, labels = _prompts(7)
    kwargs = dict(boxes=boxes, multimask_output=True, original_coords=True)
    predictor.prompt_block = None
    ref = predictor.predict_torch(points, labels, **kwargs)
    mask_in = ref[2][:, :1]
    ref_m = predictor.predict_torch(points, labels, mask_input=mask_in, **kwargs)
    predictor.prompt_block = block
    try:
        out = predictor.predict_torch(points, labels, **kwargs)
        out_m = predictor.predict_torch(points, labels, mask_input=mask_in, **kwargs)
    finally:
        predictor.prompt_block = 4
    for a, b in zip(out + out_m, ref + ref_m):
        assert a.shape == b.shape
        if a.dtype == torch.bool:
            assert (a != b).float().mean().item() <= 1e-4
        else:
            assert (a - b).abs().max().item() <= 1e-4


def test_one_point_set_shared_by_many_boxes(predictor):
    """A 1 x N point set is shared by B boxes, across prompt blocks, as if repeated B times."""
    boxes, points, labels = _prompts(6)
    kwargs = dict(boxes=boxes, multimask_output=False, original_coords=True)
    masks, iou, low = predictor.predict_torch(points[:1], labels[:1], **kwargs)
    assert masks.shape == (6, 1, 120, 160) and iou.shape == (6, 1) and low.shape[:2] == (6, 1)
    m2, iou2, low2 = predictor.predict_torch(points[:1].expand(6, -1, -1), labels[:1].expand(6, -1), **kwargs)
    assert (masks != m2).float().mean().item() <= 1e-4
    assert (low - low2).abs().max().item() <= 1e-4
    assert (iou - iou2).abs().max().item() <= 1e-4


@pytest.mark.parametrize("block", [0, -2])
def test_prompt_block_must_be_positive(block):
    with pytest.raises(ValueError, match="prompt_block"):
        leansam.SamPredictor(leansam.build_model("leansam_nano"), prompt_block=block)


def test_mask_input_takes_the_models_low_res_size(predictor):
    """leansam_nano's embedding grid is 16 x 16: its low-res logits (and mask_input) are 64 x 64."""
    import numpy as np

    h, w = predictor.low_res_size()
    assert (h, w) == tuple(4 * s for s in predictor.get_image_embedding().shape[-2:])
    _, _, low = predictor.predict(box=np.array([20, 20, 140, 100]), multimask_output=False)
    assert low.shape == (1, h, w)
    masks, _, low2 = predictor.predict(
        box=np.array([20, 20, 140, 100]), mask_input=low, multimask_output=False
    )
    assert low2.shape == (1, h, w) and masks.shape[0] == 1
    with pytest.raises(ValueError, match=f"1 x {h} x {w}"):
        predictor.predict(box=np.array([20, 20, 140, 100]), mask_input=np.zeros((1, 256, 256)))
