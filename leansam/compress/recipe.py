"""Compression recipes for ``leansam compress --recipe RECIPE.yaml``: parsing and validation.

A recipe names the starting model, the fidelity gate's images and defaults, and a list of steps,
each a one-key mapping ``{KIND: {options..., gate: {thresholds}}}``::

    model: leansam_tiny_teacher:teacher.pt   # NAME, NAME:CKPT or a pruned model's folder
    gate:                                    # every step is compared with the starting model
      images: synth:8:7                      # synth:N[:SEED] or a folder of images
      prompts_per_image: 8
      everything: false
      min_box_iou: 0.8                       # default thresholds (leansam compare's)
    steps:
      - distil: {student: leansam_nano, mode: encoder, steps: 2000, data: "synth:4000:0"}
      - prune: {ratio: 0.5, importance: disturbed-taylor, recovery_steps: 500, gate: {min_box_iou: 0.75}}
      - quantize: {method: tinysam, calib: "synth:8:7"}
      - export: {int8: static}

Step options: ``distil``: :class:`~leansam.train.distill.DistillConfig` fields but ``out`` /
``teacher`` / ``resume`` (``student`` required; the teacher is the current model); ``prune``:
:class:`~leansam.prune.PruneConfig` fields (``ratio`` required); ``quantize``: a
:mod:`leansam.compress.config` method and its fields, ``calib`` (``synth:N[:SEED]`` or a folder) for
the methods that calibrate; ``export``: ``int8`` = ``none`` (float ONNX) / ``static`` / ``dynamic``
(ONNX Runtime int8 encoder), ``calib`` for ``static``. ``gate``: any
:class:`~leansam.fidelity.CompareConfig` threshold, overriding the recipe's defaults.

Type rules: ``distil`` and ``prune`` need a float PyTorch model (no quantize or export before
them); after ``quantize`` only ``export`` may follow, and it exports the last float model (a
PyTorch int8 model has no ONNX form; with ``int8: static`` ONNX Runtime quantizes the export
instead, calibrated on the quantize step's images unless ``calib`` is given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fidelity import CompareConfig
from ..io import InputError

STEP_KINDS = ("distil", "prune", "quantize", "export")
_GATE_SETTINGS = ("images", "max_images", "prompts_per_image", "everything", "points_per_side")
_THRESHOLDS = ("min_box_iou", "min_point_iou", "min_cosine", "min_everything_miou", "max_count_mismatch")
_INT8 = ("none", "static", "dynamic")


@dataclass(frozen=True)
class Step:
    """One validated step: its kind, its config object (or options) and its gate thresholds."""

    kind: str
    config: Any
    gate: CompareConfig
    calib: str | None = None


@dataclass(frozen=True)
class Recipe:
    """A validated recipe (module docstring)."""

    model: str
    gate_images: str
    steps: tuple[Step, ...]
    source: dict[str, Any] = field(default_factory=dict, compare=False)


def read_yaml(path: str | Path, what: str = "recipe") -> Any:
    """The parsed YAML of ``path``; InputError (one line) when it cannot be read or parsed."""
    try:
        import yaml
    except ImportError:  # optional dependency
        raise InputError(f"{what} files need PyYAML: pip install 'leansam[compress]'") from None
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise InputError(f"{what} {path} is not valid YAML: {' '.join(str(e).split())}") from None


def load_recipe(path: str | Path) -> Recipe:
    """Reads and validates a YAML recipe; InputError with one line naming the problem."""
    return parse_recipe(read_yaml(path))


def parse_recipe(data: Any) -> Recipe:
    """Validates a recipe given as a mapping (module docstring)."""
    if not isinstance(data, dict):
        raise InputError("a recipe is a mapping with model, gate and steps")
    unknown = sorted(set(data) - {"model", "gate", "steps"})
    if unknown:
        raise InputError(f"recipe: unknown field(s) {unknown}; known: model, gate, steps")
    for key in ("model", "gate", "steps"):
        if key not in data:
            raise InputError(f"recipe: missing field {key!r}")
    if not isinstance(data["model"], str) or not data["model"]:
        raise InputError("recipe: model must be NAME, NAME:CKPT or a pruned model's folder")
    gate = data["gate"]
    if not isinstance(gate, dict) or not isinstance(gate.get("images"), str):
        raise InputError("recipe: gate must be a mapping with images (synth:N[:SEED] or a folder)")
    bad = sorted(set(gate) - set(_GATE_SETTINGS) - set(_THRESHOLDS))
    if bad:
        raise InputError(
            f"recipe gate: unknown field(s) {bad}; known: {sorted(_GATE_SETTINGS + _THRESHOLDS)}"
        )
    steps = data["steps"]
    if not isinstance(steps, list) or not steps:
        raise InputError("recipe: steps must be a non-empty list")
    parsed = tuple(_parse_step(i + 1, s, gate) for i, s in enumerate(steps))
    _check_order(parsed)
    return Recipe(data["model"], gate["images"], parsed, data)


def _parse_step(n: int, item: Any, defaults: dict[str, Any]) -> Step:
    if not isinstance(item, dict) or len(item) != 1:
        raise InputError(
            f"step {n}: a step is a one-key mapping {{KIND: {{options}}}}, KIND one of {STEP_KINDS}"
        )
    kind, opts = next(iter(item.items()))
    if kind not in STEP_KINDS:
        raise InputError(f"step {n}: unknown step {kind!r}; known: {', '.join(STEP_KINDS)}")
    opts = dict(opts or {})
    if not all(isinstance(k, str) for k in opts):
        raise InputError(f"step {n} ({kind}): option names must be strings")
    gate_opts = opts.pop("gate", None) or {}
    where = f"step {n} ({kind})"
    if not isinstance(gate_opts, dict) or set(gate_opts) - set(_THRESHOLDS):
        raise InputError(f"{where}: gate takes thresholds only: {', '.join(_THRESHOLDS)}")
    settings = {k: v for k, v in {**defaults, **gate_opts}.items() if k != "images"}
    try:
        gate = CompareConfig(**settings)
        config, calib = _STEP_PARSERS[kind](opts)
    except TypeError as e:
        raise InputError(f"{where}: {_type_error(e)}") from None
    except (ValueError, KeyError) as e:
        raise InputError(f"{where}: {str(e).strip(chr(34))}") from None
    return Step(kind, config, gate, calib)


def _type_error(e: TypeError) -> str:
    """``__init__() missing 1 required ... 'ratio'`` -> ``missing field 'ratio'``; likewise unknown ones."""
    text = str(e)
    if "required" in text:
        return "missing field " + text.split(":", 1)[-1].strip()
    if "unexpected keyword" in text:
        return "unknown field " + text.rsplit(" ", 1)[-1]
    return text


def _distil(opts: dict[str, Any]) -> tuple[Any, None]:
    from ..train.distill import DistillConfig

    for reserved in ("out", "teacher", "resume"):
        if reserved in opts:
            raise ValueError(f"{reserved!r} is set by the pipeline")
    if "student" not in opts:
        raise ValueError("missing field 'student'")
    return DistillConfig(out="<pipeline>", teacher="<pipeline>", resume=False, progress=False, **opts), None


def _prune(opts: dict[str, Any]) -> tuple[Any, None]:
    from ..prune.pruner import PruneConfig

    return PruneConfig(**opts), None


def _quantize(opts: dict[str, Any]) -> tuple[Any, str | None]:
    from .config import config_from_dict

    calib = opts.pop("calib", None)
    if "method" not in opts:
        raise ValueError("missing field 'method'")
    cfg = config_from_dict(opts)
    if hasattr(cfg, "calib_images") and calib is None:
        raise ValueError(f"method {cfg.method} calibrates: give calib (synth:N[:SEED] or a folder)")
    return cfg, calib


def _export(opts: dict[str, Any]) -> tuple[Any, str | None]:
    calib = opts.pop("calib", None)
    int8 = opts.pop("int8", "none")
    if opts:
        raise ValueError(f"unknown field(s) {sorted(opts)}; known: int8, calib")
    if int8 not in _INT8:
        raise ValueError(f"int8 must be one of {', '.join(_INT8)}, not {int8!r}")
    return int8, calib


_STEP_PARSERS = {"distil": _distil, "prune": _prune, "quantize": _quantize, "export": _export}


def _check_order(steps: tuple[Step, ...]) -> None:
    quantized = exported = False
    calib = None
    for n, s in enumerate(steps, 1):
        if s.kind in ("distil", "prune") and (quantized or exported):
            raise InputError(f"step {n} ({s.kind}) needs a float model: put it before quantize / export")
        if s.kind == "quantize" and (quantized or exported):
            raise InputError(f"step {n} (quantize): the model is already quantized or exported")
        if s.kind == "export":
            if exported:
                raise InputError(f"step {n} (export): the model is already exported")
            if s.config == "static" and (s.calib or calib) is None:
                raise InputError(f"step {n} (export): int8 static needs calib images")
            exported = True
        if s.kind == "quantize":
            quantized, calib = True, s.calib


def resolved_export_calib(steps: tuple[Step, ...], index: int) -> str | None:
    """The calibration images of export step ``index``: its own, else the last quantize step's."""
    if steps[index].calib:
        return steps[index].calib
    earlier = [s.calib for s in steps[:index] if s.kind == "quantize" and s.calib]
    return earlier[-1] if earlier else None
