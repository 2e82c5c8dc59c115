"""``leansam compress``: run a recipe (:mod:`.recipe`) step by step, gating each step's model.

Every step writes ``OUT/NN_KIND/`` and is followed by the fidelity gate
(:func:`leansam.fidelity.compare_models`) of its model against the *starting* model on the
recipe's gate images; the first failing gate stops the pipeline. ``OUT/report.json`` and
``OUT/report.md`` say what each step did and measured. Everything is staged and committed into
``OUT`` at the end (also when a gate fails) by :class:`leansam.outputs.OutputDir`: an error leaves
nothing, and files in ``OUT`` that leansam did not write are never replaced or deleted.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..io import InputError, torch_save
from .recipe import Recipe, Step, resolved_export_calib


@dataclasses.dataclass
class _State:
    """The pipeline's current model: a loadable spec (for teachers), the object, the last float model."""

    spec: str | None
    model: Any
    float_model: Any
    base: str


def gate_images(spec: str) -> list[np.ndarray]:
    """``synth:N[:SEED[:PRESET]]`` rendered in memory, or the images of a folder (H x W x 3 uint8 RGB)."""
    if spec.startswith("synth:"):
        from ..train.data import open_source

        source = open_source(spec)
        return [source[i].image for i in range(len(source))]
    from .calib import load_calibration

    return load_calibration(spec, 10**6).images


def step_folder(i: int, step: Step) -> str:
    """The name of step ``i``'s folder (``01_prune``; ``i`` counts from 0)."""
    return f"{i + 1:02d}_{step.kind}"


