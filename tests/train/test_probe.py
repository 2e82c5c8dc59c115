"""Checkpoint probes: held-out accuracy of a training checkpoint, recorded per (segment, step)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from leansam.train.probe import PROBES, checkpoint_step, probe, probes_markdown, record
from leansam.train.recipe import RESULTS, asset_path, load_run_file

ROOT = Path(__file__).resolve().parents[2]


def _row(segment: str, step: int, box: float) -> dict:
    sets = {
        n: {"spec": n, "box_miou": box, "point_miou": box / 2, "n_instances": 3}
        for n in ("held_out", "out_of_style")
    }
    return {"segment": segment, "step": step, "weights": "w.pt", "sets": sets, "command": "c"}


def test_checkpoint_step_reads_snapshots_run_files_and_final_weights(tmp_path: Path) -> None:
    w = {"w": torch.zeros(2)}
    torch.save({"step": 40, "module": w, "segment": "seg6"}, tmp_path / "snapshot.pt")
    (tmp_path / "seg5").mkdir()
    torch.save({"step": 75, "module": w, "optimizer": {}}, tmp_path / "seg5" / "last.pt")
    torch.save(w, tmp_path / "seg5" / "model.pt")

    def step_of(path: Path) -> tuple[str, int]:
        return checkpoint_step(load_run_file(path), path)

    assert step_of(tmp_path / "snapshot.pt") == ("seg6", 40)
    assert step_of(tmp_path / "seg5" / "last.pt") == ("seg5", 75)
    assert step_of(tmp_path / "seg5" / "model.pt") == ("seg5", -1)


def test_record_replaces_a_repeated_checkpoint_and_orders_by_segment_and_step(tmp_path: Path) -> None:
    out = tmp_path / "probes.json"
    for seg, step in [("seg6", 100), ("seg5", -1), ("seg6", 50), ("seg5", 10)]:
        record(_row(seg, step, 0.5), out)
    rows = record(_row("seg6", 100, 0.7), out)
    assert [(r["segment"], r["step"]) for r in rows] == [
        ("seg5", 10),
        ("seg5", -1),
        ("seg6", 50),
        ("seg6", 100),
    ]
    assert rows[-1]["sets"]["held_out"]["box_miou"] == 0.7
    assert json.loads(out.read_text())["rows"] == rows


def test_probe_measures_the_weights_it_is_given(tmp_path: Path) -> None:
    """A checkpoint whose mask decoder lost its output hypernetworks scores far below the weights
    it was made from, on the same images: the probe evaluates the file it names."""
    state = torch.load(asset_path(), map_location="cpu", weights_only=True)
    broken = {k: torch.zeros_like(v) if "output_hypernetworks" in k else v for k, v in state.items()}
    (tmp_path / "seg6").mkdir()
    torch.save({"step": 7, "module": state}, tmp_path / "seg6" / "last.pt")
    torch.save({"step": 8, "module": broken, "segment": "seg6"}, tmp_path / "broken.pt")
    sets = {"held_out": "synth:2:1000:rich"}
    good = probe(tmp_path / "seg6" / "last.pt", sets, "runs")
    bad = probe(tmp_path / "broken.pt", sets, "runs")
    assert (good["segment"], good["step"], bad["step"]) == ("seg6", 7, 8)
    g, b = good["sets"]["held_out"], bad["sets"]["held_out"]
    assert g["n_instances"] == b["n_instances"] > 0
    assert g["box_miou"] > 0.5 > b["box_miou"] + 0.2


@pytest.mark.parametrize("content", [None, b"not a checkpoint", {"x": torch.zeros(1)}, [torch.zeros(1)]])
def test_probe_of_a_missing_or_foreign_file_is_one_error_line(
    tmp_path: Path, capsys, monkeypatch, content
) -> None:
    """Missing, not a checkpoint, another model's keys, not a state_dict: exit 2, one error line,
    no probes file written (the run happens in tmp_path: the committed file is never at risk)."""
    from leansam.train.recipe import main

    path = tmp_path / "weights.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    monkeypatch.chdir(tmp_path)
    assert main(["probe", "--weights", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert not PROBES.exists()


def test_the_committed_probes_render_one_row_each_under_the_bundled_weights() -> None:
    probes = json.loads((ROOT / PROBES).read_text(encoding="utf-8"))
    bundled = json.loads((ROOT / RESULTS).read_text(encoding="utf-8"))["sets"]
    table = [ln for ln in probes_markdown(probes, bundled).splitlines() if ln.startswith("| ")]
    assert len(table) == 2 + len(probes["rows"]) and "bundled weights" in table[1]
    assert f"| {bundled['held_out']['box_miou']:.3f} |" in table[1]
    for line, r in zip(table[2:], probes["rows"]):
        step = "final" if r["step"] < 0 else r["step"]  # a finished segment's model.pt has no step
        assert line.startswith(f"| {r['segment']} checkpoint | {step} |")
        assert f"| {r['sets']['out_of_style']['point_miou']:.3f} |" in line
