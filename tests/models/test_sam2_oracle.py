"""SAM 2 / SAM 2.1 (Hiera tiny / small / base_plus / large) against the official code run live, fp32.

The official code is PyPI ``sam2`` 1.1.0 (facebookresearch/sam2 @2b90b9f), imported through
``tests.oracles`` only. Only ``sam2.1_hiera_tiny`` has a stored fixture; for every model the official
model is built from its yaml config with the official builder (``build_sam2``, which also turns on
the dynamic multimask fallback), given deterministic stand-in weights for its whole state_dict
(memory modules included; ``synthetic_weights.tensor_for``), loaded with the official strict
loader, and leansam loads the same ``{"model": sd}`` file through its public API.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import leansam
from leansam.models.sam import Sam
from leansam.registry import get_model_info
from leansam.zoo.hiera import filter_fn
from tests import oracles
from tests import parity as P
from tests import tolerances as T

CASE = "sam2.1_hiera_tiny"  # image and prompts of the SAM 2.1-t fixture, used for every model
_CONFIG_SIZE = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
_IMAGE_MODE = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
# Tiny (SAM 2 and SAM 2.1 configs) in the default suite; the larger encoders are slow.
NAMES = (
    "sam2.1_hiera_tiny",
    "sam2_hiera_tiny",
    pytest.param("sam2.1_hiera_small", marks=pytest.mark.slow),
    pytest.param("sam2_hiera_small", marks=pytest.mark.slow),
    pytest.param("sam2.1_hiera_base_plus", marks=pytest.mark.slow),
    pytest.param("sam2_hiera_base_plus", marks=pytest.mark.slow),
    pytest.param("sam2.1_hiera_large", marks=pytest.mark.slow),
    pytest.param("sam2_hiera_large", marks=pytest.mark.slow),
)


def official_config(name: str) -> str:
    """leansam name -> the official yaml config, e.g. configs/sam2.1/sam2.1_hiera_t.yaml."""
    version, size = name.split("_hiera_")
    return f"configs/{version}/{version}_hiera_{_CONFIG_SIZE[size]}.yaml"


def stand_in_state(official: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Stand-in weights for the official model's state_dict: floats from the fixture recipe
    (a function of key name and shape), other tensors copied from the official model."""
    tensor_for = P._synthetic_module().tensor_for
    state = {}
    for key, value in official.state_dict().items():
        if value.is_floating_point():
            state[key] = torch.from_numpy(np.ascontiguousarray(tensor_for(key, list(value.shape))))
        else:
            state[key] = value.detach().clone()
    return state


def build_official(name: str, path: Path) -> torch.nn.Module:
    """The official model with stand-in weights; also writes them to ``path`` in the official layout."""
    sam2 = oracles.sam2()
    official = sam2.build_sam.build_sam2(official_config(name), ckpt_path=None, device="cpu")
    torch.save({"model": stand_in_state(official)}, path)
    sam2.build_sam._load_checkpoint(official, str(path))  # the official strict loader
    return official.eval()


@dataclass
class Pair:
    name: str
    mine: Sam
    official: torch.nn.Module
    mine_predictor: leansam.SamPredictor
    official_predictor: object  # sam2's SAM2ImagePredictor


# Built pairs, shared by the tests of this process (tests/test_predictor_options.py reuses SAM 2.1-t).
_PAIRS: dict[str, Pair] = {}


def sam2_pair(name: str) -> Pair:
    """Both models on the same stand-in weights, each predictor set on the case image."""
    if name not in _PAIRS:
        for other in list(_PAIRS):  # tests run model by model: keep only the fixture's model
            if other != CASE:
                del _PAIRS[other]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / get_model_info(name).weights.file_name
            official = build_official(name, path)
            mine = leansam.build_model(name, checkpoint=path)
        image = P.load_case(CASE)["image"]
        p_mine = leansam.SamPredictor(mine)
        p_mine.set_image(image)
        p_official = oracles.sam2().sam2_image_predictor.SAM2ImagePredictor(official)
        p_official.set_image(image)
        _PAIRS[name] = Pair(name, mine, official, p_mine, p_official)
    return _PAIRS[name]


