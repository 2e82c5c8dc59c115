"""docs/training.md's results block is exactly what the committed results file renders to."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from leansam.train.ablation import RESULTS as DISTILLATION
from leansam.train.calibrate import RESULTS as CALIBRATION
from leansam.train.probe import PROBES
from leansam.train.recipe import BUNDLED_SEGMENT, EVAL_SETS, RESULTS, SEGMENTS, held_out, segment_config
from leansam.train.report import BEGIN, END, render_page, results_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_training_doc_matches_results_file() -> None:
    page = (ROOT / "docs/training.md").read_text(encoding="utf-8")
    res = json.loads((ROOT / RESULTS).read_text(encoding="utf-8"))
    cal = json.loads((ROOT / CALIBRATION).read_text(encoding="utf-8"))
    probes = json.loads((ROOT / PROBES).read_text(encoding="utf-8"))
    modes = json.loads((ROOT / DISTILLATION).read_text(encoding="utf-8"))
    assert render_page(page, res, cal, probes, modes) == page, (
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
    assert first.model == "leansam_nano" and first.decoder_warmup > 0
    assert second.model == f"leansam_nano:{tmp_path}/seg1/model.pt" and second.decoder_warmup == 0
    # the bundled segment and the later ones train the default model
    bundled = [s.name for s in SEGMENTS].index(BUNDLED_SEGMENT)
    assert all(s.model == "leansam_tiny" for s in SEGMENTS[bundled:])
    assert first.out != second.out and first.seed != second.seed
    # the held-out images are rendered with a seed no segment trains on
    assert all(f":{held_out(1).seed}:" not in s.data for s in SEGMENTS)


def test_match_counts_pairs_masks_and_objects_one_to_one() -> None:
    from leansam.train.evaluate import match_counts

    # masks 0 and 1 both cover object 0 (a duplicate), mask 2 covers object 1 weakly, object 2 unmatched
    ious = np.array([[0.9, 0.0, 0.0], [0.7, 0.1, 0.0], [0.0, 0.49, 0.0]])
    assert match_counts(ious) == (1, 1)
    assert match_counts(ious, thresh=0.4) == (2, 2)
    assert match_counts(np.zeros((0, 3))) == (0, 0)


def test_eval_only_everything_refuses_other_weights(capsys) -> None:
    """The other parts of the results file stay: re-measuring one part on other weights is refused."""
    from leansam.train.recipe import main

    before = (ROOT / RESULTS).read_bytes()
    assert main(["eval", "--only", "everything", "--weights", "runs/other/model.pt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "not on these weights" in err[0]
    assert (ROOT / RESULTS).read_bytes() == before


def test_a_snapshot_of_the_newest_segment_restores_on_a_machine_without_the_run(tmp_path: Path) -> None:
    import torch

    from leansam.train.recipe import restore_snapshot, snapshot_stage

    root, dest = tmp_path / "runs", tmp_path / "weights"
    (root / "seg1").mkdir(parents=True)
    (root / "seg1" / "model.pt").write_bytes(b"")  # finished: not a candidate
    run = root / "seg2"
    run.mkdir()
    module = {"w": torch.randn(3, 2), "n": torch.tensor(5)}
    torch.save({"step": 40, "module": module, "optimizer": {"state": {}}}, run / "last.pt")
    (run / "metrics.csv").write_text("step,loss\n0,1.0\n")
    out = snapshot_stage(str(root), dest)
    assert out == dest / "seg2.pt"
    snap = torch.load(out, weights_only=True)
    assert set(snap) == {"step", "module", "segment"} and snap["step"] == 40
    assert snap["module"]["w"].dtype == torch.float16 and torch.equal(snap["module"]["n"], module["n"])
    fresh = tmp_path / "elsewhere"
    assert restore_snapshot(str(fresh), SEGMENTS[1], dest)
    restored = torch.load(fresh / "seg2" / "last.pt", weights_only=True)
    assert restored["step"] == 40 and torch.equal(restored["module"]["w"], module["w"].half())
    assert (fresh / "seg2" / "metrics.csv").read_text() == "step,loss\n0,1.0\n"
    # an existing run keeps its own last.pt
    assert not restore_snapshot(str(root), SEGMENTS[1], dest)
    # a segment that has just finished (model.pt beside its final last.pt) is the newest one
    (root / "seg3").mkdir()
    torch.save({"step": 90, "module": module, "optimizer": {"state": {}}}, root / "seg3" / "last.pt")
    (root / "seg3" / "model.pt").write_bytes(b"")
    assert snapshot_stage(str(root), dest) == dest / "seg3.pt"
    assert torch.load(dest / "seg3.pt", weights_only=True)["step"] == 90


def test_from_asset_skips_to_the_segment_a_snapshot_continues(tmp_path: Path, monkeypatch) -> None:
    from leansam.train import recipe

    monkeypatch.setattr(recipe, "SNAPSHOTS", tmp_path / "weights")
    monkeypatch.setattr(recipe, "BUNDLED_SEGMENT", "seg1")
    root = str(tmp_path / "runs")
    everything = list(range(len(recipe.SEGMENTS)))
    # nothing to resume: the segment after the bundled one
    assert recipe._todo(root, True) == everything[1:]
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "seg3.pt").write_bytes(b"")
    assert recipe._todo(root, True) == everything[2:]
    assert recipe._todo(root, False) == everything  # with the run folders, segments go in order
    (tmp_path / "weights" / "seg1.pt").write_bytes(b"")  # the bundled segment is never resumed
    assert recipe._todo(root, True) == everything[2:]
    (tmp_path / "runs" / "seg4").mkdir(parents=True)  # a finished later segment: earlier ones are done
    (tmp_path / "runs" / "seg4" / "model.pt").write_bytes(b"")
    assert recipe._todo(root, True) == everything[4:]
    assert recipe._todo(root, False) == [k for k in everything if k != 3]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("seg2", "it trains at 256 px but leansam_tiny runs at 512 px"),  # leansam_nano
        ("seg3", "its weights do not fit leansam_tiny"),  # leansam_nano_512: a shallower encoder
    ],
)
def test_export_refuses_a_segment_of_another_pipeline(
    tmp_path: Path, capsys, name: str, message: str
) -> None:
    """Only weights that run in leansam_tiny's pipeline (input size and architecture) become the bundled ones."""
    import torch

    from leansam.train import recipe

    seg = next(s for s in recipe.SEGMENTS if s.name == name)
    (tmp_path / name).mkdir()
    torch.save({"w": torch.zeros(1)}, tmp_path / name / "model.pt")
    dest = tmp_path / "asset.pt"
    with pytest.raises(ValueError, match=message):
        recipe.export_stage(str(tmp_path), dest=str(dest))
    assert not dest.exists()
    assert recipe.main(["export", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and seg.model in err[0]


def test_mask_resolution_limit_loses_thin_parts_at_coarse_sides() -> None:
    """A 64-pixel square aligned with every grid survives any side (two bilinear steps round its
    corners); a 3-pixel line of a 1024-pixel image is lost in a 64 x 64 grid (16-pixel cells) and
    kept by a 256 x 256 one (4-pixel cells)."""
    from types import SimpleNamespace

    from leansam.train.evaluate import mask_resolution_limit

    square, line = np.zeros((2, 1024, 1024), dtype=bool)
    square[256:320, 512:576] = True
    line[100:900, 500:503] = True
    sample = SimpleNamespace(masks=np.stack([square, line]), category_ids=[1, 4])
    res = mask_resolution_limit([sample], (64, 256))
    assert res["64"]["per_category"][1] > 0.95 and res["256"]["per_category"][1] > 0.95
    assert res["64"]["per_category"][4] < 0.1 < 0.6 < res["256"]["per_category"][4]
    assert res["64"]["miou"] == pytest.approx(np.mean([res["64"]["per_category"][c] for c in (1, 4)]))


def test_per_fill_splits_the_instances_by_the_share_of_their_box_they_cover() -> None:
    import leansam
    from leansam.train.evaluate import evaluate_gt
    from leansam.train.report import results_markdown

    r = evaluate_gt(leansam.build_model(), held_out(3))
    buckets = r["per_fill"]
    assert len(buckets) >= 2 and sum(d["n"] for d in buckets.values()) == r["n_instances"]
    for name, d in buckets.items():  # an instance's fill-the-box IoU is its share of the box
        low, high = map(float, name.split("-"))
        assert low <= d["fill_box_miou"] <= high
    for kind in ("box", "point", "fill_box"):
        recombined = sum(d["n"] * d[f"{kind}_miou"] for d in buckets.values()) / r["n_instances"]
        assert recombined == pytest.approx(r[f"{kind}_miou"])
    res = json.loads((ROOT / RESULTS).read_text(encoding="utf-8"))
    res["sets"]["held_out"] = {**res["sets"]["held_out"], "per_fill": buckets}
    assert f"| {next(iter(buckets))} | {next(iter(buckets.values()))['n']} |" in results_markdown(res)


def test_a_growing_segment_starts_from_the_previous_weights_computing_the_same_masks(tmp_path: Path) -> None:
    import torch

    import leansam
    from leansam.train.recipe import _check_bundled_pipeline, grown_init, load_recipe_model

    k = next(i for i, s in enumerate(SEGMENTS) if s.grow)
    torch.manual_seed(0)
    prev = leansam.build_model(SEGMENTS[k - 1].model, pretrained=False)
    with torch.no_grad():
        for p in prev.parameters():
            p.add_(0.01 * torch.randn_like(p))
    torch.save(prev.state_dict(), tmp_path / "prev.pt")
    init = grown_init(str(tmp_path), k, str(tmp_path / "prev.pt"))
    grown = load_recipe_model(init, SEGMENTS[k].model)
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in prev.parameters())
    image = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    box = np.array([[10, 20, 90, 80]], np.float32)
    a = leansam.SamPredictor(prev.eval())
    b = leansam.SamPredictor(grown)
    for p in (a, b):
        p.set_image(image)
    _, _, low_a = a.predict(box=box[0], multimask_output=False, return_logits=True)
    _, _, low_b = b.predict(box=box[0], multimask_output=False, return_logits=True)
    np.testing.assert_allclose(low_b, low_a, atol=1e-4)
    _check_bundled_pipeline(SEGMENTS[k])  # the grown model is leansam_tiny's
    with pytest.raises(ValueError, match="do not fit leansam_tiny"):
        _check_bundled_pipeline(SEGMENTS[k - 1])


def test_from_asset_continues_a_finished_segment_from_its_own_weights(tmp_path: Path, monkeypatch) -> None:
    """On a machine with seg3's final weights, seg4 grows them, not the bundled weights (as when
    seg2's were the bundled ones)."""
    import torch

    import leansam
    from leansam.train import recipe

    monkeypatch.setattr(recipe, "SNAPSHOTS", tmp_path / "weights")
    seen = []
    monkeypatch.setattr(recipe, "train", seen.append)
    k = next(i for i, s in enumerate(SEGMENTS) if s.grow)
    monkeypatch.setattr(recipe, "BUNDLED_SEGMENT", SEGMENTS[k - 2].name)
    root = tmp_path / "runs"
    (root / SEGMENTS[k - 1].name).mkdir(parents=True)
    torch.manual_seed(1)
    prev = leansam.build_model(SEGMENTS[k - 1].model, pretrained=False).state_dict()
    prev = {n: t + 0.01 * torch.randn_like(t) if t.is_floating_point() else t for n, t in prev.items()}
    torch.save(prev, root / SEGMENTS[k - 1].name / "model.pt")
    assert recipe.train_stage(str(root), from_asset=True) == SEGMENTS[k].name
    name, _, init = seen[0].model.partition(":")
    assert name == SEGMENTS[k].model and init == str(root / f"{SEGMENTS[k].name}.init.pt")
    grown = torch.load(init, weights_only=True)
    assert all(torch.equal(grown[n], t) for n, t in prev.items() if n.startswith("mask_decoder."))


def test_eval_only_training_updates_the_segments_this_machine_ran(tmp_path: Path, monkeypatch) -> None:
    from leansam.train import recipe

    results = tmp_path / "default_model.json"
    committed = json.loads((ROOT / RESULTS).read_text(encoding="utf-8"))
    results.write_text(json.dumps(committed), encoding="utf-8")
    monkeypatch.setattr(recipe, "RESULTS", results)
    run = tmp_path / "runs" / SEGMENTS[2].name
    run.mkdir(parents=True)
    rows = [f"{i},0.001,{0.5 - 0.01 * i},2.0,3.0,0.7" for i in range(5)]
    (run / "metrics.csv").write_text("step,lr,loss,seconds,cpu_seconds,iou_r0\n" + "\n".join(rows) + "\n")
    assert recipe.main(["eval", "--only", "training", "--root", str(tmp_path / "runs")]) == 0
    res = json.loads(results.read_text(encoding="utf-8"))
    by_name = {t["segment"]: t for t in res["training"]}
    for t in committed["training"]:  # segments without a run folder here keep their rows
        if t["segment"] != SEGMENTS[2].name:
            assert by_name[t["segment"]] == t
    new = by_name[SEGMENTS[2].name]
    assert new["steps_done"] == 5 and new["cpu_hours_logged"] == pytest.approx(15 / 3600)
    assert [t["segment"] for t in res["training"]] == [s.name for s in SEGMENTS if s.name in by_name]
    assert {k: v for k, v in res.items() if k != "training"} == {
        k: v for k, v in committed.items() if k != "training"
    }
