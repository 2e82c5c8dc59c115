"""Compression: int8 post-training quantization (PyTorch and ONNX Runtime) and their configs.

    from leansam.compress import TinySamPTQConfig, quantize_, save_quantized, load_quantized
    model = leansam.build_model("leansam_tiny")
    quantize_(model, TinySamPTQConfig(calib_images="calib/"))     # in place, real int8 kernels
    save_quantized(model, "tiny_int8")                             # model.pt + quantization.json
    model = load_quantized("tiny_int8")                            # runs in leansam.SamPredictor

The fidelity gate that every compression is checked with is :mod:`leansam.fidelity`.
See docs/compression.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "METHODS": "leansam.compress.config",
    "QuantConfig": "leansam.compress.config",
    "TinySamPTQConfig": "leansam.compress.config",
    "OrtStaticConfig": "leansam.compress.config",
    "OrtDynamicConfig": "leansam.compress.config",
    "config_from_dict": "leansam.compress.config",
    "config_from_json": "leansam.compress.config",
    "CalibrationSet": "leansam.compress.calib",
    "find_images": "leansam.compress.calib",
    "load_calibration": "leansam.compress.calib",
    "QuantReport": "leansam.compress.ptq",
    "quantize_": "leansam.compress.ptq",
    "save_quantized": "leansam.compress.saving",
    "load_quantized": "leansam.compress.saving",
    "is_quantized_dir": "leansam.compress.saving",
    "quantize_onnx": "leansam.compress.ort",
    "load_onnx_quantized": "leansam.compress.ort",
}

__all__ = [
    "METHODS",
    "CalibrationSet",
    "OrtDynamicConfig",
    "OrtStaticConfig",
    "QuantConfig",
    "QuantReport",
    "TinySamPTQConfig",
    "config_from_dict",
    "config_from_json",
    "find_images",
    "is_quantized_dir",
    "load_calibration",
    "load_onnx_quantized",
    "load_quantized",
    "quantize_",
    "quantize_onnx",
    "save_quantized",
]

if TYPE_CHECKING:
    from .calib import CalibrationSet, find_images, load_calibration
    from .config import (
        METHODS,
        OrtDynamicConfig,
        OrtStaticConfig,
        QuantConfig,
        TinySamPTQConfig,
        config_from_dict,
        config_from_json,
    )
    from .ort import load_onnx_quantized, quantize_onnx
    from .ptq import QuantReport, quantize_
    from .saving import is_quantized_dir, load_quantized, save_quantized


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'leansam.compress' has no attribute {name!r}")
