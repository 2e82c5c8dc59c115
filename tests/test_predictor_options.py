"""``SamPredictor(mask_threshold=, max_hole_area=, max_sprinkle_area=)`` against SAM 2's own predictor.

The official ``SAM2ImagePredictor`` (PyPI ``sam2`` 1.1.0) cleans the 256 x 256 low-res logits before
upsampling them: background components (logit <= threshold, 8-connected) of area <= max_hole_area
are set to threshold + 10, and foreground components of area <= max_sprinkle_area to threshold - 10.
Both are components of the uncleaned logits (SAM 2 labels the specks on the mask from before hole
filling, so a filled hole inside a removed speck stays); the returned low-res logits are not
cleaned. Areas count low-res pixels, inclusive (area <= max). Its
connected components come from an optional CUDA extension, ``sam2._C``; without it the official code
warns and silently skips the clean-up. ``tests.oracles`` provides that kernel's contract on CPU
(:func:`tests.oracles.connected_components_8`, checked below), and the official calls here turn that
warning into an error, so the comparison always runs the official clean-up.

Model: stand-in SAM 2.1-t (the fixture's weights); its random-weight masks are full of small
components, so each option changes many pixels.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import leansam
from tests import oracles
from tests import parity as P
from tests.models.test_sam2_oracle import _PAIRS, CASE, Pair, sam2_pair

# (mask_threshold, max_hole_area, max_sprinkle_area); areas are in low-res (256 x 256) pixels.
OPTIONS = (
    (0.0, 1, 0),  # holes of exactly 1 pixel are filled: area <= max, not <
    (0.0, 0, 1),
    (0.0, 30, 30),  # both: components of the uncleaned logits
    (1.5, 200, 100),  # components relative to the threshold
    (-1.0, 0, 0),  # the threshold alone
)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    yield sam2_pair(CASE)
    _PAIRS.clear()


def _predictors(pair: Pair, options: tuple[float, float, float]) -> tuple[leansam.SamPredictor, object]:
    """Predictors with the options, reusing the image features the pair's predictors computed."""
    threshold, hole, sprinkle = options
    mine = leansam.SamPredictor(
        pair.mine, mask_threshold=threshold, max_hole_area=hole, max_sprinkle_area=sprinkle
    )
    mine.set_features(pair.mine_predictor.features, pair.mine_predictor.original_size)
    official = oracles.sam2().sam2_image_predictor.SAM2ImagePredictor(
        pair.official, mask_threshold=threshold, max_hole_area=hole, max_sprinkle_area=sprinkle
    )
    src = pair.official_predictor  # what set_image stores, copied instead of encoding again
    official._features, official._orig_hw, official._is_image_set = src._features, src._orig_hw, True
    return mine, official


_PLAIN: dict[str, np.ndarray] = {}


def _plain_official_masks(pair: Pair, prompt_set: str) -> np.ndarray:
    """The official masks without any option, computed once per prompt set."""
    if prompt_set not in _PLAIN:
        kwargs = P.case_prompts(P.load_case(CASE), prompt_set)
        _PLAIN[prompt_set] = pair.official_predictor.predict(**kwargs, multimask_output=True)[0]
    return _PLAIN[prompt_set]


