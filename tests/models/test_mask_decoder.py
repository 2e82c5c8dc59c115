"""Shared mask decoder edge cases (parity is tested per family in the other files here)."""

from __future__ import annotations

import numpy as np
import torch

import leansam
from leansam.everything import AutomaticMaskGenerator
from leansam.models.fast import DecodedTokens, FastDecoder


def test_generator_survives_every_prompt_being_filtered_out():
    # With an unreachable IoU threshold every prompt is dropped before upscaling, so the decoder's
    # upscaling path sees an empty batch; it must return no masks instead of failing on a reshape.
    model = leansam.build_model("leansam_tiny")
    image = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    gen = AutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=1e9)
    assert gen.generate(image) == []


def test_upscaling_an_empty_batch_gives_an_empty_mask_tensor():
    dec = leansam.build_model("leansam_tiny").mask_decoder
    h = w = 8
    c = dec.transformer_dim
    empty = DecodedTokens(
        torch.zeros(0, 4, c), torch.zeros(0, h * w, c), (h, w), torch.zeros(0, 4), torch.zeros(0, 1)
    )
    out = FastDecoder(dec).masks_from_tokens(empty)
    assert out.shape == (0, 4, 4 * h, 4 * w)
