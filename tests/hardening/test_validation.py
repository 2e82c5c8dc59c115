"""One validation layer: malformed COCO annotations, detections, boxes files and --student configs give
one ``error:`` line naming the file and the offending field's path, and exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from leansam.data.coco import encode_mask
from leansam.validate import Arr, Num, Obj, ValidationError, check, dataclass_from_dict

from .conftest import EXAMPLE, REPO, assert_error, cli, coco, write


def _eval(synth_set, annotations, *extra):
    return [
        "eval",
        "--model",
        "tiny_scripted",
        "--images",
        synth_set / "images",
        "--annotations",
        annotations,
        *extra,
    ]


def _set(path: str, value):
    """A mutation of the annotations dict: ``path`` like ``annotations.3.bbox.2``."""

    def apply(d):
        *head, last = path.split(".")
        for k in head:
            d = d[int(k)] if isinstance(d, list) else d[k]
        if isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value

    return apply


def _rle_wrong_total(d):
    img = d["images"][0]
    rle = encode_mask(np.ones((img["height"], img["width"] - 1), bool))
    rle["size"] = [img["height"], img["width"]]  # claims the image size, covers one column less
    d["annotations"][0]["segmentation"] = rle


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set("annotations.3.bbox.2", None), "annotations[3].bbox[2]: expected a finite number"),
        (
            _set("annotations.1.bbox", "0,0,4,4"),
            'annotations[1].bbox: expected [x, y, width, height], a list of 4, got "0,0,4,4"',
        ),
        (
            _set("annotations.0.area", [5]),
            "annotations[0].area: expected a finite number >= 0, got a list of 1",
        ),
        (_set("annotations.2.image_id", "1"), 'annotations[2].image_id: expected an integer, got "1"'),
        (_set("annotations.0.iscrowd", 7), "annotations[0].iscrowd: expected an integer in [0, 1], got 7"),
        (_set("annotations.0.bbox.0", 1e300), "annotations[0].bbox[0]: expected a finite number in"),
        (_set("images.1.width", 2.5), "images[1].width: expected an integer in [1, 1048576], got 2.5"),
        (_set("images.0.file_name", 17), "images[0].file_name: expected a non-empty string"),
        (_set("categories.0", None), "categories[0]: expected an object, got null"),
        (
            _set("annotations.0.segmentation", [[1, 2, 3, "x", 5, 6]]),
            "annotations[0].segmentation[0][3]: expected a finite number",
        ),
        (
            _set("annotations.0.segmentation", {"size": [1, 1]}),
            "annotations[0].segmentation: missing key 'counts'",
        ),
        (
            _set("annotations.0.segmentation", {"size": [762, 919], "counts": [1, -1]}),
            "annotations[0].segmentation.counts[1]: expected an integer >= 0, got -1",
        ),
        (
            _set("annotations.0.segmentation", {"size": [762, 919], "counts": [5, 5]}),
            "RLE counts cover 10 pixels, expected height x width = 762 x 919",
        ),
        (_rle_wrong_total, "RLE counts cover 699516 pixels, expected height x width = 762 x 919 = 700278"),
        (
            _set("annotations.0.segmentation", {"size": [762, 919], "counts": "0"}),
            "RLE counts cover 0 pixels",
        ),
        (_set("annotations.0.segmentation", {"size": [762, 919], "counts": "\x7f\x7f"}), "character outside"),
        (
            _set("annotations.0.segmentation", {"size": [762, 919], "counts": "o"}),
            "ends in the middle of a run length",
        ),
    ],
)
def test_malformed_annotations(tiny_models, synth_set, tmp_path, capsys, mutate, message):
    d = coco(synth_set)
    mutate(d)
    path = write(tmp_path / "ann.json", d)
    code, _, err = cli(_eval(synth_set, path), capsys)
    line = assert_error(code, err, message)
    assert str(path) in line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"images": [], "annotations": [], "categories": [], "x": NaN', "is not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (
            '{"images": [{"id": 1, "width": NaN, "height": 3}], "annotations": [], "categories": []}',
            "images[0].width: expected an integer",
        ),
    ],
)
def test_unparsable_or_hostile_json(tiny_models, synth_set, tmp_path, capsys, text, message):
    path = tmp_path / "ann.json"
    path.write_text(text)
    code, _, err = cli(_eval(synth_set, path), capsys)
    assert_error(code, err, message)


def test_huge_polygon_refused_before_rasterising(tiny_models, synth_set, tmp_path, capsys):
    d = coco(synth_set)
    d["annotations"][0]["segmentation"] = [[0, 0, 2e7, 0, 2e7, 2e7]]  # 150 bytes that cost GiBs
    code, _, err = cli(_eval(synth_set, write(tmp_path / "a.json", d)), capsys)
    assert_error(
        code,
        err,
        "annotations[0] (id 1): segmentation[0][2]: vertex (2e+07, 0) is far outside the 919 x 762 image",
    )


def test_polygon_memory_limit_is_the_users(tiny_models, synth_set, tmp_path, capsys, monkeypatch):
    d = coco(synth_set)
    d["annotations"][0]["segmentation"] = [[0, 0, 1800, 0, 1800, 1500, 0, 1500] * 50]  # long, in range
    path = write(tmp_path / "a.json", d)
    monkeypatch.setenv("LEANSAM_MAX_MEMORY", "2M")
    code, _, err = cli(_eval(synth_set, path), capsys)
    assert_error(code, err, "rasterising its polygons needs about")
    assert "LEANSAM_MAX_MEMORY" in err


def test_image_declaring_a_huge_mask(tiny_models, synth_set, tmp_path, capsys):
    d = coco(synth_set)
    d["images"][0].update(width=1 << 20, height=1 << 20)
    code, _, err = cli(_eval(synth_set, write(tmp_path / "a.json", d)), capsys)
    assert_error(code, err, "images[0]: a mask of the 1048576 x 1048576 image needs about 2.0 TiB")


def _det(**kw):
    return {"image_id": 1, "category_id": 6, "bbox": [10, 10, 50, 50], "score": 0.9, **kw}


@pytest.mark.parametrize(
    ("dets", "message"),
    [
        ([_det(score=None)], "[0].score: expected a finite number, got null"),
        ([_det(), _det(bbox=[1e300, 0, 5, 5])], "[1].bbox[0]: expected a finite number in"),
        (
            [_det(bbox=[5000, 5000, 10, 10])],
            "[0].bbox: box [5000, 5000, 10, 10] (XYWH) is entirely outside its 919 x 762 image",
        ),
        ([_det(bbox=[-100, -100, 20, 20])], "is entirely outside"),
        ([_det(bbox=[0, 0, -1, 5])], "[0].bbox[2]: expected a size >= 0, got -1"),
        ([_det(image_id=True)], "[0].image_id: expected an integer, got true"),
        ([_det(category_id="cat")], '[0].category_id: expected an integer, got "cat"'),
        ([3], "[0]: expected an object, got 3"),
    ],
)
def test_malformed_detections(tiny_models, synth_set, tmp_path, capsys, dets, message):
    path = write(tmp_path / "dets.json", dets)
    ann = synth_set / "annotations.json"
    code, _, err = cli(_eval(synth_set, ann, "--detections", path), capsys)
    assert_error(code, err, message)


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([{"bbox": [1, 2, 30, 40], "score": None}], "[0].score: expected a finite number, got null"),
        (
            [{"bbox": [1, 2, 30, 40], "image_id": [1]}],
            "[0].image_id: expected an integer or a string, got a list of 1",
        ),
        ([{"bbox": [1, 2, 30, 4e200]}], "[0].bbox[3]: expected a finite number in"),
        (
            {"annotations": [{"bbox": [1, 2, 3, 4]}, {"bbox": None}]},
            "[1].bbox: expected [x, y, width, height], a list of 4, got null",
        ),
    ],
)
def test_malformed_boxes_files(tmp_path, capsys, boxes, message):
    path = write(tmp_path / "boxes.json", boxes)
    args = ["everything", EXAMPLE, "--strategy", "boxes", "--boxes", path, "--out", tmp_path / "o"]
    code, _, err = cli(args, capsys)
    assert_error(code, err, message)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("student", "message"),
    [
        (
            'tiny_fpn:{"widths": [16, 32, 64, 128], "dpeths": [1, 1, 1, 1]}',
            "unknown key 'dpeths' (did you mean 'depths'?",
        ),
        (
            'tiny_fpn:{"widths": [16, null, 64, 128]}',
            "--student tiny_fpn: widths[1]: expected an integer, got null",
        ),
        ('tiny_fpn:{"stem_width": "16"}', '--student tiny_fpn: stem_width: expected an integer, got "16"'),
        ('tiny_fpn:{"out_chans": 3}', "out_chans: is set by leansam from the teacher"),
        ("tiny_fpn:[1, 2]", "--student tiny_fpn: (top level): expected an object, got a list of 2"),
        ("tiny_fpn:{nope", "--student tiny_fpn is not valid JSON"),
    ],
)
def test_student_configs(tmp_path, capsys, student, message):
    args = ["distill", "--teacher", "leansam_tiny", "--student", student, "--mode", "encoder"]
    args += ["--data", "synth:2", "--out", tmp_path / "run", "--steps", "1"]
    code, _, err = cli(args, capsys)
    assert_error(code, err, message)


def test_validator_reports_the_deepest_path():
    schema = Obj(required={"a": Arr(Obj(required={"b": Arr(Num(min=0), length=2)}))})
    with pytest.raises(ValidationError) as e:
        check({"a": [{"b": [1, 2]}, {"b": [3, -4]}]}, schema, "f.json")
    assert str(e.value) == "f.json: a[1].b[1]: expected a finite number >= 0, got -4"
    assert e.value.path == "a[1].b[1]"
    for bad in (float("nan"), float("inf"), True, "1", None):
        with pytest.raises(ValidationError):
            check(bad, Num(), "x")


def test_dataclass_configs_keep_tuples():
    from leansam.models.tiny_fpn import TinyFPNConfig

    cfg = dataclass_from_dict(
        TinyFPNConfig, json.loads('{"widths": [8, 16, 32, 64]}'), "s", {"out_chans": 8, "grid": 4}
    )
    assert cfg.widths == (8, 16, 32, 64) and cfg.out_chans == 8


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_float_weights_stored_as_integers_are_refused(tmp_path, capsys, dtype):
    from safetensors.torch import save_file

    state = torch.load(REPO / "leansam" / "assets" / "leansam_tiny.pt", weights_only=True)
    state = state.get("model", state)
    key = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 4)
    state = {k: v.contiguous() for k, v in state.items()}
    state[key] = state[key].to(dtype)
    path = tmp_path / "ints.safetensors"
    save_file(state, path)
    args = ["segment", EXAMPLE, "--point", "5,5", "--checkpoint", path, "--out", tmp_path / "o"]
    code, _, err = cli(args, capsys)
    line = assert_error(code, err, "wrong shapes or dtypes (1)")
    assert key in line and f"file {str(dtype).removeprefix('torch.')}, model float32" in line
