"""docs/training.md's results block is exactly what the committed results file renders to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leansam.train.recipe import EVAL_SETS, RESULTS, SEGMENTS, held_out, segment_config
from leansam.train.report import BEGIN, END, render_page, results_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_training_doc_matches_results_file() -> None:
    page = (ROOT / "docs/training.md").read_text(encoding="utf-8")
    res = json.loads((ROOT / RESULTS).read_text(encoding="utf-8"))
    assert render_page(page, res) == page, (
        "docs/training.md is stale: run `python -m leansam.train.recipe docs`"
    )


def test_render_page_replaces_only_the_block() -> None:
    res = json.loads((ROOT / RESULTS).read_text(encoding="utf-8"))
    page = f"intro\n{BEGIN}\nold numbers\n{END}\noutro\n"
    out = render_page(page, res)
    assert out.startswith(f"intro\n{BEGIN}\n") and out.endswith(f"\n{END}\noutro\n")
    assert "old numbers" not in out and results_markdown(res) in out
    with pytest.raises(ValueError, match="no"):
        render_page("no block here", res)


def test_every_set_and_segment_is_reported() -> None:
    res = json.loads((ROOT / RESULTS).read_text(encoding="utf-8"))
    assert set(res["sets"]) == set(EVAL_SETS)
    assert {s["spec"] for s in res["sets"].values()} == set(EVAL_SETS.values())
    assert [t["segment"] for t in res["training"]] == [s.name for s in SEGMENTS][: len(res["training"])]


def test_segments_resume_from_their_predecessor(tmp_path: Path) -> None:
    first = segment_config(str(tmp_path), SEGMENTS[0], None)
    second = segment_config(str(tmp_path), SEGMENTS[1], f"{tmp_path}/seg1/model.pt")
    assert first.model == "leansam_tiny" and first.decoder_warmup > 0
    assert second.model == f"leansam_tiny:{tmp_path}/seg1/model.pt" and second.decoder_warmup == 0
    assert first.out != second.out and first.seed != second.seed
    # the held-out images are rendered with a seed no segment trains on
    assert all(f":{held_out(1).seed}:" not in s.data for s in SEGMENTS)
