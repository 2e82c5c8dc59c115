"""``leansam eval`` on the command line: outputs, one ``error:`` line for bad input, torchrun sharding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from leansam.cli import main
from leansam.eval import EvalConfig, evaluate

REPO = Path(__file__).resolve().parents[2]


def run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def base_args(root, model="tiny_scripted"):
    return ["eval", "--model", model, "--images", root / "images", "--annotations", root / "annotations.json"]


def assert_error(code, err, pattern):
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in err


def test_eval_writes_results_and_prints_a_summary(tiny_models, synth_set, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run([*base_args(synth_set), "--prompt", "center", "--out", out, "--json"], capsys)
    assert code == 0, err
    assert "prompt center: mIoU" in err
    saved = json.loads((out / "results.json").read_text())
    assert json.loads(stdout)["metrics"] == saved["metrics"]
    assert saved["n_images"] == 4 and saved["prompt"] == "center"
    assert (out / "per_image" / "rank0.jsonl").exists() and (out / "run.json").exists()


def test_missing_image_folder(tiny_models, synth_set, tmp_path, capsys):
    args = ["eval", "--model", "tiny_scripted", "--images", tmp_path / "nope", "--annotations"]
    code, _, err = run([*args, synth_set / "annotations.json"], capsys)
    assert_error(code, err, "image folder not found")


def test_no_image_of_the_annotations_in_the_folder(tiny_models, synth_set, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["eval", "--model", "tiny_scripted", "--images", empty, "--annotations"]
    code, _, err = run([*args, synth_set / "annotations.json"], capsys)
    assert_error(code, err, "none of the 4 image(s)")


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("[1, 2, 3]", "is not a COCO instances file"),
        ("{not json", "is not valid JSON"),
        ('{"images": [], "annotations": [], "categories": []}', "lists no images"),
        ('{"images": [{"id": 1}], "annotations": [], "categories": []}', "missing key 'height'"),
    ],
)
def test_annotations_that_are_not_coco(tiny_models, synth_set, tmp_path, capsys, content, pattern):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    args = ["eval", "--model", "tiny_scripted", "--images", synth_set / "images", "--annotations", bad]
    code, _, err = run(args, capsys)
    assert_error(code, err, pattern)


def test_missing_annotation_file(tiny_models, synth_set, tmp_path, capsys):
    args = ["eval", "--model", "tiny_scripted", "--images", synth_set / "images"]
    code, _, err = run([*args, "--annotations", tmp_path / "none.json"], capsys)
    assert_error(code, err, "annotations file not found")


def test_mask_sizes_not_matching_the_image_entries(tiny_models, synth_copy, capsys):
    ann = synth_copy / "annotations.json"
    d = json.loads(ann.read_text())
    d["annotations"][0]["segmentation"]["size"] = [10, 10]
    ann.write_text(json.dumps(d))
    code, _, err = run(base_args(synth_copy), capsys)
    assert_error(code, err, "does not match its image entry")


def test_image_files_not_matching_the_annotated_sizes(tiny_models, synth_copy, capsys):
    d = json.loads((synth_copy / "annotations.json").read_text())
    first = synth_copy / "images" / d["images"][0]["file_name"]
    Image.new("RGB", (33, 17)).save(first, format="JPEG")
    code, _, err = run(base_args(synth_copy), capsys)
    assert_error(code, err, "image sizes do not match")
    assert "33x17" in err


def test_detections_for_unknown_image_ids(tiny_models, synth_set, tmp_path, capsys):
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]))
    code, _, err = run([*base_args(synth_set), "--detections", dets], capsys)
    assert_error(code, err, "image id(s) that are not in annotations.json: 999")


@pytest.mark.parametrize(
    "dets, pattern",
    [
        ({"x": 1}, "is not a COCO results file"),
        ([{"image_id": 1, "bbox": [0, 0, 5], "score": 1}], "[0].bbox: expected [x, y, width, height]"),
        ([{"image_id": 1, "category_id": 77, "bbox": [0, 0, 5, 5], "score": 1}], "category id(s)"),
        ([{"image_id": 1, "bbox": [0, 0, 5, 5]}], "missing key 'score'"),
    ],
)
def test_bad_detections(tiny_models, synth_set, tmp_path, capsys, dets, pattern):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    code, _, err = run([*base_args(synth_set), "--detections", path], capsys)
    assert_error(code, err, pattern)


def test_unknown_model_and_bad_options(tiny_models, synth_set, capsys):
    code, _, err = run(base_args(synth_set, model="mobile_samm"), capsys)
    assert_error(code, err, "unknown model 'mobile_samm'")
    code, _, err = run([*base_args(synth_set), "--prompt", "random2"], capsys)
    assert_error(code, err, "invalid choice")
    code, _, err = run([*base_args(synth_set), "--limit", "0"], capsys)
    assert_error(code, err, "positive integer")


def _torchrun(args: list, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=600, cwd=REPO
    )


def test_torchrun_two_processes_merge_exactly(tiny_models, synth_set, tmp_path):
    dets = tmp_path / "dets.json"
    gt = json.loads((synth_set / "annotations.json").read_text())
    dets.write_text(
        json.dumps(
            [
                {
                    "image_id": a["image_id"],
                    "category_id": a["category_id"],
                    "bbox": a["bbox"],
                    "score": (a["id"] % 5) / 5,
                }
                for a in gt["annotations"]
            ]
        )
    )
    out = tmp_path / "dist"
    script = REPO / "tests" / "eval" / "tiny_cli.py"
    proc = _torchrun([script, *base_args(synth_set), "--prompt", "random1", "--out", out, "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(p.name for p in (out / "per_image").iterdir())
    assert files == ["rank0.jsonl", "rank1.jsonl"]
    per_rank = [len((out / "per_image" / f).read_text().splitlines()) for f in files]
    assert per_rank == [2, 2]
    dist = json.loads((out / "results.json").read_text())
    single = evaluate(
        EvalConfig(
            model="tiny_scripted",
            images=str(synth_set / "images"),
            annotations=str(synth_set / "annotations.json"),
            prompt="random1",
        )
    )
    assert dist["metrics"] == single.metrics  # exact
    assert dist["world_size"] == 2

    out2 = tmp_path / "dist_det"
    proc = _torchrun([script, *base_args(synth_set), "--detections", dets, "--out", out2, "--no-progress"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    dist = json.loads((out2 / "results.json").read_text())
    single = evaluate(
        EvalConfig(
            model="tiny_scripted",
            images=str(synth_set / "images"),
            annotations=str(synth_set / "annotations.json"),
            detections=str(dets),
        )
    )
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "n_detections"):
        assert dist["metrics"][k] == single.metrics[k], k


@pytest.mark.slow
def test_torchrun_real_cli_module_with_a_real_model(synth_set, tmp_path):
    """The documented command, ``torchrun ... -m leansam.cli eval``, with EfficientViT-SAM L0 stand-in weights."""
    from tests import parity as P

    ckpt = P.write_stand_in_checkpoint("efficientvit_sam_l0", tmp_path / "l0.pt")
    args = [
        *base_args(synth_set, "efficientvit_sam_l0"),
        "--checkpoint",
        ckpt,
        "--limit",
        "2",
        "--no-progress",
    ]
    proc = _torchrun(["-m", "leansam.cli", *args, "--out", tmp_path / "dist"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    dist = json.loads((tmp_path / "dist" / "results.json").read_text())
    # The reference runs with the same thread count (1): float results depend on it.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "leansam.cli", *args, "--threads", "1", "--out", tmp_path / "single"]
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=600, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = json.loads((tmp_path / "single" / "results.json").read_text())
    assert dist["metrics"] == single["metrics"] and dist["n_images"] == 2
