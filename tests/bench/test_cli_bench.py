"""``leansam bench`` on the command line."""

from __future__ import annotations

import json

import pytest

from leansam.cli import main


def run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_error(code, err, pattern):
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert pattern in lines[0], lines[0]


def test_bench_writes_outputs_and_renders_docs(tiny_models, tmp_path, capsys):
    out = tmp_path / "out"
    acc = tmp_path / "acc.json"
    acc.write_text(json.dumps({"model": "tiny_test", "prompt": "box", "metrics": {"mIoU": 40.0}}))
    args = ["bench", "--models", "tiny_test", "--runs", "1", "--warmup", "0", "--prompts", "1,2"]
    args += ["--batches", "1", "--no-everything", "--no-memory", "--out", out, "--accuracy", acc]
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert "tiny_test: 0.38 M params" in err and "one-box SegAny" in err and "random init" in err
    d = json.loads((out / "results.json").read_text())
    (m,) = d["models"]
    assert m["accuracy"] == 40.0 and d["config"]["accuracy_metric"] == "mIoU (box prompt)"
    assert m["skipped"] == {"peak_memory": "disabled", "everything": "disabled"}
    assert (out / "results.csv").exists() and (out / "results.md").exists()

    docs = tmp_path / "docs.md"
    code, _, err = run(
        ["bench", "--render", out / "results.json", "--out", tmp_path / "re", "--docs", docs], capsys
    )
    assert code == 0, err
    assert docs.read_text() == (tmp_path / "re" / "results.md").read_text()
    assert "### Latency and throughput" in docs.read_text()


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--models", "mobile_samm"], "unknown model 'mobile_samm'"),
        (["--models", "nothing*"], "no registered model matches"),
        ([], "--models is required"),
        (["--models", "mobile_sam", "--prompts", "1,x"], "comma-separated integers"),
        (["--models", "mobile_sam", "--dtype", "int8"], "invalid choice"),
        (["--models", "mobile_sam", "--accuracy", "missing.json"], "accuracy file not found"),
        (
            ["--models", "mobile_sam", "--strategies", "grid,magic"],
            "unknown segment-everything strategy 'magic'",
        ),
        (["--render", "missing.json"], "no such file"),
    ],
)
def test_bad_input_is_one_error_line(args, pattern, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["bench", *args], capsys)
    assert_error(code, err, pattern)
    assert not (tmp_path / "bench_out").exists()


@pytest.mark.slow
def test_bench_cli_on_the_smallest_real_models(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["bench", "--models", "mobile_sam,efficientvit_sam_l0", "--runs", "1", "--warmup", "0"]
    code, _, err = run([*args, "--prompts", "1,10", "--batches", "1", "--grids", "8", "--out", out], capsys)
    assert code == 0, err
    d = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in d["models"]] == ["mobile_sam", "efficientvit_sam_l0"]
    assert all(not m["errors"] for m in d["models"])
