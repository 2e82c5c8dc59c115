"""ONNX Runtime int8 quantization of the exported image encoder (static QDQ or dynamic).

    from leansam.compress import OrtStaticConfig, quantize_onnx
    res = quantize_onnx("mobile_sam", OrtStaticConfig(), "ms_int8", calib="calib/images")
    model = load_onnx_quantized("ms_int8")          # an OnnxSam: leansam.SamPredictor(model) works

Steps: the model is exported with :func:`leansam.export.onnx.export_onnx` (fp32 encoder and
decoder); the encoder goes through onnxruntime's ``quant_pre_process`` (shape inference and graph
optimisation, as onnxruntime recommends before quantizing), then ``quantize_static`` (QDQ format,
per-channel int8 weights, activations calibrated with a data reader that feeds the calibration
images preprocessed by the model's own transform) or ``quantize_dynamic`` (int8 weights,
activation ranges computed per call). The prompt encoder / mask decoder stays fp32. The output
folder holds ``encoder.int8.onnx``, ``decoder.onnx`` and ``quantization.json``.

onnx / onnxruntime are optional: ``pip install 'leansam[onnx]'``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..io import InputError
from ..outputs import OutputDir
from .calib import CalibrationSet, load_calibration
from .config import OrtDynamicConfig, OrtStaticConfig, QuantConfig

__all__ = [
    "FORMAT",
    "OrtQuantResult",
    "load_onnx_quantized",
    "ort_encoder_variants",
    "quantize_encoder_file",
    "quantize_onnx",
    "read_onnx_manifest",
    "require_onnxruntime",
]

FORMAT = "leansam-quantized-onnx"
ENCODER_FILE = "encoder.int8.onnx"
DECODER_FILE = "decoder.onnx"
MANIFEST = "quantization.json"
HINT = "pip install 'leansam[onnx]'"


def require_onnxruntime() -> tuple[Any, Any]:
    """(onnx, onnxruntime) modules; ImportError with the install hint when they are missing."""
    try:
        import onnx
        import onnxruntime
        import onnxruntime.quantization
    except ImportError as e:
        raise ImportError(f"ONNX Runtime quantization needs onnx and onnxruntime: {HINT} ({e})") from e
    return onnx, onnxruntime


@dataclass
class OrtQuantResult:
    """What :func:`quantize_onnx` wrote.

    Attributes:
        directory: the output folder. encoder, decoder: the int8 encoder and the fp32 decoder.
        model: registry name. method, config: the quantization config.
        calibration: calibration image names (static only).
        ops: op-type counts of the quantized encoder graph.
        seconds: wall time of export + quantization.
    """

    directory: Path
    encoder: Path
    decoder: Path
    model: str
    method: str
    config: dict[str, Any]
    calibration: list[str] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def quantized_nodes(self) -> int:
        """Activation quantizers in the graph (QDQ QuantizeLinear, or DynamicQuantizeLinear)."""
        return self.ops.get("QuantizeLinear", 0) + self.ops.get("DynamicQuantizeLinear", 0)

    def summary(self) -> str:
        integer = {k: v for k, v in self.ops.items() if "Integer" in k or k.startswith("QLinear")}
        what = (
            f"{self.quantized_nodes} activation quantizers"
            + (f", integer ops {integer}" if integer else "")
            + (f", {len(self.calibration)} calibration images" if self.calibration else "")
            if self.quantized_nodes
            else f"NOTHING was quantized: the encoder has no {', '.join(self.config.get('op_types', []))} op"
        )
        return f"{self.model}: ONNX Runtime {self.method} encoder written to {self.encoder} ({what}, {self.seconds:.1f} s)"


class _Reader:
    """onnxruntime ``CalibrationDataReader``: one encoder feed per calibration image."""

    def __init__(self, input_name: str, inputs: list[np.ndarray]) -> None:
        self._it = iter([{input_name: x} for x in inputs])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_encoder_file(
    src: Path,
    dst: Path,
    config: QuantConfig,
    inputs: list[np.ndarray] | None = None,
) -> dict[str, int]:
    """Quantizes an fp32 encoder ONNX file ``src`` into ``dst``; returns the op-type counts of ``dst``.

    ``inputs``: encoder inputs (1 x 3 x S x S float32), needed by :class:`OrtStaticConfig`.
    """
    onnx, ort = require_onnxruntime()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    with tempfile.TemporaryDirectory() as d:
        pre = Path(d) / "pre.onnx"
        src_abs = Path(src).resolve()
        # When symbolic shape inference fails, onnxruntime dumps sym_shape_infer_temp.onnx and its
        # external-data files into the working directory: run it from the temporary folder.
        with contextlib.chdir(d):
            try:
                quant_pre_process(str(src_abs), str(pre))
            except Exception:  # onnxruntime raises a bare Exception when symbolic shape inference fails
                # (TinyViT's window padding): ONNX shape inference + graph optimisation still run
                quant_pre_process(str(src_abs), str(pre), skip_symbolic_shape=True)
        if isinstance(config, OrtStaticConfig):
            if not inputs:
                raise InputError("ONNX Runtime static quantization needs calibration images")
            sess = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            del sess

            class Reader(_Reader, CalibrationDataReader):
                pass

            quantize_static(
                str(pre),
                str(dst),
                Reader(name, inputs),
                quant_format=QuantFormat.QDQ if config.quant_format == "qdq" else QuantFormat.QOperator,
                per_channel=config.per_channel,
                activation_type=types[config.activation_type],
                weight_type=types[config.weight_type],
                calibrate_method={
                    "minmax": CalibrationMethod.MinMax,
                    "entropy": CalibrationMethod.Entropy,
                    "percentile": CalibrationMethod.Percentile,
                }[config.calibrate_method],
                op_types_to_quantize=list(config.op_types) or None,
                reduce_range=config.reduce_range,
            )
        elif isinstance(config, OrtDynamicConfig):
            quantize_dynamic(
                str(pre),
                str(dst),
                weight_type=types[config.weight_type],
                per_channel=config.per_channel,
                op_types_to_quantize=list(config.op_types) or None,
                reduce_range=config.reduce_range,
            )
        else:
            raise TypeError(
                f"quantize_encoder_file takes an ONNX Runtime config, not {type(config).__name__}"
            )
    return dict(Counter(n.op_type for n in onnx.load(str(dst), load_external_data=False).graph.node))


#: The files of an ONNX Runtime quantized folder (see leansam.outputs.OutputDir).
_OWNED = (ENCODER_FILE, DECODER_FILE, MANIFEST)


def _calibration(config: QuantConfig, calib: Any) -> CalibrationSet | None:
    """The static config's calibration images (``calib`` first, then the config's); None if dynamic."""
    if not isinstance(config, OrtStaticConfig):
        return None
    source = calib if calib is not None else config.calib_images
    if source is None:
        raise InputError("no calibration images: give a folder (calib_images / --calib) or a list of images")
    return load_calibration(source, config.num_calib)


def quantize_onnx(
    model_or_name: Any,
    config: QuantConfig,
    out_dir: str | Path,
    *,
    calib: str | Path | list[np.ndarray] | CalibrationSet | None = None,
    checkpoint: str | Path | None = None,
    trust_pickle: bool = False,
    log: Any = None,
    overwrite: bool = False,
) -> OrtQuantResult:
    """Exports ``model_or_name`` (a :class:`leansam.Sam` or a registry name) to ONNX and quantizes
    its image encoder with ONNX Runtime; writes ``out_dir`` atomically (module docstring).

    Raises:
        TypeError: not an ONNX Runtime config. ImportError: onnx / onnxruntime missing (with the
        install hint). leansam.io.InputError: no or unreadable calibration images.
    """
    if not isinstance(config, OrtStaticConfig | OrtDynamicConfig):
        raise TypeError(
            f"quantize_onnx takes OrtStaticConfig or OrtDynamicConfig, not {type(config).__name__} "
            "(PyTorch recipes: leansam.compress.quantize_)"
        )
    require_onnxruntime()
    from ..export.onnx import export_onnx

    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    cal = _calibration(config, calib)
    if isinstance(model_or_name, str):
        from ..checkpoints import load_model

        model, _ = load_model(model_or_name, checkpoint, trust_pickle=trust_pickle)
    else:
        model = model_or_name
    name = str(getattr(model, "name", "") or "custom")
    out = OutputDir(out_dir, overwrite, _OWNED, command="leansam quantize")
    try:
        with tempfile.TemporaryDirectory() as d:
            say(f"exporting {name} to ONNX")
            ex = export_onnx(model, Path(d) / "fp32")
            inputs = [x.detach().cpu().numpy() for x in cal.inputs(model)] if cal is not None else None
            say(f"quantizing the encoder ({config.method})")
            ops = quantize_encoder_file(ex.encoder, out.path(ENCODER_FILE), config, inputs)
            shutil.copyfile(ex.decoder, out.path(DECODER_FILE))
        manifest = {
            "format": FORMAT,
            "format_version": 1,
            "leansam_version": __version__,
            "model": name,
            "encoder": ENCODER_FILE,
            "decoder": DECODER_FILE,
            "config": config.to_dict(),
            "calibration": cal.names if cal is not None else [],
            "encoder_ops": ops,
        }
        out.path(MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    except BaseException:
        out.discard()
        raise
    out.commit()
    d = Path(out_dir)
    return OrtQuantResult(
        directory=d,
        encoder=d / ENCODER_FILE,
        decoder=d / DECODER_FILE,
        model=name,
        method=config.method,
        config=config.to_dict(),
        calibration=manifest["calibration"],
        ops=ops,
        seconds=time.perf_counter() - t0,
    )


def read_onnx_manifest(path: str | Path) -> dict[str, Any] | None:
    """The manifest of a folder written by :func:`quantize_onnx`, or None for any other folder."""
    f = Path(path) / MANIFEST
    try:
        data = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def load_onnx_quantized(path: str | Path, expect_model: str | None = None, **kwargs: Any) -> Any:
    """An :class:`leansam.export.runtime.OnnxSam` for a folder written by :func:`quantize_onnx`."""
    from ..checkpoints import CheckpointError

    manifest = read_onnx_manifest(path)
    if manifest is None:
        raise CheckpointError(f"{path} is not an ONNX Runtime quantized model folder (no valid {MANIFEST})")
    require_onnxruntime()
    from ..export.runtime import load_onnx_model

    p = Path(path)
    return load_onnx_model(
        p / manifest["encoder"], decoder=p / manifest["decoder"], expect_model=expect_model, **kwargs
    )


def ort_encoder_variants(
    name: str, model: Any, calib: CalibrationSet, tmp: Path, log: Any = None
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Benchmark helper: ONNX Runtime encoders of ``model`` as ``{label: fn(x tensor)}``.

    Labels: ``ort_fp32`` (the plain export), ``ort_int8_static`` (:class:`OrtStaticConfig`),
    ``ort_int8_dynamic`` (:class:`OrtDynamicConfig`). Each session uses as many intra-op threads
    as torch does when it is first called with that setting (sessions are cached per thread count).
    Returns (functions, info about each file, note).
    """
    require_onnxruntime()
    import onnxruntime as ort
    import torch

    from ..export.onnx import export_onnx

    say = log or (lambda _m: None)
    tmp.mkdir(parents=True, exist_ok=True)
    ex = export_onnx(model, tmp / "fp32", config=_encoder_only())
    inputs = [x.detach().cpu().numpy() for x in calib.inputs(model)]
    files = {"ort_fp32": ex.encoder}
    info: dict[str, Any] = {}
    for label, cfg in (("ort_int8_static", OrtStaticConfig()), ("ort_int8_dynamic", OrtDynamicConfig())):
        t0 = time.perf_counter()
        dst = tmp / f"{label}.onnx"
        ops = quantize_encoder_file(ex.encoder, dst, cfg, inputs)
        files[label] = dst
        info[label] = {"config": cfg.to_dict(), "ops": ops, "seconds": time.perf_counter() - t0}
        say(f"{name}: {label} quantized in {info[label]['seconds']:.1f} s")
    sessions: dict[tuple[str, int], Any] = {}

    def make(label: str):
        def run(x: torch.Tensor) -> Any:
            key = (label, torch.get_num_threads())
            if key not in sessions:
                so = ort.SessionOptions()
                so.intra_op_num_threads = key[1]
                so.inter_op_num_threads = 1
                sessions[key] = ort.InferenceSession(
                    str(files[label]), so, providers=["CPUExecutionProvider"]
                )
            s = sessions[key]
            return s.run(None, {s.get_inputs()[0].name: x.detach().numpy()})

        return run

    with torch.inference_mode():
        ref = model.encode_image(torch.from_numpy(inputs[0])).embed  # the graph's first output
    for label in files:
        y = torch.from_numpy(np.asarray(make(label)(torch.from_numpy(inputs[0]))[0]))
        info.setdefault(label, {})["embedding_cosine_vs_pytorch_fp32"] = float(
            torch.nn.functional.cosine_similarity(y.flatten(), ref.flatten(), dim=0)
        )
    return {label: make(label) for label in files}, info, ""


def _encoder_only():
    from ..export.onnx import OnnxExportConfig

    return OnnxExportConfig(decoder=False)
