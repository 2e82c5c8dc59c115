"""The fast decoder (leansam/models/fast) against the reference decoder (leansam/models/mask_decoder.py).

The fast decoder's folded attention, factored image tokens and chunked upscaling are the same
arithmetic reassociated, so in float64 they must agree with the reference forward to rounding
(1e-9), for every decoder variant: SAM, SAM 2 (object-score token, high-res skip features, sigmoid
IoU) and EfficientSAM (GELU token MLPs, GroupNorm upscaling, PE-residual self-attention).
"""

from __future__ import annotations

import pytest
import torch

import leansam
from leansam.models.fast import FastDecoder, FastOptions
from leansam.models.fast.factored import FactoredBatch, FactoredKeys
from leansam.models.mask_decoder import MaskDecoder

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
# Every fast form on the 16 x 16 test grid (below the default min_tokens), in many upscaling chunks
# (3 rows of the 32 x 32 grid) with a ragged last one.
TEST_OPTIONS = FastOptions(min_tokens=0, upscale_chunk_tokens=96)
# The plain (unfactored) transformer with the batched upscaling.
PLAIN = FastOptions(min_tokens=10**9)


def _decoder(kind: str, seed: int = 0) -> MaskDecoder:
    torch.manual_seed(seed)
    dec = MaskDecoder(**VARIANTS[kind]).double().eval()
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


def _reference(dec: MaskDecoder, args, multimask: bool):
    image, pe, sparse, dense, feats = args
    with torch.enable_grad():  # the training path
        return [t.detach() for t in dec(image, pe, sparse, dense, multimask, feats)]


def _close(got, want) -> None:
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", sorted(VARIANTS))
@pytest.mark.parametrize("multimask", [True, False])
def test_the_fast_decoder_matches_the_reference(kind: str, multimask: bool) -> None:
    dec = _decoder(kind)
    args = _inputs(3, 4, high_res=kind == "sam2")
    ref = _reference(dec, args, multimask)
    cache: dict = {}
    _close(FastDecoder(dec, cache, TEST_OPTIONS)(*args[:4], multimask, args[4]), ref)
    assert any(k[0] == "fast_decoder.shared_image" for k in cache)  # the factored form ran
    # Folded attention with the batched upscaling, and with the chunked one, agree too.
    _close(FastDecoder(dec, None, PLAIN)(*args[:4], multimask, args[4]), ref)
    chunked_only = FastOptions(min_tokens=0, min_prompts=10**9, upscale_chunk_tokens=96)
    _close(FastDecoder(dec, {}, chunked_only)(*args[:4], multimask, args[4]), ref)


def test_the_factored_tokens_are_factored_keys_and_can_be_subset() -> None:
    # The mask generator scores all prompts, then upscales only the kept ones. With more prompts than
    # a block they come as blocks (FactoredBatch); rows [4, 1] span two blocks, out of order.
    dec = _decoder("sam")
    fast = FastDecoder(dec, {}, TEST_OPTIONS)
    image, pe, sparse, dense, _ = _inputs(TEST_OPTIONS.block + 1, 3)
    out = fast.predict_tokens(image, pe, sparse, dense)
    src = out.image
    assert isinstance(src, FactoredBatch) and len(src) == TEST_OPTIONS.block + 1
    assert isinstance(src[1:3], FactoredKeys) and len(src[1:3]) == 2
    rows = torch.tensor([TEST_OPTIONS.block, 1])
    sub = fast.masks_from_tokens(out.select(rows))
    full = fast.masks_from_tokens(out)
    plain = FastDecoder(dec, None, TEST_OPTIONS).predict_tokens(image, pe, sparse, dense)
    assert isinstance(plain.image, torch.Tensor)
    torch.testing.assert_close(sub, full[rows], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out.iou, plain.iou, rtol=1e-9, atol=1e-9)
    assert len(src[rows[:0]]) == 0


def test_the_shared_image_is_reused_and_rebuilt_when_the_image_changes() -> None:
    dec = _decoder("sam")
    cache: dict = {}
    fast = FastDecoder(dec, cache, TEST_OPTIONS)
    fast(*_inputs(3, 3)[:4], True)
    (shared,) = cache.values()
    fast(*_inputs(4, 3, seed=1)[:4], True)  # same image (seed), other prompt count
    assert next(iter(cache.values())) is shared
    other = _inputs(3, 3, seed=2)
    out = fast(*other[:4], True)
    assert next(iter(cache.values())) is not shared
    _close(out, _reference(dec, other, True))


