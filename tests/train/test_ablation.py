"""The distillation-modes comparison: a real (tiny) run, its table, and its bad-input paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leansam.train.ablation import RESULTS, compare_modes, main, markdown
from leansam.zoo.default import TINY_SHA256
from tests.compress.helpers import one_thread  # noqa: F401  (autouse: restores the thread count)

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_comparison_distils_from_the_trained_teacher(tmp_path: Path) -> None:
    """The teacher that the students are compared with is the one they were distilled from: the
    bundled weights (box mIoU far above a random model's), not fresh ones."""
    res = compare_modes("leansam_tiny", str(tmp_path), steps=2, eval_images=1, modes=("encoder",))
    assert res["teacher_sha256"] == TINY_SHA256
    assert res["teacher_gt"]["box_miou"] > 0.5
    untrained, encoder = res["rows"]
    assert (untrained["mode"], encoder["mode"], encoder["steps"]) == ("untrained", "encoder", 2)
    assert "cpu_hours" not in untrained and encoder["cpu_hours"] > 0
    assert encoder["embed_mse"] != untrained["embed_mse"]  # the encoder was trained
    assert json.loads((tmp_path / "compare.json").read_text())["rows"] == res["rows"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--modes", "encoder,telepathy"], "unknown modes"),
        (["--teacher", "no_such_model"], "no_such_model"),
        (["--student", "leansam_nano"], "differs from the teacher"),  # a 256 px student
        (["--teacher", "leansam_tiny:/nonexistent.pt"], "nonexistent"),
    ],
)
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path: Path, capsys, args, message) -> None:
    out = tmp_path / "modes.json"
    argv = [
        "--teacher",
        "leansam_tiny",
        "--root",
        str(tmp_path / "runs"),
        "--steps",
        "1",
        "--eval-images",
        "1",
    ]
    argv += ["--out", str(out)]
    assert main(argv + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not out.exists()


def test_the_committed_table_lists_every_mode_with_its_numbers() -> None:
    res = json.loads((ROOT / RESULTS).read_text(encoding="utf-8"))
    assert len(res["teacher_sha256"]) == 64  # names the teacher's weights (the bundled ones may change later)
    table = [ln for ln in markdown(res).splitlines() if ln.startswith("| ")][1:]  # below the header
    assert [ln.split(" | ")[0].lstrip("| ") for ln in table] == [r["mode"] for r in res["rows"]]
    assert [r["mode"] for r in res["rows"]] == ["untrained", "encoder", "full", "prompt-in-the-loop", "sami"]
    for line, r in zip(table, res["rows"]):
        assert f"| {r['box_agree']:.3f} | {r['point_agree']:.3f} | {r['embed_mse']:.4f} |" in line
