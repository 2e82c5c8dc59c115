"""Quantization configs: validation on construction and a lossless JSON round trip."""

from __future__ import annotations

import json

import pytest

from leansam.compress.config import (
    METHODS,
    OrtDynamicConfig,
    OrtStaticConfig,
    TinySamPTQConfig,
    config_from_dict,
    config_from_json,
)


@pytest.mark.parametrize(
    "cfg",
    [
        TinySamPTQConfig(),
        TinySamPTQConfig(w_bits=6, calib_images="c", search="cosine", exclude=("image_encoder.neck.*",)),
        OrtStaticConfig(per_channel=False, calibrate_method="percentile", op_types=("Conv",)),
        OrtDynamicConfig(per_channel=True),
    ],
)
def test_json_round_trip(cfg, tmp_path):
    text = cfg.to_json()
    data = json.loads(text)
    assert data["method"] == cfg.method
    assert config_from_json(text) == cfg
    f = tmp_path / "cfg.json"
    f.write_text(text)
    assert config_from_json(f) == cfg
    assert config_from_dict(data) == cfg
    assert METHODS[cfg.method] is type(cfg)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"w_bits": 9}, "w_bits"),
        ({"w_bits": 1}, "w_bits"),
        ({"a_bits": 4}, "a_bits"),
        ({"search": "kl"}, "search"),
        ({"num_calib": 0}, "num_calib"),
        ({"search_min": 0.0}, "search_min"),
        ({"search_candidates": 1}, "search_candidates"),
        ({"linear_granularity": "head"}, "linear_granularity"),
        ({"exclude": ("",)}, "exclude"),
        ({"samples_per_image": 4}, "samples_per_image"),
        ({"fuse_activations": 1}, "fuse_activations"),
    ],
)
def test_tinysam_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TinySamPTQConfig(**kwargs)


@pytest.mark.parametrize("cls", [TinySamPTQConfig, OrtStaticConfig])
@pytest.mark.parametrize(
    ("kwargs", "match"), [({"num_calib": 0}, "num_calib"), ({"calib_images": 3}, "calib_images")]
)
def test_calibration_fields_are_checked_by_both_post_training_configs(cls, kwargs, match):
    with pytest.raises(ValueError, match=f"{cls.__name__}: {match}"):
        cls(**kwargs)


def test_ort_config_validation():
    with pytest.raises(ValueError, match="calibrate_method"):
        OrtStaticConfig(calibrate_method="max")
    with pytest.raises(ValueError, match="quant_format"):
        OrtStaticConfig(quant_format="qop")
    with pytest.raises(ValueError, match="weight_type"):
        OrtDynamicConfig(weight_type="int4")


def test_bad_json_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown option"):
        config_from_dict({"method": "tinysam", "wbits": 8})
    with pytest.raises(ValueError, match="unknown quantization method"):
        config_from_dict({"method": "gptq"})
    with pytest.raises(ValueError, match="not valid JSON"):
        config_from_json("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        config_from_json(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="not 'tinysam'"):
        TinySamPTQConfig.from_dict({"method": "ort-static"})
