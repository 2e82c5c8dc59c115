"""Tests for leansam.data.synth: determinism, COCO validity, content mix, atomic writing."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from leansam.data import synth
from leansam.data.coco import load_coco, mask_bbox
from leansam.data.synth import CATEGORIES, SynthConfig, generate, render_sample
from leansam.io import InputError
from leansam.outputs import MANIFEST

SMALL = SynthConfig(min_side=160, max_side=256, max_objects=8)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 default-config images (shared by the content checks)."""
    return generate(20, tmp_path_factory.mktemp("synth") / "ds", seed=0)


def _has_hole(m: np.ndarray) -> bool:
    n, lab = cv2.connectedComponents((~m).astype(np.uint8), connectivity=4)
    border = set(lab[0]) | set(lab[-1]) | set(lab[:, 0]) | set(lab[:, -1])
    return any(i not in border for i in range(1, n))


# ----------------------------------------------------------------------------- determinism


def test_deterministic_and_independent_of_n(tmp_path: Path) -> None:
    a = _files(generate(3, tmp_path / "a", seed=5, config=SMALL).parent)
    b = _files(generate(3, tmp_path / "b", seed=5, config=SMALL).parent)
    assert a == b  # byte-identical images and JSON
    assert set(a) == {
        MANIFEST,
        "annotations.json",
        "images/000000.jpg",
        "images/000001.jpg",
        "images/000002.jpg",
    }
    c = _files(generate(2, tmp_path / "c", seed=5, config=SMALL).parent)
    assert c["images/000000.jpg"] == a["images/000000.jpg"]
    assert c["images/000001.jpg"] == a["images/000001.jpg"]
    ja, jc = json.loads(a["annotations.json"]), json.loads(c["annotations.json"])
    assert jc["images"] == ja["images"][:2]
    assert jc["annotations"] == [x for x in ja["annotations"] if x["image_id"] <= 2]
    d = _files(generate(3, tmp_path / "d", seed=6, config=SMALL).parent)
    assert all(d[k] != a[k] for k in a if k != MANIFEST)  # the manifest only lists names


def test_workers_give_identical_output(tmp_path: Path) -> None:
    a = _files(generate(3, tmp_path / "a", seed=1, config=SMALL).parent)
    b = _files(generate(3, tmp_path / "b", seed=1, config=SMALL, workers=2).parent)
    assert a == b


# ----------------------------------------------------------------------------- validity


def test_coco_valid_and_masks_consistent(dataset: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(dataset))
    assert len(gt.getImgIds()) == 20
    assert {c["name"] for c in gt.loadCats(gt.getCatIds())} == set(CATEGORIES.values())
    ds = load_coco(dataset)
    assert ds.image_root == dataset.parent / "images"
    for iid in ds.image_ids():
        img = ds.images[iid]
        assert img.file_name == f"{iid - 1:06d}.jpg"
        with Image.open(ds.image_path(iid)) as im:
            assert im.format == "JPEG" and im.size == (img.width, img.height)
        masks = ds.masks(iid)
        # visible parts after occlusion: masks of one image never overlap
        assert masks.sum(axis=0).max() <= 1
        for ann, m in zip(ds.annotations_for(iid), masks):
            assert isinstance(ann.segmentation["counts"], str)
            assert ann.iscrowd == 0
            assert ann.area == m.sum() >= SynthConfig().min_area
            assert list(ann.bbox) == mask_bbox(m)
            assert ann.extra["variant"] and 0 < ann.extra["visible_fraction"] <= 1
    ids = [a.id for a in ds.annotations]
    assert ids == list(range(1, len(ids) + 1))
    info = json.loads(dataset.read_text())["info"]
    assert info["seed"] == 0 and SynthConfig.from_dict(info["config"]) == SynthConfig()


