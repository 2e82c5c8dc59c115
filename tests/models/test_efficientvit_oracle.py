"""EfficientViT-SAM L0 / L1 / L2 / XL0 / XL1 against the official code run live, fp32.

The official code is PyPI ``efficientsam`` 1.0.0 (mit-han-lab/efficientvit's package), imported
through ``tests.oracles`` only. Only L0 and XL0 have stored fixtures; for every size the official
model is built with the official builder, given deterministic stand-in weights for its own
state_dict keys (``synthetic_weights.tensor_for``; integer buffers copied from the official model),
and leansam loads the same official-format file through its public API. L0's stand-in weights are
the fixture's, so L0 also checks the oracle setup against ``case.npz``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import leansam
from leansam.models.sam import Sam
from leansam.registry import get_model_info
from tests import oracles
from tests import parity as P
from tests import tolerances as T

CASE = "efficientvit_sam_l0"  # image and prompts of the L0 fixture, used for every size
# Official model-zoo names. L1 is the default suite's; L0 and XL0 are also checked against their
# fixtures by test_efficientvit.py, L2 costs ~45 s more here, XL sizes run at 1024.
VARIANTS = (
    pytest.param("l0", marks=pytest.mark.slow),
    "l1",
    pytest.param("l2", marks=pytest.mark.slow),
    pytest.param("xl0", marks=pytest.mark.slow),
    pytest.param("xl1", marks=pytest.mark.slow),
)
# Every prompt set with 3 masks and with one (mask token 0).
PROMPTS = [(s, m) for s in P.PROMPT_SETS for m in (True, False)]


def stand_in_state(official: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Stand-in weights for the official model's state_dict: floats from the fixture recipe
    (a function of key name and shape), integer buffers copied from the official model."""
    tensor_for = P._synthetic_module().tensor_for
    state = {}
    for key, value in official.state_dict().items():
        if value.is_floating_point():
            state[key] = torch.from_numpy(np.ascontiguousarray(tensor_for(key, list(value.shape))))
        else:
            state[key] = value.detach().clone()
    return state


@dataclass
class Pair:
    name: str
    mine: Sam
    official: torch.nn.Module
    mine_predictor: leansam.SamPredictor
    official_predictor: object  # efficientsam's EfficientViTSamPredictor
    official_input: torch.Tensor  # the official predictor's encoder input for the case image


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Pair]]:
    """variant -> both models on the same stand-in weights, each predictor set on the case image."""
    ev = oracles.efficientvit_sam()
    create_efficientvit_sam_model = ev.sam_model_zoo.create_efficientvit_sam_model

    root = tmp_path_factory.mktemp("efficientvit_oracle")
    image = P.load_case(CASE)["image"]
    cache: dict[str, Pair] = {}

    def get(variant: str) -> Pair:
        if variant not in cache:
            cache.clear()  # tests run size by size (``variant`` is module-scoped)
            name = f"efficientvit_sam_{variant}"
            official = create_efficientvit_sam_model(f"efficientvit-sam-{variant}", pretrained=False)
            state = stand_in_state(official)
            path = Path(root / get_model_info(name).weights.file_name)
            torch.save({"state_dict": state}, path)  # the trainer's layout of the official files
            # What the official builder does with pretrained=True, minus building the model again.
            official.load_state_dict(ev.models.utils.load_state_dict_from_file(str(path)))
            official.eval()
            mine = leansam.build_model(name, checkpoint=path)
            p_mine = leansam.SamPredictor(mine)
            p_mine.set_image(image)
            p_official = ev.models.efficientvit.sam.EfficientViTSamPredictor(official)
            p_official.set_image(image)
            official_input = official.transform(image).unsqueeze(0)
            cache[variant] = Pair(name, mine, official, p_mine, p_official, official_input)
        return cache[variant]

    yield get
    cache.clear()


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    """A module-scoped parameter, so that pytest runs all tests of one size together."""
    return request.param


def test_strict_load_of_the_official_layout(pair: Callable[[str], Pair], variant: str) -> None:
    p = pair(variant)
    own, ref = p.mine.state_dict(), p.official.state_dict()  # the official model loaded the same file
    assert set(own) == set(ref)
    assert all(torch.equal(own[k], v) for k, v in ref.items())
    assert sum(t.numel() for t in p.official.parameters()) == get_model_info(p.name).n_params


def test_preprocessing_and_embedding_match_official(pair: Callable[[str], Pair], variant: str) -> None:
    p = pair(variant)
    size = get_model_info(p.name).transform.encoder_size
    mine_input = p.mine.preprocess(P.load_case(CASE)["image"])
    assert mine_input.shape == p.official_input.shape == (1, 3, size, size)
    assert (mine_input - p.official_input).abs().max().item() <= 1e-5
    # The embeddings the two predictors cached for the case image (official: fp32, no fixture).
    ref = p.official_predictor.features.numpy()
    T.check_floats(f"live/{p.name}/embedding", p.mine_predictor.features.embed, ref)


@pytest.mark.slow
def test_official_l0_reproduces_the_fixture(pair: Callable[[str], Pair]) -> None:
    """The oracle setup (stubs, stand-in weights, loading) reproduces the stored L0 case."""
    p = pair("l0")
    case = P.load_case(CASE)
    state = p.official.state_dict()
    total = sum(float(v.double().abs().sum()) for v in state.values() if v.is_floating_point())
    assert total == pytest.approx(P.meta(CASE)["state_abs_sum"], rel=1e-12)
    with torch.no_grad():
        embed = p.official.image_encoder(P.encoder_input(case))
    P.assert_close_scaled(embed, case["embedding"], tol=1e-4, what="official L0 embedding vs fixture")
    for s in P.PROMPT_SETS:
        masks, iou, low = p.official_predictor.predict(**P.case_prompts(case, s), multimask_output=True)
        P.assert_close_scaled(low, case[f"{s}_low_res_logits"], tol=1e-3, what=f"official {s} logits")
        assert np.abs(iou - case[f"{s}_iou"]).max() <= 1e-4
        assert (masks != P.case_masks(case, s)).mean() <= 1e-3


@pytest.mark.parametrize(("prompt_set", "multimask"), PROMPTS)
def test_predictor_matches_official(
    pair: Callable[[str], Pair], variant: str, prompt_set: str, multimask: bool
) -> None:
    p = pair(variant)
    kwargs = P.case_prompts(P.load_case(CASE), prompt_set)
    m1, s1, l1 = p.mine_predictor.predict(**kwargs, multimask_output=multimask)
    m2, s2, l2 = p.official_predictor.predict(**kwargs, multimask_output=multimask)
    assert l1.shape == l2.shape == ((3 if multimask else 1), 256, 256)
    prefix = f"live/{p.name}/{prompt_set}/{'multi' if multimask else 'single'}"
    T.check_prediction(prefix, (m1, s1, l1), (m2, s2, l2))