def _official_predict(predictor, **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        # The official code downgrades any failure of the clean-up to a warning and skips it.
        warnings.simplefilter("error", UserWarning)
        return predictor.predict(**kwargs)


@pytest.mark.parametrize("prompt_set", ["points", "box_points"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "thr{}-hole{}-sprinkle{}".format(*o))
def test_options_match_official(pair: Pair, options: tuple[float, float, float], prompt_set: str) -> None:
    mine, official = _predictors(pair, options)
    kwargs = P.case_prompts(P.load_case(CASE), prompt_set)
    m1, s1, l1 = mine.predict(**kwargs, multimask_output=True)
    m2, s2, l2 = _official_predict(official, **kwargs, multimask_output=True)
    plain = _plain_official_masks(pair, prompt_set)
    changed = float((m2 != plain).mean())
    assert changed > 1e-3, f"the options change only {changed:.1e} of the official masks: nothing is tested"
    assert np.abs(l1 - l2).max() <= 1e-3  # the returned low-res logits are the uncleaned ones
    assert np.abs(s1 - s2).max() <= 1e-4
    assert m1.dtype == bool and m1.shape == m2.shape
    differing = float((m1 != m2.astype(bool)).mean())
    print(
        f"{options} {prompt_set}: official masks changed by the options {changed:.3f}, differing {differing:.1e}"
    )
    assert differing <= 1e-3


@pytest.mark.parametrize("multimask", [True, False])
def test_cleaned_logits_match_official(pair: Pair, multimask: bool) -> None:
    """return_logits=True: the upsampled logits of the cleaned low-res logits (holes at threshold + 10)."""
    mine, official = _predictors(pair, (0.5, 30, 30))
    kwargs = P.case_prompts(P.load_case(CASE), "box_points")
    m1, _, _ = mine.predict(**kwargs, multimask_output=multimask, return_logits=True)
    m2, _, _ = _official_predict(official, **kwargs, multimask_output=multimask, return_logits=True)
    assert m1.dtype == np.float32 and m1.shape == m2.shape
    assert np.abs(m1 - m2).max() <= 1e-3 * max(1.0, float(np.abs(m2).max()))


def test_connected_components_stub_has_the_kernel_contract() -> None:
    """The CPU stand-in for sam2._C: 8-connectivity, labels > 0 on foreground only, per-pixel areas."""
    mask = np.array(
        [
            [1, 0, 0, 0, 1, 1],
            [0, 1, 0, 0, 0, 1],
            [0, 0, 0, 0, 1, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 1, 0, 0, 1, 1],
        ],
        dtype=np.uint8,
    )
    labels, counts = oracles.connected_components_8(torch.from_numpy(mask)[None, None])
    labels, counts = labels[0, 0].numpy(), counts[0, 0].numpy()
    assert labels.dtype == counts.dtype == np.int32
    assert ((labels > 0) == mask.astype(bool)).all() and (counts[mask == 0] == 0).all()
    expected_area = np.array(
        [
            [2, 0, 0, 0, 4, 4],
            [0, 2, 0, 0, 0, 4],
            [0, 0, 0, 0, 4, 0],
            [3, 3, 0, 0, 0, 0],
            [0, 3, 0, 0, 2, 2],
        ]
    )
    assert (counts == expected_area).all()
    # Diagonal neighbours share a label; separate components do not.
    assert labels[0, 0] == labels[1, 1] and labels[2, 4] == labels[1, 5] == labels[0, 4]
    assert len({labels[0, 0], labels[0, 4], labels[3, 0], labels[4, 4]}) == 4


@pytest.mark.parametrize("options", [(0.0, 1, 0), (0.0, 0, 3), (0.0, 20, 20), (0.7, 60, 5), (-0.5, 5, 60)])
def test_clean_up_equals_official_transform(options: tuple[float, float, float]) -> None:
    """leansam.postprocess on random logit fields == SAM2Transforms.postprocess_masks at the same size
    (a same-size bilinear resize is the identity), exactly."""
    from leansam.postprocess import fill_holes_and_remove_sprinkles

    threshold, hole, sprinkle = options
    transforms = oracles.sam2().utils.transforms.SAM2Transforms(1024, threshold, hole, sprinkle)
    gen = torch.Generator().manual_seed(0)
    coarse = torch.randn(2, 3, 48, 40, generator=gen)  # blobs and specks of many sizes
    logits = torch.nn.functional.interpolate(coarse, size=(96, 80), mode="bilinear") + 0.3 * torch.randn(
        2, 3, 96, 80, generator=gen
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        ref = transforms.postprocess_masks(logits, (96, 80))
    got = fill_holes_and_remove_sprinkles(logits, threshold, hole, sprinkle)
    assert not torch.equal(ref, logits)  # the clean-up changed something
    assert torch.equal(got, ref)
