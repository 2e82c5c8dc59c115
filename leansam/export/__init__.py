"""Deployment: ONNX export and the ONNX Runtime backend.

    from leansam.export import OnnxExportConfig, export_onnx, load_onnx_model
    out = export_onnx("mobile_sam", "onnx/mobile_sam")             # encoder.onnx + decoder.onnx
    model = load_onnx_model("onnx/mobile_sam", expect_model="mobile_sam")
    predictor = leansam.SamPredictor(model)                        # same API, runs on ONNX Runtime

``onnx`` and ``onnxruntime`` are optional (``pip install 'leansam[onnx]'``) and imported only
when a function needs them. docs/deployment.md describes the graphs and the metadata.
"""

from __future__ import annotations

from .onnx import OnnxExport, OnnxExportConfig, OnnxExportError, export_onnx, read_metadata
from .runtime import OnnxModelError, OnnxSam, default_providers, load_onnx_decoder, load_onnx_model

__all__ = [
    "OnnxExport",
    "OnnxExportConfig",
    "OnnxExportError",
    "OnnxModelError",
    "OnnxSam",
    "default_providers",
    "export_onnx",
    "load_onnx_decoder",
    "load_onnx_model",
    "read_metadata",
]
