"""The reference mask decoder against segment-anything's and SAM 2's decoders, and shared edge cases
(whole-model parity is tested per family in the other files here)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import leansam
from leansam.everything import AutomaticMaskGenerator
from leansam.models.fast import DecodedTokens, FastDecoder
from leansam.models.mask_decoder import MaskDecoder
from tests import oracles


def test_generator_survives_every_prompt_being_filtered_out():
    # With an unreachable IoU threshold every prompt is dropped before upscaling, so the decoder's
    # upscaling path sees an empty batch; it must return no masks instead of failing on a reshape.
    model = leansam.build_model("leansam_nano")
    image = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    gen = AutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=1e9)
    assert gen.generate(image) == []


def test_upscaling_an_empty_batch_gives_an_empty_mask_tensor():
    dec = MaskDecoder(transformer_dim=128)
    h = w = 8
    c = dec.transformer_dim
    empty = DecodedTokens(
        torch.zeros(0, 4, c), torch.zeros(0, h * w, c), (h, w), torch.zeros(0, 4), torch.zeros(0, 1)
    )
    out = FastDecoder(dec).masks_from_tokens(empty)
    assert out.shape == (0, 4, 4 * h, 4 * w)


def _perturbed(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` in float64 with every weight moved off its init (norm weights 1, biases 0 hide terms)."""
    torch.manual_seed(0)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return module


def _decoder_inputs(b: int = 3, hw: int = 16) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return r(1, 256, hw, hw), r(1, 256, hw, hw), r(b, 4, 256), r(b, 256, hw, hw)


@pytest.mark.parametrize("multimask", [True, False])
def test_the_reference_decoder_is_segment_anythings(multimask: bool) -> None:
    sa = oracles.segment_anything().modeling
    official = _perturbed(
        sa.MaskDecoder(
            transformer_dim=256,
            transformer=sa.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        )
    )
    mine = MaskDecoder().double()
    mine.load_state_dict(official.state_dict(), strict=True)  # same keys and shapes
    image, pe, sparse, dense = _decoder_inputs()
    masks, iou = official(image, pe, sparse, dense, multimask)
    got_masks, got_iou, obj = mine(image, pe, sparse, dense, multimask)
    torch.testing.assert_close(got_masks, masks, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got_iou, iou, rtol=1e-9, atol=1e-9)
    assert (obj == 10.0).all()


@pytest.mark.parametrize("multimask", [True, False])
def test_the_reference_decoder_with_sam2_options_is_sam2s(multimask: bool) -> None:
    sam2 = oracles.sam2()
    from sam2.modeling.sam.mask_decoder import MaskDecoder as Sam2MaskDecoder
    from sam2.modeling.sam.transformer import TwoWayTransformer as Sam2TwoWayTransformer

    options = {"iou_sigmoid": True, "pred_obj_score": True, "use_high_res_features": True}
    official = Sam2MaskDecoder(
        transformer_dim=256,
        transformer=Sam2TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        use_high_res_features=True,
        iou_prediction_use_sigmoid=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        dynamic_multimask_via_stability=True,
    )
    official = _perturbed(official).eval()
    mine = MaskDecoder(**options, dynamic_multimask_via_stability=True).double().eval()
    # SAM 2 names the transformer MLP ``mlp.layers.{0,1}`` (renamed by the checkpoint filter).
    state = {
        re.sub(r"\.mlp\.layers\.([01])\.", lambda m: f".mlp.lin{int(m[1]) + 1}.", k): v
        for k, v in official.state_dict().items()
    }
    mine.load_state_dict(state, strict=True)
    assert sam2 is not None
    image, pe, sparse, dense = _decoder_inputs()
    g = torch.Generator().manual_seed(2)
    high = [
        torch.randn(1, 32, 64, 64, generator=g).double(),
        torch.randn(1, 64, 32, 32, generator=g).double(),
    ]
    masks, iou, _, obj = official(image, pe, sparse, dense, multimask, True, high)
    got = mine(image, pe, sparse, dense, multimask, high)
    for g_, w_ in zip(got, (masks, iou, obj)):
        torch.testing.assert_close(g_, w_, rtol=1e-9, atol=1e-9)
