"""The factored many-prompts-on-one-image decoder path against the plain decoder.

The factored form (leansam/models/shared_image.py) and the chunked upscaling are the same arithmetic
reassociated, so in float64 they must agree with the plain, batched path to rounding (1e-9), for
every decoder variant: SAM, SAM 2 (object-score token, high-res skip features, sigmoid IoU) and
EfficientSAM (GELU token MLPs, GroupNorm upscaling, PE-residual self-attention).
"""

from __future__ import annotations

import pytest
import torch

from leansam.models.mask_decoder import MaskDecoder
from leansam.models.shared_image import FactoredBatch, FactoredKeys

VARIANTS = {
    "sam": {},
    "sam2": {"pred_obj_score": True, "iou_sigmoid": True, "use_high_res_features": True},
    "efficientsam": {
        "activation": "gelu",
        "upscaling_norm": "groupnorm",
        "self_attn_pe_residual": True,
        "norm_eps": 1e-6,
    },
}
H = W = 16  # a small grid keeps the test fast; the code paths do not depend on its size


def _decoder(kind: str, seed: int = 0) -> MaskDecoder:
    torch.manual_seed(seed)
    dec = MaskDecoder(**VARIANTS[kind]).double().eval()
    dec.UPSCALE_CHUNK_TOKENS = 96  # 3 rows of the 32 x 32 grid: many chunks and a ragged last one
    dec.FACTOR_MIN_TOKENS = 0  # the 16 x 16 test grid is below the default threshold
    with torch.no_grad():  # move every weight off its init (norm weights 1, biases 0 would hide terms)
        for p in dec.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return dec


def _inputs(b: int, n_tokens: int, seed: int = 1, high_res: bool = False):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    # A mean offset on the image: the LayerNorm statistics of the factored path must not rely on
    # zero-mean tokens.
    image = r(1, 256, H, W) + 0.7
    pe = r(1, 256, H, W)
    dense = r(1, 256, 1, 1).expand(b, 256, H, W)  # no mask input: one vector for every prompt
    feats = [r(1, 32, 4 * H, 4 * W), r(1, 64, 2 * H, 2 * W)] if high_res else None
    sparse = r(b, n_tokens, 256)  # drawn last: the image side depends on the seed only
    return image, pe, sparse, dense, feats


def _run(dec: MaskDecoder, args, multimask: bool, factored: bool, grad: bool = False):
    dec.factor_shared_image = factored
    image, pe, sparse, dense, feats = args
    with torch.set_grad_enabled(grad):
        return [t.detach() for t in dec(image, pe, sparse, dense, multimask, feats)]


@pytest.mark.parametrize("kind", sorted(VARIANTS))
@pytest.mark.parametrize("multimask", [True, False])
def test_factored_decoding_matches_the_plain_batched_decoder(kind: str, multimask: bool) -> None:
    dec = _decoder(kind)
    args = _inputs(3, 4, high_res=kind == "sam2")
    # Grad enabled: the plain transformer and the batched upscaling (the training path).
    ref = _run(dec, args, multimask, factored=False, grad=True)
    assert dec._shared is None
    out = _run(dec, args, multimask, factored=True)
    assert dec._shared is not None  # the factored path ran
    for r, o in zip(ref, out):
        assert r.shape == o.shape
        torch.testing.assert_close(o, r, rtol=1e-9, atol=1e-9)
    # Plain transformer with the chunked (inference) upscaling agrees too.
    plain_chunked = _run(dec, args, multimask, factored=False)
    for r, o in zip(ref, plain_chunked):
        torch.testing.assert_close(o, r, rtol=1e-9, atol=1e-9)


