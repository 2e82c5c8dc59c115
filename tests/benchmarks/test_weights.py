"""Results measured on earlier weights of leansam's bundled models are marked on the pages."""

from __future__ import annotations

from benchmarks.__main__ import _with_outdated_note
from benchmarks.weights import bundled_models, names_model, outdated_models, outdated_note, record_bundled
from leansam.zoo.default import NANO_SHA256, TINY_SHA256

OLD = "0" * 64


def test_the_bundled_models_are_leansams_own() -> None:
    assert bundled_models() == {"leansam_tiny": TINY_SHA256, "leansam_nano": NANO_SHA256}


def test_a_model_name_is_matched_whole() -> None:
    assert names_model("--models leansam_tiny,mobile_sam", "leansam_tiny")
    assert names_model("leansam/assets/leansam_tiny.pt", "leansam_tiny")
    assert not names_model("leansam_tiny_teacher", "leansam_tiny")
    assert not names_model("leansam_nano_512", "leansam_nano")


def test_a_benchmark_records_the_weights_of_the_models_it_names() -> None:
    res = record_bundled({"models": {"leansam_tiny": {"ms": 1.0}, "mobile_sam": {"ms": 2.0}}})
    assert res["bundled_weights"] == {"leansam_tiny": TINY_SHA256}
    assert outdated_models(res) == []
    assert record_bundled({"models": {"mobile_sam": {}}})["bundled_weights"] == {}


def test_results_without_the_current_weights_are_outdated() -> None:
    assert outdated_models({"models": {"leansam_tiny": {"ms": 1.0}}}) == ["leansam_tiny"]
    assert outdated_models({"command": "x --models leansam_nano"}) == ["leansam_nano"]
    old = {"models": {"leansam_tiny": {}}, "bundled_weights": {"leansam_tiny": OLD}}
    assert outdated_models(old) == ["leansam_tiny"]
    # a file-level sha256 (as the pruning results record it) covers the whole file
    assert outdated_models({"rows": {"leansam_tiny": 1}, "start_weights_sha256": TINY_SHA256}) == []
    assert outdated_models({"models": {"mobile_sam": {}, "leansam_tiny_teacher": {}}}) == []


def test_sections_are_checked_one_by_one() -> None:
    """A file whose sections were measured at different times (docs/results/everything.json)."""
    fresh = record_bundled({"model": "leansam_tiny (bundled)"})
    assert outdated_models({"hierarchical": fresh, "memory": {"model": "leansam_tiny"}}) == ["leansam_tiny"]
    assert outdated_models({"hierarchical": fresh, "memory": record_bundled({"m": "leansam_tiny"})}) == []


def test_the_note_goes_under_the_sections_heading() -> None:
    res = {"models": {"leansam_tiny": {}}}
    note = outdated_note(res, "python -m benchmarks.zoo")
    assert note is not None and "`leansam_tiny`" in note and "re-run `python -m benchmarks.zoo`" in note
    page = _with_outdated_note("## Zoo\n\nrows\n", res, "zoo")
    assert page == f"## Zoo\n\n{note}\n\nrows\n"
    assert _with_outdated_note("## Zoo\n\nrows\n", record_bundled(res), "zoo") == "## Zoo\n\nrows\n"


def test_a_target_is_checked_against_its_own_section() -> None:
    res = {"hierarchical": record_bundled({"model": "leansam_tiny"}), "memory": {"model": "leansam_tiny"}}
    assert outdated_models(res, "hierarchical") == []
    assert outdated_models(res, "memory") == ["leansam_tiny"]
