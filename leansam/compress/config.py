"""Quantization configs: frozen dataclasses, validated on construction, round-tripped through JSON.

    cfg = TinySamPTQConfig(calib_images="calib/", search="mse")
    text = cfg.to_json()                     # {"method": "tinysam", "w_bits": 8, ...}
    assert config_from_json(text) == cfg

``method`` (the registry key of a config class, :data:`METHODS`) is written into the JSON so that
:func:`config_from_dict` can rebuild the right class; unknown keys are refused, so a typo in a
hand-written config file is an error, not a silently ignored option.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "METHODS",
    "OrtDynamicConfig",
    "OrtStaticConfig",
    "QuantConfig",
    "TinySamPTQConfig",
    "config_from_dict",
    "config_from_json",
]


def _check(cond: bool, cls: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{cls}: {msg}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_calibration(config: Any, cls: str) -> None:
    """The calibration fields that the post-training configs share: ``calib_images``, ``num_calib``."""
    _check(
        config.calib_images is None or isinstance(config.calib_images, str),
        cls,
        "calib_images must be a folder path or None",
    )
    _check(
        _is_int(config.num_calib) and config.num_calib >= 1,
        cls,
        f"num_calib must be >= 1, not {config.num_calib!r}",
    )


@dataclass(frozen=True)
class QuantConfig:
    """Base of every quantization config (JSON round trip; the subclass sets ``method``)."""

    method: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"method": self.method, **{k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantConfig:
        data = dict(data)
        method = data.pop("method", cls.method)
        if method != cls.method:
            raise ValueError(f"{cls.__name__}: config is for method {method!r}, not {cls.method!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown option(s) {unknown}; known: {sorted(fields)}")
        for k, v in list(data.items()):
            if isinstance(v, list):  # JSON has no tuples
                data[k] = tuple(v)
        return cls(**data)


@dataclass(frozen=True)
class TinySamPTQConfig(QuantConfig):
    """TinySAM's post-training quantization recipe, executed by real int8 kernels in PyTorch.

    Every dense ``nn.Conv2d`` (groups == 1) and ``nn.Linear`` of the image encoder runs as
    an int8 x uint8 oneDNN kernel with fp32 accumulation rescaled to an fp32 output: weights are
    symmetric int8 with one scale per output channel (convolutions) or per layer (linears, TinySAM;
    ``linear_granularity="channel"`` for one per output feature), activations are asymmetric uint8
    with one scale and zero point per tensor. Depthwise/grouped convolutions, attention matmuls,
    normalisations and the mask decoder stay in fp32 (see docs/compression.md for why and for
    measurements). Scales are searched on calibration images (TinySAM / PTQ4ViT style): for each
    layer, the clipping ratio of the activation range and of the weight range are searched in
    turn (``search_rounds`` times) over ``search_candidates`` ratios in ``[search_min, 1]``,
    minimising the error of the layer's output against the fp32 output on calibration inputs.

    Attributes:
        w_bits: weight bits, 2..8 (values on a ``w_bits`` grid, stored and multiplied as int8).
        a_bits: activation bits; 8 (the x86 int8 kernels take uint8 activations).
        calib_images: folder of calibration images (None: pass images to ``quantize_`` directly).
        num_calib: calibration images used (the first ``num_calib`` in sorted file-name order).
        search: ``"mse"`` (output mean squared error), ``"cosine"`` (1 - cosine similarity of the
            outputs), or ``"minmax"`` (no search: full observed ranges).
        search_candidates: clipping ratios tried per search step.
        search_min: smallest clipping ratio tried (1.0 = full range).
        search_rounds: alternating activation / weight search rounds.
        linear_granularity: ``"tensor"`` (one weight scale per linear layer, TinySAM) or ``"channel"``.
        fuse_activations: run a ReLU / GELU / Hardswish that directly follows a quantized layer
            inside that layer (oneDNN post-op, or in place), after checking on a calibration image
            that the fp32 model computes exactly the same with and without the fusion.
        exclude: module-name patterns (``fnmatch``, full names such as ``"image_encoder.neck.*"``)
            kept in fp32.
        samples_per_image: calibration rows (linear) / output pixels (conv) kept per layer and image.
        seed: seed of the calibration sub-sampling.
    """

    method: ClassVar[str] = "tinysam"

    w_bits: int = 8
    a_bits: int = 8
    calib_images: str | None = None
    num_calib: int = 8
    search: str = "mse"
    search_candidates: int = 16
    search_min: float = 0.3
    search_rounds: int = 2
    linear_granularity: str = "tensor"
    fuse_activations: bool = True
    exclude: tuple[str, ...] = ()
    samples_per_image: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        c = type(self).__name__
        _check(
            _is_int(self.w_bits) and 2 <= self.w_bits <= 8,
            c,
            f"w_bits must be an int in 2..8, not {self.w_bits!r}",
        )
        _check(
            self.a_bits == 8 and _is_int(self.a_bits),
            c,
            f"a_bits must be 8 (the int8 CPU kernels take uint8 activations), not {self.a_bits!r}",
        )
        _check_calibration(self, c)
        _check(
            self.search in ("mse", "cosine", "minmax"),
            c,
            f"search must be 'mse', 'cosine' or 'minmax', not {self.search!r}",
        )
        _check(
            _is_int(self.search_candidates) and self.search_candidates >= 2,
            c,
            f"search_candidates must be an int >= 2, not {self.search_candidates!r}",
        )
        _check(
            _is_num(self.search_min) and 0.0 < self.search_min <= 1.0,
            c,
            f"search_min must be in (0, 1], not {self.search_min!r}",
        )
        _check(
            _is_int(self.search_rounds) and self.search_rounds >= 1,
            c,
            f"search_rounds must be >= 1, not {self.search_rounds!r}",
        )
        _check(
            self.linear_granularity in ("tensor", "channel"),
            c,
            f"linear_granularity must be 'tensor' or 'channel', not {self.linear_granularity!r}",
        )
        _check(isinstance(self.fuse_activations, bool), c, "fuse_activations must be true or false")
        _check(
            isinstance(self.exclude, tuple) and all(isinstance(s, str) and s for s in self.exclude),
            c,
            f"exclude must be a list of non-empty module-name patterns, not {self.exclude!r}",
        )
        _check(
            _is_int(self.samples_per_image) and self.samples_per_image >= 16,
            c,
            f"samples_per_image must be an int >= 16, not {self.samples_per_image!r}",
        )
        _check(_is_int(self.seed), c, f"seed must be an int, not {self.seed!r}")


@dataclass(frozen=True)
class OrtStaticConfig(QuantConfig):
    """ONNX Runtime static quantization of the exported image encoder (QDQ format by default).

    Attributes:
        per_channel: one weight scale per output channel (True) or per tensor.
        calib_images: folder of calibration images (None: pass images directly).
        num_calib: calibration images used (first ``num_calib`` in sorted order).
        calibrate_method: ``"minmax"``, ``"entropy"`` or ``"percentile"`` (onnxruntime's calibrators).
        quant_format: ``"qdq"`` (QuantizeLinear/DequantizeLinear pairs) or ``"qoperator"``.
        activation_type: ``"uint8"`` or ``"int8"``.
        weight_type: ``"int8"`` or ``"uint8"``.
        op_types: ONNX op types to quantize (empty: onnxruntime's default list).
        reduce_range: 7-bit weights (for CPUs without VNNI, where 8-bit can overflow).
    """

    method: ClassVar[str] = "ort-static"

    per_channel: bool = True
    calib_images: str | None = None
    num_calib: int = 8
    calibrate_method: str = "minmax"
    quant_format: str = "qdq"
    activation_type: str = "uint8"
    weight_type: str = "int8"
    op_types: tuple[str, ...] = ("Conv", "MatMul", "Gemm")
    reduce_range: bool = False

    def __post_init__(self) -> None:
        c = type(self).__name__
        _check(isinstance(self.per_channel, bool), c, "per_channel must be true or false")
        _check_calibration(self, c)
        _check(
            self.calibrate_method in ("minmax", "entropy", "percentile"),
            c,
            f"calibrate_method must be 'minmax', 'entropy' or 'percentile', not {self.calibrate_method!r}",
        )
        _check(
            self.quant_format in ("qdq", "qoperator"),
            c,
            f"quant_format must be 'qdq' or 'qoperator', not {self.quant_format!r}",
        )
        _check(
            self.activation_type in ("uint8", "int8"),
            c,
            f"activation_type must be 'uint8' or 'int8', not {self.activation_type!r}",
        )
        _check(
            self.weight_type in ("int8", "uint8"),
            c,
            f"weight_type must be 'int8' or 'uint8', not {self.weight_type!r}",
        )
        _check(
            isinstance(self.op_types, tuple) and all(isinstance(s, str) and s for s in self.op_types),
            c,
            "op_types must be a list of ONNX op type names",
        )
        _check(isinstance(self.reduce_range, bool), c, "reduce_range must be true or false")


@dataclass(frozen=True)
class OrtDynamicConfig(QuantConfig):
    """ONNX Runtime dynamic quantization of the exported image encoder (weights int8 offline,
    activations quantized per call from their observed range; no calibration images).

    Attributes:
        per_channel: one weight scale per output channel.
        weight_type: ``"int8"`` or ``"uint8"``.
        op_types: ONNX op types to quantize (``MatMul``/``Gemm``; ``Conv`` becomes ConvInteger).
        reduce_range: 7-bit weights (for CPUs without VNNI).
    """

    method: ClassVar[str] = "ort-dynamic"

    per_channel: bool = False
    weight_type: str = "int8"
    op_types: tuple[str, ...] = ("MatMul", "Gemm")
    reduce_range: bool = False

    def __post_init__(self) -> None:
        c = type(self).__name__
        _check(isinstance(self.per_channel, bool), c, "per_channel must be true or false")
        _check(
            self.weight_type in ("int8", "uint8"),
            c,
            f"weight_type must be 'int8' or 'uint8', not {self.weight_type!r}",
        )
        _check(
            isinstance(self.op_types, tuple) and all(isinstance(s, str) and s for s in self.op_types),
            c,
            "op_types must be a list of ONNX op type names",
        )
        _check(isinstance(self.reduce_range, bool), c, "reduce_range must be true or false")


#: method name -> config class.
METHODS: dict[str, type[QuantConfig]] = {
    cls.method: cls for cls in (TinySamPTQConfig, OrtStaticConfig, OrtDynamicConfig)
}


def config_from_dict(data: dict[str, Any]) -> QuantConfig:
    """The config a :meth:`QuantConfig.to_dict` dict describes (dispatch on its ``method``)."""
    if not isinstance(data, dict):
        raise ValueError(f"a quantization config is a JSON object, not {type(data).__name__}")
    method = data.get("method")
    if method not in METHODS:
        raise ValueError(f"unknown quantization method {method!r}; known: {sorted(METHODS)}")
    return METHODS[method].from_dict(data)


def config_from_json(text_or_path: str | Path) -> QuantConfig:
    """Reads a config from JSON text or from a ``.json`` file."""
    text = str(text_or_path)
    if not text.lstrip().startswith("{"):
        path = Path(text)
        try:
            text = path.read_text()
        except OSError as e:
            raise ValueError(f"cannot read quantization config {path}: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"quantization config is not valid JSON: {e}") from None
    return config_from_dict(data)