@pytest.fixture(scope="module")
def pair() -> Iterator[Callable[[str], Pair]]:
    yield sam2_pair
    for name in list(_PAIRS):
        if name != CASE:
            del _PAIRS[name]


@pytest.fixture(scope="module", params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    """A module-scoped parameter, so that pytest runs all tests of one model together."""
    return request.param


def test_strict_load_of_the_official_layout(pair: Callable[[str], Pair], name: str) -> None:
    p = pair(name)
    ref = p.official.state_dict()  # the official model loaded the same file, strictly
    mapped, set_aside = filter_fn(ref)
    own = p.mine.state_dict()
    assert set(own) == set(mapped)
    assert all(torch.equal(own[k], v) for k, v in mapped.items())
    assert sorted(set_aside) == sorted(k for k in ref if not k.startswith(_IMAGE_MODE))
    image_mode = [t for k, t in p.official.named_parameters() if k.startswith(_IMAGE_MODE)]
    assert sum(t.numel() for t in image_mode) == get_model_info(name).n_params


def test_stand_in_weights_are_the_fixture_weights(pair: Callable[[str], Pair]) -> None:
    """For the model with a fixture, the regenerated state is exactly the fixture's, and the
    official model run live reproduces the stored case (the oracle setup is right)."""
    p = pair(CASE)
    state, wrapper = P.stand_in_state_dict(CASE)
    ref = p.official.state_dict()
    assert wrapper == "model" and set(state) == set(ref)
    assert all(torch.equal(ref[k], v) for k, v in state.items())
    case = P.load_case(CASE)
    for s in P.PROMPT_SETS:
        masks, iou, low = p.official_predictor.predict(**P.case_prompts(case, s), multimask_output=True)
        P.assert_close_scaled(low, case[f"{s}_low_res_logits"], tol=1e-3, what=f"official {s} logits")
        assert np.abs(iou - case[f"{s}_iou"]).max() <= 1e-4
        assert (masks.astype(bool) != P.case_masks(case, s)).mean() <= 1e-3


def test_image_features_match_official(pair: Callable[[str], Pair], name: str) -> None:
    p = pair(name)
    image = P.load_case(CASE)["image"]
    official_input = p.official_predictor._transforms(image)[None]
    mine_input = p.mine.preprocess(image)
    assert mine_input.shape == official_input.shape == (1, 3, 1024, 1024)
    assert (mine_input - official_input).abs().max().item() <= 1e-5
    # What each predictor cached: image_embed (+ no_mem_embed) and the conv_s0 / conv_s1 projections.
    cached = p.official_predictor._features
    refs = [cached["image_embed"], *cached["high_res_feats"]]
    mine = [p.mine_predictor.features.embed, *p.mine_predictor.features.high_res]
    assert [tuple(r.shape) for r in refs] == [(1, 256, 64, 64), (1, 32, 256, 256), (1, 64, 128, 128)]
    for what, m, r in zip(("image_embed", "high_res_feats_0", "high_res_feats_1"), mine, refs):
        T.check_floats(f"live/{name}/{what}", m, r.numpy())


@pytest.mark.parametrize("multimask", [True, False])  # False: the dynamic multimask fallback
@pytest.mark.parametrize("prompt_set", P.PROMPT_SETS)
def test_predictor_matches_official(
    pair: Callable[[str], Pair], name: str, prompt_set: str, multimask: bool
) -> None:
    p = pair(name)
    kwargs = P.case_prompts(P.load_case(CASE), prompt_set)
    m1, s1, l1 = p.mine_predictor.predict(**kwargs, multimask_output=multimask)
    m2, s2, l2 = p.official_predictor.predict(**kwargs, multimask_output=multimask)
    assert l1.shape == l2.shape == ((3 if multimask else 1), 256, 256)
    assert np.abs(l2).max() <= 32.0  # the official predictor clamps the returned low-res logits
    prefix = f"live/{name}/{prompt_set}/{'multi' if multimask else 'single'}"
    T.check_prediction(prefix, (m1, s1, l1), (m2.astype(bool), s2, l2))