def run_recipe(
    recipe: Recipe,
    out: str | Path,
    log: Callable[[str], None] = lambda _m: None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Runs ``recipe`` into ``out`` through :class:`leansam.outputs.OutputDir`; returns the report
    (``passed``: every gate held). ``out`` is checked and locked before any work."""
    from ..outputs import OutputDir
    from ..prune.pruner import load_model_spec

    owned = ("report.json", "report.md", *(step_folder(i, s) for i, s in enumerate(recipe.steps)))
    staged = OutputDir(out, overwrite, owned, command="leansam compress")
    try:
        images = gate_images(recipe.gate_images)
        start, spec = load_model_spec(recipe.model)
        arch = getattr(start, "leansam_arch", None)
        state = _State(spec, start, start, arch["base"] if arch else start.name)
        report: dict[str, Any] = {"model": recipe.model, "gate_images": recipe.gate_images, "steps": []}
        report["passed"] = True
        for i, step in enumerate(recipe.steps):
            folder = staged.path(step_folder(i, step))
            t0 = time.perf_counter()
            log(f"step {i + 1}/{len(recipe.steps)}: {step.kind}")
            detail = _RUNNERS[step.kind](recipe, i, step, state, folder, log)
            gate = _gate(start, state.model, images, step, log)
            entry = {"step": i + 1, "kind": step.kind, "folder": folder.name, **detail, "gate": gate}
            entry["seconds"] = round(time.perf_counter() - t0, 1)
            report["steps"].append(entry)
            if not gate["passed"]:
                report["passed"] = False
                report["stopped_at"] = i + 1
                log(f"gate of step {i + 1} ({step.kind}) failed: {gate['failures']}; stopping")
                break
        staged.path("report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        staged.path("report.md").write_text(report_markdown(report))
    except BaseException:
        staged.discard()
        raise
    staged.commit()
    return _relocated(report, Path(out))


def _relocated(report: dict[str, Any], out: Path) -> dict[str, Any]:
    for s in report["steps"]:
        s["folder"] = str(out / s["folder"])
    return report


def _gate(start, model, images: list[np.ndarray], step: Step, log) -> dict[str, Any]:
    from ..fidelity import compare_models

    rep = compare_models(start, model, images, step.gate)
    means = {
        k: (None if getattr(rep, k) is None else round(getattr(rep, k).mean, 4))
        for k in ("box_iou", "point_iou", "cosine", "everything_miou", "count_mismatch")
    }
    checks = [dataclasses.asdict(c) for c in rep.checks]
    failures = [f"{c.name} {c.value} (needs {c.op} {c.threshold:g})" for c in rep.failures]
    log(f"  gate: box IoU {means['box_iou']}, point IoU {means['point_iou']}, cosine {means['cosine']}")
    return {"passed": rep.passed, "means": means, "checks": checks, "failures": failures}


def _distil(recipe: Recipe, i: int, step: Step, state: _State, folder: Path, log) -> dict[str, Any]:
    import torch

    from ..prune.arch import encoder_config, save_pruned, set_arch
    from ..train.distill import build_student, distill

    if state.spec is None:
        raise InputError(f"step {i + 1} (distil): the current model cannot be loaded again as a teacher")
    run_dir = folder.parent / f".{folder.name}-run"
    cache = step.config.cache_dir if step.config.cache_dir is not None else ""
    cfg = dataclasses.replace(step.config, out=str(run_dir), teacher=state.spec, cache_dir=cache)
    last = distill(cfg)
    student = build_student(cfg.student, state.model, cfg.copy_decoder)
    student.load_state_dict(torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True))
    student.eval()
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        encoder_config(student.image_encoder)
    except ValueError:
        folder.mkdir(parents=True)
        with open(folder / "model.pt", "wb") as f:
            torch_save(student.state_dict(), f)
        name = cfg.student.partition(":")[0]
        spec = f"{name}:{folder / 'model.pt'}" if ":" not in cfg.student else None
    else:
        base = cfg.student if ":" not in cfg.student else state.base
        set_arch(student, base)
        save_pruned(student, folder, {"distilled_from": state.spec, "config": dataclasses.asdict(cfg)})
        spec, state.base = str(folder), base
    state.spec, state.model, state.float_model = spec, student, student
    return {"loss": last.get("loss"), "student": cfg.student}


def _prune(recipe: Recipe, i: int, step: Step, state: _State, folder: Path, log) -> dict[str, Any]:
    from ..prune.arch import save_pruned
    from ..prune.pruner import prune_model

    model, rep = prune_model(state.model, state.spec or "", step.config, log=log)
    save_pruned(model, folder, rep)
    state.spec, state.model, state.float_model = str(folder), model, model
    return {"encoder_params": [rep["encoder_params_before"], rep["encoder_params_after"]]}


def _calib_images(spec: str | None, n: int) -> list[np.ndarray] | None:
    return None if spec is None else gate_images(spec)[:n]


def _quantize(recipe: Recipe, i: int, step: Step, state: _State, folder: Path, log) -> dict[str, Any]:
    cfg = step.config
    calib = _calib_images(step.calib, getattr(cfg, "num_calib", 8))
    if cfg.method == "tinysam":
        from . import quantize_, save_quantized

        model = copy.deepcopy(state.model)
        rep = quantize_(model, cfg, calib, log=log)
        save_quantized(model, folder)
        state.model, state.spec = model, None
        return {"method": cfg.method, "summary": rep.summary()}
    from .ort import load_onnx_quantized, quantize_onnx

    quantize_onnx(state.model, cfg, folder, calib=calib, log=log)
    state.model, state.spec = load_onnx_quantized(folder), None
    return {"method": cfg.method}


def _export(recipe: Recipe, i: int, step: Step, state: _State, folder: Path, log) -> dict[str, Any]:
    from .config import OrtDynamicConfig, OrtStaticConfig

    if step.config == "none":
        from ..export.onnx import export_onnx
        from ..export.runtime import load_onnx_model

        export_onnx(state.float_model, folder)
        state.model = load_onnx_model(folder)
    else:
        from .ort import load_onnx_quantized, quantize_onnx

        calib = _calib_images(resolved_export_calib(recipe.steps, i), 8)
        cfg = OrtStaticConfig(calib_images="<pipeline>") if step.config == "static" else OrtDynamicConfig()
        quantize_onnx(state.float_model, cfg, folder, calib=calib, log=log)
        state.model = load_onnx_quantized(folder)
    state.spec = None
    return {"int8": step.config}


_RUNNERS = {"distil": _distil, "prune": _prune, "quantize": _quantize, "export": _export}


def report_markdown(report: dict[str, Any]) -> str:
    """The pipeline report as a Markdown table (one row per step run)."""
    lines = [
        f"# leansam compress: {report['model']}",
        "",
        f"Gate images: `{report['gate_images']}`; every step is compared with the starting model.",
        "",
        "| step | kind | box IoU | point IoU | cosine | gate |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in report["steps"]:
        m = s["gate"]["means"]
        verdict = "pass" if s["gate"]["passed"] else "FAIL: " + "; ".join(s["gate"]["failures"])
        lines.append(
            f"| {s['step']} | {s['kind']} | {m['box_iou']} | {m['point_iou']} | {m['cosine']} | {verdict} |"
        )
    tail = "all gates passed" if report["passed"] else f"stopped at step {report.get('stopped_at')}"
    return "\n".join([*lines, "", tail, ""])
