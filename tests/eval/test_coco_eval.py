"""``leansam.eval.evaluate`` end to end on synthetic data with a tiny scripted model.

The scripted model's masks follow the prompts (see ``tests/eval/tiny.py``), so the metrics
are non-trivial; they are checked against an independent recomputation from the model's
own predictions, and caching / resuming / skipping unreadable images is exercised.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import leansam
from leansam.data.coco import load_coco
from leansam.eval import EvalConfig, evaluate
from leansam.eval import coco_eval as runner_mod
from leansam.io import InputError, load_image


def cfg(root, out=None, **kw) -> EvalConfig:
    return EvalConfig(
        model="tiny_scripted",
        images=str(root / "images"),
        annotations=str(root / "annotations.json"),
        out=None if out is None else str(out),
        **kw,
    )


def reference_miou(root, prompt_boxes=True) -> tuple[float, int]:
    """mIoU recomputed with SamPredictor + numpy, one prompt at a time."""
    ds = load_coco(root / "annotations.json")
    predictor = leansam.SamPredictor(leansam.build_model("tiny_scripted"))
    ious = []
    for image_id in ds.image_ids():
        predictor.set_image(load_image(ds.image_path(image_id)))
        for a in ds.annotations_for(image_id):
            gt = ds.mask(a)
            x, y, w, h = a.bbox
            masks, _, _ = predictor.predict(box=np.array([x, y, x + w, y + h]), multimask_output=False)
            ious.append((masks[0] & gt).sum() / (masks[0] | gt).sum())
    return 100 * float(np.mean(ious)), len(ious)


def test_box_miou_equals_an_independent_computation(tiny_models, synth_set):
    res = evaluate(cfg(synth_set, prompt="box"))
    ref, n = reference_miou(synth_set)
    assert res.metrics["n"] == n
    assert res.metrics["mIoU"] == pytest.approx(ref, rel=1e-9)
    assert res.n_images == 4 and not res.failed_images
    assert res.weights.startswith("random init")
    assert res.machine["cpu"]
    json.dumps(res.to_dict())  # serialisable


def test_single_click_takes_the_highest_predicted_iou(tiny_models, synth_set):
    # The scripted model's best-scored candidate (IoU 0.9) is the 48 px disk; a wrong rule
    # (first candidate / single-mask path) would give a different mIoU.
    ds = load_coco(synth_set / "annotations.json")
    res = evaluate(cfg(synth_set, prompt="center", limit=1))
    predictor = leansam.SamPredictor(leansam.build_model("tiny_scripted"))
    image_id = ds.image_ids()[0]
    predictor.set_image(load_image(ds.image_path(image_id)))
    ious = []
    from leansam.eval.gt_prompts import mask_center

    for a in ds.annotations_for(image_id):
        gt = ds.mask(a)
        masks, scores, _ = predictor.predict(
            point_coords=np.array([mask_center(gt)]), point_labels=np.array([1]), multimask_output=True
        )
        best = masks[int(np.argmax(scores))]
        ious.append((best & gt).sum() / (best | gt).sum())
    assert res.metrics["mIoU"] == pytest.approx(100 * np.mean(ious), rel=1e-9)


def test_detections_ap_equals_cocoeval_on_the_written_masks(tiny_models, synth_set, tmp_path):
    gt = json.loads((synth_set / "annotations.json").read_text())
    rng = np.random.default_rng(0)
    dets = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": [v + float(rng.normal(0, 2)) for v in a["bbox"]],
            "score": float(rng.random()),
        }
        for a in gt["annotations"]
    ]
    det_path = tmp_path / "dets.json"
    det_path.write_text(json.dumps(dets))
    out = tmp_path / "out"
    res = evaluate(cfg(synth_set, out, detections=str(det_path)))
    assert res.mode == "detections" and res.metrics["n_detections"] == len(dets)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(synth_set / "annotations.json"))
        direct = COCOeval(coco, coco.loadRes(str(out / "segm_results.json")), "segm")
        direct.params.imgIds = sorted(coco.getImgIds())
        direct.evaluate()
        direct.accumulate()
        direct.summarize()
    assert res.metrics["AP"] == 100 * direct.stats[0]
    assert res.metrics["AP50"] == 100 * direct.stats[1]
    assert res.metrics["APl"] == (None if direct.stats[5] < 0 else 100 * direct.stats[5])
    saved = json.loads((out / "results.json").read_text())
    assert saved["metrics"]["AP"] == res.metrics["AP"]


def test_interrupted_run_resumes_and_gives_the_same_result(tiny_models, synth_set, tmp_path, monkeypatch):
    out = tmp_path / "out"
    full = evaluate(cfg(synth_set, out, prompt="random3"))
    cache = out / "per_image" / "rank0.jsonl"
    lines = cache.read_text().splitlines(keepends=True)
    assert len(lines) == 4
    # Simulate a crash while writing image 3: two complete lines and a cut-off one.
    cache.write_text("".join(lines[:2]) + lines[2][:17])
    calls = []
    real = runner_mod._Worker.__call__

    def counting(self, image_id):
        calls.append(image_id)
        return real(self, image_id)

    monkeypatch.setattr(runner_mod._Worker, "__call__", counting)
    resumed = evaluate(cfg(synth_set, out, prompt="random3"))
    assert len(calls) == 2  # only the images without a complete record
    assert resumed.metrics == full.metrics
    assert len(cache.read_text().splitlines()) == 4  # the partial line was dropped
    calls.clear()
    again = evaluate(cfg(synth_set, out, prompt="random3"))
    assert calls == [] and again.metrics == full.metrics


def test_cache_of_another_run_is_refused_unless_fresh(tiny_models, synth_set, tmp_path):
    out = tmp_path / "out"
    evaluate(cfg(synth_set, out, prompt="box", limit=1))
    with pytest.raises(InputError, match=r"different run .*prompt"):
        evaluate(cfg(synth_set, out, prompt="center", limit=1))
    res = evaluate(cfg(synth_set, out, prompt="center", limit=1, fresh=True))
    assert res.prompt == "center"


def test_unreadable_image_is_reported_and_skipped(tiny_models, synth_copy, capsys):
    ds = load_coco(synth_copy / "annotations.json")
    bad_id = ds.image_ids()[1]
    (synth_copy / "images" / ds.images[bad_id].file_name).write_bytes(b"not a jpeg at all")
    # A truncated file whose header still parses fails later, when decoding.
    trunc_id = ds.image_ids()[2]
    p = synth_copy / "images" / ds.images[trunc_id].file_name
    p.write_bytes(p.read_bytes()[:2000])
    res = evaluate(cfg(synth_copy, prompt="box"))
    failed = {f["image_id"]: f for f in res.failed_images}
    assert set(failed) == {bad_id, trunc_id}
    assert "not an image" in failed[bad_id]["error"]
    assert res.n_images == 2 and res.n_images_selected == 4
    err = capsys.readouterr().err
    assert ds.images[bad_id].file_name in err and ds.images[trunc_id].file_name in err
    assert "2 image(s) could not be read" in res.summary()


def test_lvis_layout_is_accepted(tiny_models, synth_copy):
    ann = synth_copy / "annotations.json"
    d = json.loads(ann.read_text())
    for im in d["images"]:
        im["coco_url"] = "http://images.cocodataset.org/val2017/" + im.pop("file_name")
    for a in d["annotations"]:
        del a["iscrowd"]
    ann.write_text(json.dumps(d))
    res = evaluate(cfg(synth_copy, prompt="box", limit=2))
    assert res.n_images == 2 and res.metrics["n"] > 0


def test_batch_size_does_not_change_the_result(tiny_models, synth_set):
    a = evaluate(cfg(synth_set, prompt="tight-box", limit=2, batch_size=2))
    b = evaluate(cfg(synth_set, prompt="tight-box", limit=2, batch_size=64))
    assert a.metrics == b.metrics


def test_given_model_is_used_as_is(tiny_models, synth_set):
    model = leansam.build_model("tiny_scripted")
    res = evaluate(cfg(synth_set, prompt="box", limit=1), model=model)
    assert res.weights == "given model"
    assert torch.is_tensor(next(model.parameters()))