def test_the_factored_tokens_are_factored_keys_and_can_be_subset() -> None:
    # The mask generator scores all prompts, then upscales only the kept ones: src[rows]. With more
    # prompts than FACTOR_BLOCK they come as blocks (FactoredBatch); rows [4, 1] span two blocks,
    # out of order.
    dec = _decoder("sam")
    image, pe, sparse, dense, _ = _inputs(dec.FACTOR_BLOCK + 1, 3)
    with torch.no_grad():
        tokens, src, size, iou, _ = dec.predict_tokens(image, pe, sparse, dense)
        assert isinstance(src, FactoredBatch) and len(src) == dec.FACTOR_BLOCK + 1
        assert isinstance(src[1:3], FactoredKeys) and len(src[1:3]) == 2
        rows = torch.tensor([dec.FACTOR_BLOCK, 1])
        sub = dec.masks_from_tokens(tokens[rows], src[rows], size)
        full = dec.masks_from_tokens(tokens, src, size)
        dec.factor_shared_image = False
        _, plain_src, _, plain_iou, _ = dec.predict_tokens(image, pe, sparse, dense)
        assert isinstance(plain_src, torch.Tensor)
    torch.testing.assert_close(sub, full[rows], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(iou, plain_iou, rtol=1e-9, atol=1e-9)
    assert len(src[1:3]) == 2 and len(src[rows[:0]]) == 0


def test_the_shared_image_is_reused_and_rebuilt_when_image_or_weights_change() -> None:
    dec = _decoder("sam")
    args = _inputs(3, 3)
    first = _run(dec, args, True, factored=True)
    shared = dec._shared
    assert shared is not None
    _run(dec, _inputs(4, 3, seed=1), True, factored=True)  # same image (seed), other prompt count
    assert dec._shared is shared

    other = _inputs(3, 3, seed=2)
    out = _run(dec, other, True, factored=True)
    assert dec._shared is not shared
    torch.testing.assert_close(out[0], _run(dec, other, True, factored=False)[0], rtol=1e-9, atol=1e-9)

    # In-place weight change (fine-tuning, pruning): the cached projections must not be reused.
    shared = dec._shared
    with torch.no_grad():
        dec.transformer.layers[1].cross_attn_token_to_image.k_proj.weight.mul_(1.5)
    out = _run(dec, other, True, factored=True)
    assert dec._shared is not shared
    torch.testing.assert_close(out[0], _run(dec, other, True, factored=False)[0], rtol=1e-9, atol=1e-9)
    assert not torch.allclose(out[0], first[0][:3])


def test_the_factored_path_is_set_up_only_for_enough_prompts_then_reused() -> None:
    # Its per-image products cost more than decoding one or two prompts plainly, so a call with fewer
    # than FACTOR_MIN_PROMPTS prompts on a new image stays plain; once set up, every call uses it.
    dec = _decoder("sam")
    few = _inputs(dec.FACTOR_MIN_PROMPTS - 1, 3)
    with torch.no_grad():
        assert isinstance(dec.predict_tokens(*few[:4])[1], torch.Tensor)
        assert dec._shared is None
        assert isinstance(dec.predict_tokens(*_inputs(dec.FACTOR_MIN_PROMPTS, 3)[:4])[1], FactoredKeys)
        one = _inputs(1, 3)
        assert isinstance(dec.predict_tokens(*one[:4])[1], FactoredKeys)  # same image: reused
    torch.testing.assert_close(
        _run(dec, one, True, factored=True)[0], _run(dec, one, True, factored=False)[0], rtol=1e-9, atol=1e-9
    )


def test_many_prompt_tokens_and_per_prompt_images_take_the_plain_path() -> None:
    dec = _decoder("sam")
    image, pe, sparse, dense, _ = _inputs(3, 20)  # 20 tokens + 5 output tokens: folding costs more
    assert not dec.transformer.factors(25)
    with torch.no_grad():
        _, src, _, _, _ = dec.predict_tokens(image, pe, sparse, dense)
        assert isinstance(src, torch.Tensor)
        # A mask prompt per prompt: the image tokens differ from the start.
        _, src, _, _, _ = dec.predict_tokens(image, pe, sparse[:, :3], torch.randn_like(dense))
        assert isinstance(src, torch.Tensor)


def test_small_token_grids_take_the_plain_path_by_default() -> None:
    dec = MaskDecoder().double().eval()  # default FACTOR_MIN_TOKENS: 16 x 16 = 256 tokens is below it
    image, pe, sparse, dense, _ = _inputs(6, 3)
    with torch.no_grad():
        assert isinstance(dec.predict_tokens(image, pe, sparse, dense)[1], torch.Tensor)
    assert dec._shared is None
