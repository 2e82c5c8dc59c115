"""Hierarchical sampling's confident-logit threshold: a model's registered value applies when the
caller leaves it unset, the calibration's replay decodes the prompts and keeps the masks that the
real generator does, and the chosen threshold follows the stated rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import leansam
from leansam.everything import AutomaticMaskGenerator
from leansam.everything.options import TINYSAM_HIGH_SCORE
from leansam.registry import everything_defaults, get_model_info
from leansam.train.calibrate import LEVELS, VALIDATION_SEED
from leansam.train.calibrate_hier import choose_threshold, collect_hier
from leansam.train.data import RICH_SYNTH, SynthSource
from tests.compress.helpers import one_thread  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny():
    return leansam.build_model("leansam_tiny")


def test_the_models_threshold_applies_when_unset(tiny) -> None:
    declared = everything_defaults("leansam_tiny").high_score_thresh
    assert declared is not None and declared != TINYSAM_HIGH_SCORE
    gen = AutomaticMaskGenerator(tiny, "hierarchical")
    assert gen.options.high_score_thresh == declared == gen.sampler.high_score_thresh
    explicit = AutomaticMaskGenerator(tiny, "hierarchical", high_score_thresh=8.5)
    assert explicit.sampler.high_score_thresh == 8.5
    teacher = leansam.build_model("leansam_tiny_teacher", pretrained=False)
    assert AutomaticMaskGenerator(teacher, "hierarchical").sampler.high_score_thresh == TINYSAM_HIGH_SCORE


def test_cli_passes_the_threshold() -> None:
    from leansam.cli import build_parser
    from leansam.commands.everything import _generator_options

    parse = build_parser().parse_args
    assert _generator_options(parse(["everything", "a.jpg"]))["high_score_thresh"] is None
    args = parse(["everything", "a.jpg", "--strategy", "hierarchical", "--high-score-thresh", "2"])
    assert _generator_options(args)["high_score_thresh"] == 2.0


def test_registered_threshold_is_the_calibrations_choice() -> None:
    info = get_model_info("leansam_tiny").everything
    cal = json.loads((ROOT / info.source.split()[0]).read_text(encoding="utf-8"))
    hier = cal["hierarchical"]
    assert info.high_score_thresh == hier["chosen"]
    assert hier["setting"] == cal["chosen"]  # calibrated at the model's grid thresholds
    row = next(r for r in hier["thresholds"] if r["high_score_thresh"] == hier["chosen"])
    assert row == choose_threshold(hier["thresholds"], float(hier["rule"].split("at most ")[1].split()[0]))
    # the real generator with the chosen threshold finds what the replay says (same images)
    assert hier["generator"]["recall"] == pytest.approx(row["recall"], abs=1e-9)


def test_choose_threshold_rule() -> None:
    rows = [
        {"high_score_thresh": 0.5, "prompts": 100, "recall_loss_points": 3.0},
        {"high_score_thresh": 1.0, "prompts": 200, "recall_loss_points": 0.8},
        {"high_score_thresh": 2.0, "prompts": 200, "recall_loss_points": 0.5},
        {"high_score_thresh": 8.5, "prompts": 900, "recall_loss_points": 0.0},
    ]
    assert choose_threshold(rows, 1.0)["high_score_thresh"] == 2.0  # fewest prompts, tie -> higher
    assert choose_threshold(rows, 5.0)["high_score_thresh"] == 0.5
    assert choose_threshold(rows, -1.0)["high_score_thresh"] == 8.5  # none qualifies


def test_replay_matches_the_hierarchical_generator(tiny) -> None:
    """Prompts decoded and masks kept (scores, areas) of the replay equal the generator's."""
    setting = dict(everything_defaults("leansam_tiny").thresholds())
    setting.pop("high_score_thresh", None)
    loose = {
        "pred_iou_thresh": 0.3,
        "stability_score_thresh": 0.5,
        "stability_score_offset": 0.5,
        "box_nms_thresh": 0.6,
    }
    skipped_some = kept_any = False
    for s in SynthSource(1, VALIDATION_SEED, RICH_SYNTH):
        cands = collect_hier(tiny, s.image, s.masks, points_per_side=16)
        for opts in (setting, loose):
            for t in (0.0, 1.0, 8.5):
                gen = AutomaticMaskGenerator(
                    tiny, "hierarchical", points_per_side=16, high_score_thresh=t, **opts
                )
                records = gen.generate(s.image)
                kept, prompts = cands.replay(opts, t)
                assert prompts == gen.last_stats.prompts_decoded, (opts, t)
                got = sorted(
                    (round(float(i), 5), int(a)) for i, a in zip(kept.iou, kept.counts[:, LEVELS.index(0.0)])
                )
                want = sorted((round(r["predicted_iou"], 5), r["area"]) for r in records)
                assert got == want, (opts, t)
                skipped_some |= gen.last_stats.prompts_skipped > 0
                kept_any |= len(records) > 0
        # the cache's grid part is the grid's (collect's own test covers its replay)
        assert len(cands.grid.iou) == 3 * 16 * 16 and cands.grid.counts.shape[1] == len(LEVELS)
    assert skipped_some and kept_any