def test_the_factored_form_is_set_up_only_for_enough_prompts_then_reused() -> None:
    # Its per-image products cost more than decoding one or two prompts plainly, so a call with fewer
    # than min_prompts prompts on a new image stays plain; once set up, every call uses it.
    dec = _decoder("sam")
    cache: dict = {}
    fast = FastDecoder(dec, cache, TEST_OPTIONS)
    few = _inputs(TEST_OPTIONS.min_prompts - 1, 3)
    assert isinstance(fast.predict_tokens(*few[:4]).image, torch.Tensor)
    assert not cache
    assert isinstance(fast.predict_tokens(*_inputs(TEST_OPTIONS.min_prompts, 3)[:4]).image, FactoredKeys)
    one = _inputs(1, 3)
    assert isinstance(fast.predict_tokens(*one[:4]).image, FactoredKeys)  # same image: reused
    _close(fast(*one[:4], True), _reference(dec, one, True))


def test_many_prompt_tokens_and_per_prompt_images_take_the_plain_path() -> None:
    dec = _decoder("sam")
    fast = FastDecoder(dec, {}, TEST_OPTIONS)
    image, pe, sparse, dense, _ = _inputs(3, 20)  # 20 tokens + 5 output tokens: folding costs more
    out = fast.predict_tokens(image, pe, sparse, dense)
    assert isinstance(out.image, torch.Tensor)
    _close(fast(image, pe, sparse, dense, True), _reference(dec, (image, pe, sparse, dense, None), True))
    # A mask prompt per prompt: the image tokens differ from the start.
    masked = (image, pe, sparse[:, :3], torch.randn_like(dense), None)
    assert isinstance(fast.predict_tokens(*masked[:4]).image, torch.Tensor)
    _close(fast(*masked[:4], True), _reference(dec, masked, True))


def test_small_token_grids_take_the_plain_path_by_default() -> None:
    dec = MaskDecoder().double().eval()  # default min_tokens: 16 x 16 = 256 tokens is below it
    cache: dict = {}
    image, pe, sparse, dense, _ = _inputs(6, 3)
    assert isinstance(FastDecoder(dec, cache).predict_tokens(image, pe, sparse, dense).image, torch.Tensor)
    assert not cache


def test_fp32_fast_decoder_is_as_accurate_as_the_fp32_reference_on_a_full_size_grid() -> None:
    # The default options on SAM's 64 x 64 grid (factored blocks, chunked upscaling) in float32: its
    # distance to the float64 reference is at most twice the float32 reference's own rounding error.
    dec = _decoder("sam")
    g = torch.Generator().manual_seed(3)
    image, pe = torch.randn(1, 256, 64, 64, generator=g), torch.randn(1, 256, 64, 64, generator=g)
    dense = torch.randn(1, 256, 1, 1, generator=g).expand(6, 256, 64, 64)
    sparse = torch.randn(6, 3, 256, generator=g)
    args = (image, pe, sparse, dense, None)
    exact = _reference(dec, [a.double() if a is not None else None for a in args], True)
    dec32 = dec.float()
    cache: dict = {}
    got = FastDecoder(dec32, cache)(*args[:4], True)
    assert cache  # the factored form ran
    ref32 = _reference(dec32, args, True)
    for g_, r_, e_ in zip(got, ref32, exact):
        ref_err = float((r_.double() - e_).abs().max())
        assert float((g_.double() - e_).abs().max()) <= 2 * ref_err + 1e-6


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad", "grad"])
def test_a_model_built_and_prompted_in_any_grad_mode_gives_the_same_masks(mode: str) -> None:
    # Caches keyed on autograd internals (a tensor's version counter) crash on inference tensors.
    image = (torch.rand(96, 128, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy()
    with torch.no_grad():
        p = leansam.SamPredictor(leansam.build_model("leansam_nano"))
        p.set_image(image)
        ref = p.predict(box=[10, 10, 90, 70])
    ctx = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad, "grad": torch.enable_grad}[mode]
    with ctx():
        model = leansam.build_model("leansam_nano")
        predictor = leansam.SamPredictor(model)
        predictor.set_image(image)
        got = predictor.predict(box=[10, 10, 90, 70])
        # Sam.decode directly: the fast decoder without a gradient, the reference with one.
        box = model.prepare_prompts(None, None, torch.tensor([[10.0, 10, 90, 70]]), (96, 128))
        low, _, _ = model.decode(predictor.features, box)
    assert (got[0] == ref[0]).all()
    assert abs(got[1] - ref[1]).max() <= 1e-6
    torch.testing.assert_close(low.detach()[0], torch.from_numpy(ref[2]), rtol=1e-4, atol=1e-4)
