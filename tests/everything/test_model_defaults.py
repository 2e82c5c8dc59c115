"""Per-model segment-everything defaults: a model's registered thresholds apply wherever the
caller leaves them unset (API, CLI, dataset engine), the caller's values always win, and
the bundled models' come from their calibration results files, whose replay matches the generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import leansam
from leansam.everything import AutomaticMaskGenerator
from leansam.everything.options import SAM_DEFAULTS
from leansam.registry import everything_defaults, get_model_info, list_models
from leansam.train.calibrate import LEVELS, VALIDATION_SEED, collect, settings
from leansam.train.calibrate import RESULTS as CALIBRATION
from leansam.train.data import RICH_SYNTH, SynthSource
from leansam.train.recipe import EVAL_SETS, SEGMENTS
from tests.compress.helpers import one_thread  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parents[2]
KEYS = tuple(SAM_DEFAULTS)


@pytest.fixture(scope="module")
def tiny():
    return leansam.build_model("leansam_tiny")


def _thresholds(gen: AutomaticMaskGenerator) -> dict[str, float]:
    return {k: getattr(gen.options, k) for k in KEYS}


def _declared() -> dict[str, float]:
    """leansam_tiny's declared grid thresholds (hierarchical's is tested in test_hierarchical_defaults)."""
    info = get_model_info("leansam_tiny").everything
    assert info is not None, "leansam_tiny declares no segment-everything defaults"
    return {k: v for k, v in info.thresholds().items() if k in KEYS}


def test_official_models_declare_none() -> None:
    official = [n for n in list_models() if get_model_info(n).family != "default"]
    assert official and all(everything_defaults(n) is None for n in official)
    assert everything_defaults("leansam_tiny_teacher") is None and everything_defaults(None) is None
    assert everything_defaults("no_such_model") is None


def test_the_models_defaults_apply_when_unset(tiny) -> None:
    declared = _declared()
    assert set(declared) == set(KEYS) and declared != SAM_DEFAULTS
    assert _thresholds(AutomaticMaskGenerator(tiny)) == declared
    assert _thresholds(AutomaticMaskGenerator(tiny, "hierarchical")) == declared


def test_explicit_values_win(tiny) -> None:
    assert _thresholds(AutomaticMaskGenerator(tiny, **SAM_DEFAULTS)) == SAM_DEFAULTS
    gen = AutomaticMaskGenerator(tiny, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    # an explicit 0 is a value, not "unset"; the options left unset still come from the model
    assert gen.options.pred_iou_thresh == 0.0 and gen.options.stability_score_thresh == 0.0
    assert gen.options.stability_score_offset == _declared()["stability_score_offset"]
    assert gen.options.box_nms_thresh == _declared()["box_nms_thresh"]


def test_models_without_declared_defaults_get_segment_anythings(tiny) -> None:
    teacher = leansam.build_model("leansam_tiny_teacher", pretrained=False)
    assert _thresholds(AutomaticMaskGenerator(teacher)) == SAM_DEFAULTS
    from tests.everything.models import RegionSam

    assert _thresholds(AutomaticMaskGenerator(RegionSam())) == SAM_DEFAULTS


def test_boxes_strategy_keeps_its_own_defaults(tiny) -> None:
    gen = AutomaticMaskGenerator(tiny, "boxes", boxes=np.array([[0, 0, 10, 10]], np.float32))
    assert (gen.options.pred_iou_thresh, gen.options.stability_score_thresh, gen.options.box_nms_thresh) == (
        0.0,
        0.0,
        1.0,
    )


def _labeler_thresholds(*flags: str) -> dict[str, float]:
    """The thresholds of the dataset engine's generator for ``leansam everything photos/ FLAGS``."""
    from leansam.batch.jobs import JobSpec, Labeler
    from leansam.cli import build_parser
    from leansam.commands.everything import _generator_options

    options = _generator_options(build_parser().parse_args(["everything", "photos/", *flags]))
    del options["output_mode"], options["progress"]  # as the command hands them to the engine
    return _thresholds(Labeler(JobSpec(task="everything", model="leansam_tiny", generator=options)).generator)


def test_dataset_engine_uses_the_models_defaults() -> None:
    assert _labeler_thresholds() == _declared()
    got = _labeler_thresholds("--pred-iou-thresh", "0.88", "--stability-score-offset", "1.0")
    assert got["pred_iou_thresh"] == 0.88 and got["stability_score_offset"] == 1.0
    assert got["stability_score_thresh"] == _declared()["stability_score_thresh"]


#: Models whose registry entry declares segment-everything defaults (the bundled ones).
CALIBRATED = [n for n in list_models() if everything_defaults(n) is not None]


def test_the_default_models_results_file_is_the_calibration_stages() -> None:
    assert (
        "leansam_tiny" in CALIBRATED and str(CALIBRATION) in get_model_info("leansam_tiny").everything.source
    )


@pytest.mark.parametrize("name", CALIBRATED)
def test_registry_defaults_are_the_calibration_results(name: str) -> None:
    info = get_model_info(name).everything
    cal = json.loads((ROOT / info.source.split()[0]).read_text(encoding="utf-8"))
    assert cal["model"] == name
    assert info.thresholds() == {**cal["chosen"], "high_score_thresh": cal["hierarchical"]["chosen"]}
    assert cal["generator"]["chosen"]["options"] == cal["chosen"]


def test_validation_split_is_disjoint_from_training_and_evaluation() -> None:
    assert all(f":{VALIDATION_SEED}:" not in s.data and s.seed != VALIDATION_SEED for s in SEGMENTS)
    assert all(f":{VALIDATION_SEED}:" not in spec for spec in EVAL_SETS.values())


def test_replay_on_cached_candidates_matches_the_generator(tiny) -> None:
    """The sweep's replay keeps exactly the masks the generator keeps (same scores, same areas)."""
    loose = {
        "pred_iou_thresh": 0.3,
        "stability_score_thresh": 0.6,
        "stability_score_offset": 0.5,
        "box_nms_thresh": 0.5,
    }
    cases = [SAM_DEFAULTS, _declared(), loose, settings()[0]]
    kept_any = False
    for s in SynthSource(2, VALIDATION_SEED, RICH_SYNTH):
        cands = collect(tiny, s.image, s.masks, points_per_side=8)
        for setting in cases:
            records = AutomaticMaskGenerator(tiny, points_per_side=8, **setting).generate(s.image)
            kept = cands.kept(setting)
            assert len(kept) == len(records), setting
            got = sorted(
                (round(float(cands.iou[k]), 5), int(cands.counts[k, LEVELS.index(0.0)])) for k in kept
            )
            want = sorted((round(r["predicted_iou"], 5), r["area"]) for r in records)
            assert got == want, setting
            kept_any |= len(kept) > 0
    assert kept_any
