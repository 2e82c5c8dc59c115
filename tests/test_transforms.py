"""Mask post-processing: the separable-matrix path against the step-by-step interpolation."""

from __future__ import annotations

import pytest
import torch

from leansam import transforms as T

TRANSFORMS = {
    "sam": T.SAM_TRANSFORM,
    "sam_bicubic": T.ImageTransform(upsample="bicubic"),
    "squash_bilinear": T.ImageTransform(resize="square", crop=False),
    "squash_bicubic": T.ImageTransform(resize="square", crop=False, upsample="bicubic"),
    "encoder_512": T.ImageTransform(encoder_size=512),
}
SIZES = [(480, 640), (1000, 333), (1024, 1024), (37, 2000), (1, 1), (1500, 1300)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", TRANSFORMS)
def test_separable_postprocessing_equals_stepwise(name, size):
    t = TRANSFORMS[name]
    torch.manual_seed(0)
    low = torch.randn(2, 3, 256, 256) * 10
    fast = T.postprocess_logits(low, t, size)
    ref = T._resize_stepwise(low, t, size)
    assert fast.shape == ref.shape == (2, 3, *size)
    # Same weights, summed in another order: float32 rounding only (logits here reach ~40).
    assert (fast - ref).abs().max().item() <= 1e-4
    assert ((fast > 0) == (ref > 0)).float().mean().item() >= 0.99999


def test_large_images_take_the_stepwise_path(monkeypatch):
    monkeypatch.setattr(T, "SEPARABLE_MAX_PIXELS", 100)
    low = torch.randn(1, 2, 256, 256)
    assert torch.equal(
        T.postprocess_logits(low, T.SAM_TRANSFORM, (20, 30)),
        T._resize_stepwise(low, T.SAM_TRANSFORM, (20, 30)),
    )


def test_resize_matrix_rows_are_interpolation_weights():
    """Each output row of the composite map is a convex combination for bilinear (weights sum to 1)."""
    mat = T._resize_matrix(256, T.SAM_TRANSFORM, (480, 640), 0)
    assert mat.shape == (480, 193)  # 768 of 1024 frame rows -> 192 low-res rows + 1 margin
    assert torch.allclose(mat.sum(1), torch.ones(480), atol=1e-6)
    assert (mat >= 0).all()


def test_empty_batch():
    out = T.postprocess_logits(torch.zeros(0, 3, 256, 256), T.SAM_TRANSFORM, (48, 64))
    assert out.shape == (0, 3, 48, 64)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize(("n", "m"), [(64, 256), (256, 97), (5, 5)])
def test_interpolation_matrix_is_f_interpolate(mode, n, m):
    x = torch.randn(3, n, 7)
    ref = torch.nn.functional.interpolate(x[:, None], size=(m, 7), mode=mode, align_corners=False)[:, 0]
    assert torch.allclose(T.interpolation_matrix(n, m, mode) @ x, ref, atol=1e-5)
