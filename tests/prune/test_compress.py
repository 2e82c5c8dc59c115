"""``leansam compress``: recipe validation, the gated distil -> prune -> int8 -> ONNX chain, sweeps."""

from __future__ import annotations

import json

import pytest
import yaml

from leansam.checkpoints import checkpoint_path
from leansam.cli import main
from leansam.registry import get_model_info
from tests.compress.helpers import one_thread  # noqa: F401  (autouse fixture)

GATE = {"images": "synth:2:7", "prompts_per_image": 2, "everything": False}


def _recipe(tmp_path, data) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _chain(prune_gate: dict) -> dict:
    start = str(checkpoint_path(get_model_info("leansam_nano")))
    return {
        "model": "leansam_nano",
        "gate": {**GATE, "min_box_iou": 0.05},
        "steps": [
            {
                "distil": {
                    "student": "leansam_nano",
                    "student_init": start,
                    "mode": "encoder",
                    "steps": 2,
                    "batch_size": 1,
                    "lr": 1e-5,
                    "warmup": 0,
                    "data": "synth:4:0",
                    "device": "cpu",
                    "bf16": False,
                }
            },
            {"prune": {"ratio": 0.5, "importance": "magnitude", "gate": prune_gate}},
            {"quantize": {"method": "tinysam", "num_calib": 2, "calib": "synth:2:7"}},
            {"export": {"int8": "static"}},
        ],
    }


def test_recipe_chains_distil_prune_int8_onnx(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "out"
    assert main(["compress", "--recipe", _recipe(tmp_path, _chain({})), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and [s["kind"] for s in report["steps"]] == [
        "distil",
        "prune",
        "quantize",
        "export",
    ]
    assert all(s["gate"]["checks"][0]["name"] == "box_iou" for s in report["steps"])
    assert (out / "01_distil" / "model.safetensors").is_file()
    assert (out / "02_prune" / "model.safetensors").is_file()
    assert (out / "03_quantize" / "quantization.json").is_file()
    assert (out / "04_export" / "encoder.int8.onnx").is_file() or any((out / "04_export").glob("*int8*.onnx"))
    p = report["steps"][1]["encoder_params"]
    assert p[1] < p[0] / 2
    # the pruned step's folder is a model: compare it against the start model with the CLI
    rc = main(
        [
            "compare",
            "--reference",
            "leansam_nano",
            "--candidate",
            str(out / "02_prune"),
            "--images",
            str(_images(tmp_path)),
            "--no-everything",
            "--prompts-per-image",
            "2",
        ]
    )
    assert rc == 0
    assert "all gates passed" in capsys.readouterr().out


def _images(tmp_path):
    from tests.compress.helpers import make_images

    return make_images(tmp_path / "imgs", n=1)


def test_failing_gate_stops_the_pipeline(tmp_path, capsys):
    """A cosine gate of 1.0 after pruning cannot hold: the pipeline stops there, exit 1, report kept."""
    out = tmp_path / "out"
    rc = main(["compress", "--recipe", _recipe(tmp_path, _chain({"min_cosine": 1.0})), "--out", str(out)])
    assert rc == 1
    report = json.loads((out / "report.json").read_text())
    assert not report["passed"] and report["stopped_at"] == 2
    assert [s["kind"] for s in report["steps"]] == ["distil", "prune"]
    assert report["steps"][1]["gate"]["failures"][0].startswith("cosine")
    assert not (out / "03_quantize").exists() and not (out / "04_export").exists()
    assert "stopped at step 2" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda r: r["steps"].append({"sparsify": {}}), "unknown step 'sparsify'"),
        (lambda r: r["steps"][1]["prune"].pop("ratio"), "missing field 'ratio'"),
        (lambda r: r["steps"][1]["prune"].update(ratio=1.5), "ratio must be a number in (0, 1)"),
        (lambda r: r["steps"][1]["prune"].update(speed=3), "unknown field 'speed'"),
        (lambda r: r.pop("gate"), "missing field 'gate'"),
        (lambda r: r["steps"].append({"prune": {"ratio": 0.5}}), "needs a float model"),
        (lambda r: r["steps"][2]["quantize"].pop("method"), "missing field 'method'"),
        (lambda r: r["steps"][3]["export"].update(int8="int4"), "int8 must be one of"),
        (lambda r: r["steps"][0]["distil"].update(gate={"speed": 1}), "gate takes thresholds only"),
    ],
)
def test_bad_recipe(change, words, tmp_path, capsys):
    recipe = _chain({})
    change(recipe)
    out = tmp_path / "out"
    assert main(["compress", "--recipe", _recipe(tmp_path, recipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_recipe_that_is_not_yaml(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text("steps: [unclosed\n")
    assert main(["compress", "--recipe", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid YAML" in err[0]


def test_sweep_writes_a_pareto_report(tmp_path):
    """Two ratios of leansam_nano with the start model and a reference point: table, JSON and plot."""
    sweep = {
        "model": "leansam_nano",
        "ratios": [0.25, 0.5],
        "importances": ["magnitude"],
        "eval": {"data": "synth:2:1000"},
        "references": ["leansam_nano"],
        "timing": {"reps": 1, "warmup": 0},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    out = tmp_path / "res"
    assert main(["compress", "--sweep", str(path), "--out", str(out)]) == 0
    rows = json.loads((out / "pruning.json").read_text())["rows"]
    assert [r["kind"] for r in rows] == ["start", "reference", "pruned", "pruned"]
    assert rows[2]["encoder_params"] > rows[3]["encoder_params"]
    assert all(0 <= r["box_miou"] <= 1 and r["latency_ms"] > 0 for r in rows)
    table = (out / "pruning.md").read_text()
    assert table.count("\n") == 2 + len(rows) and "magnitude 0.5" in table
    assert (out / "pruning.png").stat().st_size > 0


def test_pareto_front():
    from leansam.prune.sweep import pareto_front

    rows = [
        {"label": "a", "latency_ms": 10.0, "box_miou": 0.8},
        {"label": "b", "latency_ms": 5.0, "box_miou": 0.7},
        {"label": "c", "latency_ms": 12.0, "box_miou": 0.75},  # slower and worse than a
        {"label": "d", "latency_ms": None, "box_miou": 0.9},
    ]
    assert pareto_front(rows) == ["a", "b"]


@pytest.mark.parametrize(
    ("sweep", "words"),
    [
        ({"model": "leansam_nano"}, "missing field 'ratios'"),
        ({"model": "leansam_nano", "ratios": [0.5, 1.5]}, "ratio must be a number in (0, 1)"),
        ({"model": "leansam_nano", "ratios": [0.5], "colour": "red"}, "unknown field(s) ['colour']"),
        ({"model": "leansam_nano", "ratios": [0.5], "importances": ["random"]}, "importance must be one of"),
    ],
)
def test_bad_sweep(sweep, words, tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    out = tmp_path / "res"
    assert main(["compress", "--sweep", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err
    assert not out.exists()