def test_gt_as_detections_scores_ap_1(dataset: Path) -> None:
    """The eval harness path: COCOeval of the ground truth against itself gives AP = 1."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(dataset))
        dets = [
            {
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "segmentation": a["segmentation"],
                "score": 1.0,
            }
            for a in gt.dataset["annotations"]
        ]
        ev = COCOeval(gt, gt.loadRes(dets), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)
    assert ev.stats[3] == pytest.approx(1.0) and ev.stats[4] == pytest.approx(1.0)  # small, medium
    assert ev.stats[5] == pytest.approx(1.0)  # large


# ----------------------------------------------------------------------------- content


def test_size_mix_holes_and_thin(dataset: Path) -> None:
    ds = load_coco(dataset)
    areas = np.array([a.area for a in ds.annotations])
    assert (areas < 32**2).sum() >= 10
    assert ((areas >= 32**2) & (areas <= 96**2)).sum() >= 10
    assert (areas > 96**2).sum() >= 5
    cats = {ds.categories[a.category_id] for a in ds.annotations}
    assert cats == set(CATEGORIES.values())
    holes = thin = 0
    for a in ds.annotations:
        m = ds.mask(a)
        holes += _has_hole(m)
        if ds.categories[a.category_id] == "thin" and max(a.bbox[2], a.bbox[3]) >= 40:
            # a few px wide: max distance to the background <= 3.5 px
            thin += cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 3).max() <= 3.5
    assert holes >= 5
    assert thin >= 5


def test_occlusion_and_truncation_present(dataset: Path) -> None:
    ds = load_coco(dataset)
    fractions = [a.extra["visible_fraction"] for a in ds.annotations]
    assert sum(f < 0.9 for f in fractions) >= 10  # partially occluded / cut by the border
    assert sum(f == 1.0 for f in fractions) >= 10


def test_render_sample_matches_config() -> None:
    cfg = SynthConfig(min_side=200, max_side=300, max_aspect=1.5, min_objects=2, max_objects=5)
    for i in range(3):
        s = render_sample(i, 3, cfg)
        h, w = s.image.shape[:2]
        assert s.image.dtype == np.uint8 and s.image.shape[2] == 3
        assert min(h, w) >= 200 and max(h, w) <= 300 and max(h, w) / min(h, w) <= 1.5 + 1e-6
        assert len(s.masks) <= 5
        assert len(s.masks) == len(s.category_ids) == len(s.variants) == len(s.visible_fractions)
        if s.masks:
            assert np.stack(s.masks).sum(0).max() <= 1
    np.testing.assert_array_equal(render_sample(1, 3, cfg).image, render_sample(1, 3, cfg).image)


# ----------------------------------------------------------------------------- config


def test_config_validation_and_serialisation() -> None:
    d = dataclasses.asdict(SynthConfig())
    json.dumps(d)
    assert SynthConfig.from_dict(json.loads(json.dumps(d))) == SynthConfig()
    bad = [
        {"min_side": 16},
        {"min_side": 600, "max_side": 500},
        {"max_aspect": 0.5},
        {"min_objects": 5, "max_objects": 2},
        {"size_mix": (0.5, 0.5)},
        {"size_mix": (0.0, 0.0, 0.0)},
        {"kind_weights": (1.0, -1.0, 1.0, 1.0, 1.0)},
        {"jpeg_quality": 0},
        {"shadow_prob": 1.5},
        {"min_area": 0},
        {"max_side": 512.0},
    ]
    for kw in bad:
        with pytest.raises(ValueError, match="SynthConfig"):
            SynthConfig(**kw)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SynthConfig().min_side = 3  # type: ignore[misc]


# ----------------------------------------------------------------------------- atomic writing


def test_keeps_files_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    (out / "annotations.json").write_text("the user's annotations")
    with pytest.raises(InputError, match=r"annotations\.json, not written by leansam"):
        generate(1, out, config=SMALL)
    assert (out / "annotations.json").read_text() == "the user's annotations"
    generate(1, out, config=SMALL, overwrite=True)  # replaces that file, never keep.txt
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "annotations.json", "images", "keep.txt"]
    assert (out / "keep.txt").read_text() == "x"
    generate(2, out, config=SMALL)  # its own set: replaced without overwrite
    assert len(list((out / "images").iterdir())) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    generate(1, empty, config=SMALL)  # an empty existing directory is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "empty"]  # no temp dirs left


def test_failure_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = synth.render_sample

    def flaky(index: int, seed: int = 0, config: SynthConfig | None = None) -> synth.SynthSample:
        if index == 2:
            raise RuntimeError("boom")
        return real(index, seed, config)

    monkeypatch.setattr(synth.writer, "render_sample", flaky)
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="boom"):
        generate(4, out, config=SMALL)
    assert list(tmp_path.iterdir()) == []  # neither out_dir nor a temp dir

    # with overwrite=True, a failed run keeps the previous data set intact
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        generate(4, out, config=SMALL, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    assert (out / "old.txt").read_text() == "old"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n must"):
        generate(-1, tmp_path / "x")
    with pytest.raises(ValueError, match="seed must"):
        generate(1, tmp_path / "x", seed=-2)
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(InputError, match="is not a folder"):
        generate(1, f)


def test_synth_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert synth.synth_command(1, tmp_path / "ds", seed=0) == 0
    assert (tmp_path / "ds" / "annotations.json").is_file()
    assert synth.synth_command(1, tmp_path / "ds", seed=0) == 0  # its own set: replaced
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "annotations.json").write_text("the user's")
    assert synth.synth_command(1, tmp_path / "other", seed=0) == 2
    assert "error" in capsys.readouterr().out
