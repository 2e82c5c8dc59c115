"""The ray engine on a real local Ray cluster (2 CPUs, started once for the module): the same files
as the local engine, a killed worker, an unreadable image.

The default suite runs the equivalence test; ``make test-ray`` runs the whole module."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

import leansam
from tests.test_cli import run

from .conftest import EVERYTHING_OPTS, N_IMAGES, folder_bytes, shard_lines

ray = pytest.importorskip("ray", reason="the ray extra: pip install 'leansam[ray]'")

ROOT = Path(leansam.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster whose workers import this checkout of leansam."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    yield
    ray.shutdown()


def _run(dataset, out, capsys, *extra):
    args = ["everything", dataset, *EVERYTHING_OPTS, "--threads", "1", "--shard-size", "2", "--out", out]
    return run([*args, *extra], capsys)


def test_ray_and_local_engines_write_the_same_files(cluster, dataset, tmp_path, capsys):
    (dataset / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code, _, err = _run(dataset, tmp_path / "local", capsys)
    assert code == 0, err
    code, _, err = _run(dataset, tmp_path / "ray", capsys, "--engine", "ray", "--workers", "2")
    assert code == 0, err
    assert "warning: skipped broken.png" in err
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert (summary["labelled"], summary["failed"]) == (N_IMAGES, 1) and summary["masks"] > 0
    assert folder_bytes(tmp_path / "ray") == folder_bytes(tmp_path / "local")


@pytest.mark.slow  # with the test above ~60 s on 2 cores: `make test-ray` runs both
def test_a_worker_killed_mid_run_is_replaced_and_every_image_labelled_once(
    cluster, dataset, tmp_path, capsys, monkeypatch
):
    code, _, err = _run(dataset, tmp_path / "local", capsys)
    assert code == 0, err
    marker = tmp_path / "worker-died"
    monkeypatch.setenv("LEANSAM_BATCH_EXIT_AFTER", f"3:{marker}")  # mid-shard: its 2nd shard's 1st image
    out = tmp_path / "ray"
    code, _, err = _run(dataset, out, capsys, "--engine", "ray", "--workers", "2")
    assert code == 0, err
    assert marker.exists()  # a worker did exit
    counts = Counter(ln["file"] for ln in shard_lines(out))
    assert len(counts) == N_IMAGES and set(counts.values()) == {1}
    assert folder_bytes(out) == folder_bytes(tmp_path / "local")
    monkeypatch.delenv("LEANSAM_BATCH_EXIT_AFTER")
    code, _, err = _run(dataset, out, capsys, "--engine", "ray", "--workers", "2")
    assert code == 0 and "labelling 0 in 0 shard(s)" in err
    assert folder_bytes(out) == folder_bytes(tmp_path / "local")


@pytest.mark.slow  # `make test-ray`
def test_eval_on_ray_gives_the_local_results(cluster, synth_images, tmp_path, capsys):
    gt = json.loads((synth_images / "annotations.json").read_text())
    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in gt["annotations"]
    ]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    base = ["eval", "--model", "leansam_nano", "--images", synth_images / "images"]
    base += ["--annotations", synth_images / "annotations.json", "--detections", tmp_path / "dets.json"]
    base += ["--threads", "1", "--no-progress"]
    code, _, err = run([*base, "--out", tmp_path / "local"], capsys)
    assert code == 0, err
    code, _, err = run([*base, "--out", tmp_path / "ray", "--engine", "ray", "--workers", "2"], capsys)
    assert code == 0, err
    local, on_ray = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("local", "ray"))
    assert on_ray["metrics"] == local["metrics"] and on_ray["n_images"] == local["n_images"] == N_IMAGES
    assert on_ray["weights"] == local["weights"]
    segm = [(tmp_path / d / "segm_results.json").read_bytes() for d in ("local", "ray")]
    assert segm[0] == segm[1] and len(json.loads(segm[0])) == len(dets)
