"""Tests for leansam.data.coco: RLE helpers, atomic JSON writing and the validating reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from leansam.data.coco import (
    CocoAnnotation,
    decode_mask,
    encode_mask,
    load_coco,
    mask_bbox,
    rle_area,
    rle_bbox,
    write_json_atomic,
)


def _random_mask(h: int = 37, w: int = 53, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), bool)
    m[5:20, 10:40] = True
    m[rng.random((h, w)) < 0.05] = True
    return m


def test_encode_decode_roundtrip_str_counts() -> None:
    m = _random_mask()
    rle = encode_mask(m)
    assert rle["size"] == [37, 53]
    assert isinstance(rle["counts"], str)
    json.dumps(rle)  # JSON-serialisable
    out = decode_mask(rle, 37, 53)
    assert out.dtype == bool and out.shape == (37, 53)
    np.testing.assert_array_equal(out, m)
    assert rle_area(rle) == int(m.sum())
    assert rle_bbox(rle) == mask_bbox(m)


def test_decode_bytes_counts_and_annotation_forms() -> None:
    m = _random_mask(seed=1)
    raw = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    assert isinstance(raw["counts"], bytes)
    np.testing.assert_array_equal(decode_mask(raw, 37, 53), m)
    ann = {"segmentation": encode_mask(m)}
    np.testing.assert_array_equal(decode_mask(ann, 37, 53), m)
    typed = CocoAnnotation(1, 1, 1, encode_mask(m), float(m.sum()), (0, 0, 1, 1))
    np.testing.assert_array_equal(decode_mask(typed, 37, 53), m)


def test_decode_uncompressed_rle() -> None:
    # column-major runs: 6 zeros, 2 ones, 3 zeros, 2 ones, 7 zeros on a 5x4 image
    seg = {"size": [5, 4], "counts": [6, 2, 3, 2, 7]}
    out = decode_mask(seg, 5, 4)
    expected = np.zeros((5, 4), bool)
    expected[1:3, 1:3] = True
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="sum"):
        decode_mask({"size": [5, 4], "counts": [6, 2]}, 5, 4)


def test_decode_polygon() -> None:
    # axis-aligned square covering pixels 10..29 in x and 5..24 in y
    poly = [[10, 5, 30, 5, 30, 25, 10, 25]]
    out = decode_mask(poly, 40, 50)
    assert out.shape == (40, 50)
    assert abs(int(out.sum()) - 400) <= 45  # pycocotools' polygon rasterisation is approximate at edges
    x, y, w, h = mask_bbox(out)
    assert 9 <= x <= 11 and 4 <= y <= 6 and 19 <= w <= 21 and 19 <= h <= 21
    assert not decode_mask([], 8, 8).any()


def test_decode_size_mismatch_raises() -> None:
    rle = encode_mask(np.ones((4, 6), bool))
    with pytest.raises(ValueError, match="does not match"):
        decode_mask(rle, 6, 4)


def test_mask_bbox_conventions() -> None:
    m = np.zeros((10, 10), bool)
    assert mask_bbox(m) == [0.0, 0.0, 0.0, 0.0]
    m[5, 3] = True  # single pixel at x=3, y=5
    assert mask_bbox(m) == [3.0, 5.0, 1.0, 1.0]
    assert rle_bbox(encode_mask(m)) == [3.0, 5.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="2-D"):
        encode_mask(np.zeros((2, 3, 4), bool))


def test_write_json_atomic(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    write_json_atomic(p, {"b": 1, "a": [1, 2]})
    assert json.loads(p.read_text()) == {"b": 1, "a": [1, 2]}
    with pytest.raises(TypeError):
        write_json_atomic(p, {"bad": object()})
    assert json.loads(p.read_text()) == {"b": 1, "a": [1, 2]}  # old content intact
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.json"]  # no temp file left


# ----------------------------------------------------------------------------- load_coco


def _valid() -> dict[str, Any]:
    m = np.zeros((20, 30), bool)
    m[2:8, 3:12] = True
    return {
        "images": [{"id": 7, "file_name": "x.jpg", "width": 30, "height": 20}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 2,
                "segmentation": encode_mask(m),
                "area": int(m.sum()),
                "bbox": mask_bbox(m),
                "iscrowd": 0,
                "variant": "rect",
            },
            {"id": 2, "image_id": 7, "category_id": 2, "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]},
        ],
        "categories": [{"id": 2, "name": "polygon"}],
    }


def _write(tmp_path: Path, obj: Any) -> Path:
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(obj))
    return p


def test_load_coco_valid(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    ds = load_coco(_write(tmp_path, _valid()))
    assert len(ds) == 1 and ds.image_ids() == [7]
    assert ds.categories == {2: "polygon"}
    assert ds.image_root == tmp_path / "images"
    assert ds.image_path(7) == tmp_path / "images" / "x.jpg"
    a1, a2 = ds.annotations_for(7)
    assert a1.area == 54 and a1.bbox == (3.0, 2.0, 9.0, 6.0) and a1.extra == {"variant": "rect"}
    assert a2.area > 0 and a2.bbox[2] > 0  # computed from the polygon
    masks = ds.masks(7)
    assert masks.shape == (2, 20, 30) and masks.dtype == bool
    assert int(ds.mask(a1).sum()) == 54
    ds2 = load_coco(tmp_path / "ann.json", image_root=tmp_path / "elsewhere")
    assert ds2.image_root == tmp_path / "elsewhere"


def _mutate(fn: Any) -> dict[str, Any]:
    d = _valid()
    fn(d)
    return d


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([1, 2, 3], "not a COCO instances file"),
        ({"images": []}, r"missing top-level key\(s\) \['annotations', 'categories'\]"),
        (_mutate(lambda d: d.update(images={})), "images: expected a list, got an object"),
        (_mutate(lambda d: d["images"][0].pop("width")), r"images\[0\]: missing key 'width'"),
        (
            _mutate(lambda d: d["images"][0].update(height="20")),
            r'images\[0\].height: expected an integer.*got "20"',
        ),
        (
            _mutate(lambda d: d["images"][0].update(height=0)),
            r"images\[0\].height: expected an integer in \[1, .*got 0",
        ),
        (_mutate(lambda d: d["images"].append(dict(d["images"][0]))), "duplicate image id 7"),
        (_mutate(lambda d: d["annotations"][0].update(image_id=99)), "unknown image_id 99"),
        (_mutate(lambda d: d["annotations"][0].update(category_id=5)), "unknown category_id 5"),
        (_mutate(lambda d: d["annotations"][1].update(id=1)), "duplicate annotation id"),
        (_mutate(lambda d: d["annotations"][0].pop("segmentation")), "missing key 'segmentation'"),
        (
            _mutate(lambda d: d["annotations"][0].update(segmentation=encode_mask(np.zeros((30, 20), bool)))),
            r"mask size \[30, 20\] \(H, W\) does not match its image entry \[20, 30\]",
        ),
        (_mutate(lambda d: d["annotations"][1].update(segmentation=[[1, 2, 3]])), "polygon"),
        (
            _mutate(lambda d: d["annotations"][0].update(bbox=[1, 2])),
            r"annotations\[0\].bbox: expected \[x, y, width",
        ),
        (_mutate(lambda d: d["categories"][0].pop("name")), r"categories\[0\]: missing key 'name'"),
    ],
)
def test_load_coco_errors(tmp_path: Path, obj: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_coco(_write(tmp_path, obj))


def test_load_coco_not_json(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_coco(p)
