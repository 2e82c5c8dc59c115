"""The recipe of the bundled default model ``leansam_tiny`` (run by ``scripts/train_default.sh``).

``leansam_tiny`` (:class:`leansam.models.tiny_fpn.TinyFPNEncoder` + the shared prompt encoder and
mask decoder with SAM 2's high-resolution skip features) is trained directly on the ground-truth
masks of rendered synthetic scenes with SAM's promptable-segmentation loss, in segments
(:data:`SEGMENTS`) that each resume exactly from ``<root>/<segment>/last.pt``; a new segment
starts from the previous one's weights, or from the bundled weights (``--from-asset``) on a
machine that no longer has the previous run folder. The newest segment's weights are committed
at the end of each working session (``snapshot``); on a machine without the run folder, ``train``
continues the segment from them (fresh optimizer moments, same schedule and data order).

Stages::

    python -m leansam.train.recipe train --root runs/tiny2     # the first unfinished segment
    python -m leansam.train.recipe snapshot --root runs/tiny2  # -> weights/leansam_tiny/<segment>.pt
    python -m leansam.train.recipe eval --root runs/tiny2      # -> docs/results/default_model.json
    python -m leansam.train.recipe eval --only everything      # its segment-everything part only
    python -m leansam.train.recipe eval --only training        # its training log only
    python -m leansam.train.recipe probe --root runs/tiny2     # newest checkpoint -> training_probes.json
    python -m leansam.train.recipe calibrate-everything        # -> docs/results/everything_calibration.json
    python -m leansam.train.recipe export --root runs/tiny2    # -> leansam/assets/leansam_tiny.pt
    python -m leansam.train.recipe docs                        # results -> docs/training.md
    python -m leansam.train.recipe curves --root runs/tiny2    # -> docs/curve_<segment>.png

Evaluation sets (fixed): held-out ``synth:200:1000:rich`` (the training style, never trained on:
training uses seeds 0 to 8), out-of-style ``synth:100:2000:ood`` (other shape mix, textures and
layouts), and ``synth:100:1000:tiny`` (the easier set of earlier versions of the model).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from ..io import atomic_path, one_line
from .calibrate import RESULTS as CALIBRATION
from .calibrate import add_calibrate_args, calibrate_stage, everything_section
from .curves import read_metrics
from .data import RICH_SYNTH, SynthSource, open_source
from .evaluate import encoder_latency, evaluate_gt, mask_resolution_limit
from .example import example_objects
from .runner import save_atomic, write_json_file
from .segments import BUNDLED_SEGMENT, SEGMENTS, Segment
from .train import TrainConfig, train

ASSET = "leansam_tiny.pt"
#: Committed weights of the newest segment (``snapshot`` stage): ``<seg>.pt`` + ``<seg>.metrics.csv``.
SNAPSHOTS = Path("weights/leansam_tiny")
RESULTS = Path("docs/results/default_model.json")

EVAL_SEED = 1000

#: Evaluation sets: name -> data spec.
EVAL_SETS = {
    "held_out": f"synth:200:{EVAL_SEED}:rich",
    "out_of_style": "synth:100:2000:ood",
    "tiny": "synth:100:1000:tiny",
}


def held_out(n: int = 200) -> SynthSource:
    """The first ``n`` images of the held-out set (``RICH_SYNTH``, seed 1000; training uses seeds 0 to 8)."""
    return SynthSource(n, EVAL_SEED, RICH_SYNTH)


def segment_config(
    root: str, seg: Segment, init: str | None, device: str = "auto", data_workers: int = 0
) -> TrainConfig:
    """The :class:`TrainConfig` of one segment; ``init`` is the checkpoint it starts from (None: fresh).
    ``device`` and ``data_workers`` say where it runs, not what it computes."""
    return TrainConfig(
        out=f"{root}/{seg.name}",
        model=seg.model if init is None else f"{seg.model}:{init}",
        data=seg.data,
        steps=seg.steps,
        stop_after=seg.stop_after,
        batch_size=seg.batch_size,
        batched_decode=seg.batched_decode,
        background_clicks=seg.background_clicks,
        lr=seg.lr,
        warmup=seg.warmup,
        decoder_warmup=seg.decoder_warmup,
        ckpt_every=25,
        prompts_per_image=seg.prompts_per_image,
        box_fraction=0.5,
        correction_rounds=seg.correction_rounds,
        loss_res=256,
        threads=2,
        seed=seg.seed,
        device=device,
        data_workers=data_workers,
    )


def asset_path() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / ASSET


def _finished(root: str, seg: Segment) -> bool:
    return (Path(root) / seg.name / "model.pt").is_file()


def _todo(root: str, from_asset: bool) -> list[int]:
    """Indices of the segments left to train. Without the earlier run folders (``from_asset``), the
    segments after the bundled one and after the last finished one are left, and the latest of them
    that can be resumed (a ``last.pt`` or a committed snapshot) comes first."""
    done = [k for k, seg in enumerate(SEGMENTS) if _finished(root, seg)]
    todo = [k for k in range(len(SEGMENTS)) if k not in done]
    if from_asset:
        floor = max([[seg.name for seg in SEGMENTS].index(BUNDLED_SEGMENT), *done])
        todo = [k for k in todo if k > floor]
        resumable = [
            k
            for k in todo
            if (Path(root) / SEGMENTS[k].name / "last.pt").is_file()
            or (SNAPSHOTS / f"{SEGMENTS[k].name}.pt").is_file()
        ]
        todo = [k for k in todo if k >= resumable[-1]] if resumable else todo
    return todo


def train_stage(
    root: str, from_asset: bool = False, device: str = "auto", data_workers: int = 0
) -> str | None:
    """Runs (or resumes) the first unfinished segment; returns its name (None: all finished)."""
    todo = _todo(root, from_asset)
    if not todo:
        return None
    k = todo[0]
    seg = SEGMENTS[k]
    init = None
    if k > 0:
        prev = Path(root) / SEGMENTS[k - 1].name / "model.pt"
        init = str(prev) if prev.is_file() or not from_asset else str(asset_path())
    elif from_asset:
        init = str(asset_path())
    if restore_snapshot(root, seg):  # its weights replace init's when the run resumes
        init = str(asset_path())
    if seg.grow:  # a resumed run needs no start weights: last.pt's replace them
        resuming = (Path(root) / seg.name / "last.pt").is_file()
        init = None if resuming or init is None else grown_init(root, k, init)
    train(segment_config(root, seg, init, device, data_workers))
    return seg.name


def grown_init(root: str, k: int, init: str) -> str:
    """The start weights of segment ``k`` (with ``grow``): ``init`` (the previous segment's weights)
    in the previous segment's model, its encoder deepened to segment k's; written to
    ``<root>/<segment>.init.pt``, whose path is returned."""
    import leansam

    from ..models.tiny_fpn import deepen

    prev = load_recipe_model(init, SEGMENTS[k - 1].model)
    model = leansam.build_model(SEGMENTS[k].model, pretrained=False)
    prev.image_encoder = deepen(prev.image_encoder, model.image_encoder.config.depths)
    model.load_state_dict(prev.state_dict())  # strict: every other part is the same architecture
    dest = Path(root) / f"{SEGMENTS[k].name}.init.pt"
    save_atomic(model.state_dict(), dest)
    return str(dest)


def snapshot_stage(root: str, dest: Path | None = None) -> Path | None:
    """Copies the newest segment's weights (fp16, no optimizer state) and its metrics into ``dest``,
    to be committed: a machine without ``root`` continues the segment from them. The newest segment
    is the latest with a ``last.pt``: the running one, or one that has finished (its snapshot holds
    the final step, and the train stage then writes its ``model.pt`` without training). None: no
    segment with a ``last.pt``. ``dest`` defaults to :data:`SNAPSHOTS`."""
    dest = SNAPSHOTS if dest is None else dest
    for seg in reversed(SEGMENTS):
        run = Path(root) / seg.name
        if (run / "last.pt").is_file():
            return snapshot_run(run, seg.name, dest)
    return None


def snapshot_run(run: Path, name: str, dest: Path) -> Path:
    """``dest/<name>.pt`` (``run``'s last.pt as fp16 weights with its step) and
    ``dest/<name>.metrics.csv``; returns the weights' path."""
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    module = {k: v.half() if v.is_floating_point() else v for k, v in state["module"].items()}
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{name}.pt"
    save_atomic({"step": int(state["step"]), "module": module, "segment": name}, out)
    metrics = run / "metrics.csv"
    if metrics.is_file():
        _copy_file(metrics, dest / f"{name}.metrics.csv")
    return out


def _copy_file(src: Path, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def restore_snapshot(root: str, seg: Segment, src: Path | None = None) -> bool:
    """Starts ``seg``'s run folder from its committed snapshot (in ``src``, default :data:`SNAPSHOTS`)
    when the folder has no ``last.pt``."""
    src = SNAPSHOTS if src is None else src
    run, snap = Path(root) / seg.name, src / f"{seg.name}.pt"
    if (run / "last.pt").is_file() or not snap.is_file():
        return False
    _copy_file(snap, run / "last.pt")  # the runner resumes a weights-only last.pt
    metrics = src / f"{seg.name}.metrics.csv"
    if metrics.is_file():
        _copy_file(metrics, run / "metrics.csv")
    return True


def latest_weights(root: str) -> Path:
    """The newest weights of the recipe: the last segment's model.pt, or a running one's last.pt."""
    return _latest(root)[1]


def _latest(root: str) -> tuple[Segment, Path]:
    for seg in reversed(SEGMENTS):
        run = Path(root) / seg.name
        for name in ("model.pt", "last.pt"):
            if (run / name).is_file():
                return seg, run / name
    raise FileNotFoundError(f"no training run under {root} (run the train stage first)")


def load_run_file(path: str | Path) -> object:
    """``torch.load(path, weights_only=True)`` on CPU; a missing or unreadable file raises
    :class:`~leansam.checkpoints.CheckpointError` with a one-line message."""
    from ..checkpoints import CheckpointError, describe_load_error

    if not Path(path).is_file():
        raise CheckpointError(f"no weights file {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read weights {path}: {describe_load_error(e)}") from None


def run_file_weights(state: object) -> object:
    """The model state_dict inside a loaded run file: a ``last.pt`` or a snapshot holds it under
    ``module`` (beside ``step``); a ``model.pt`` is the state_dict itself."""
    return state["module"] if isinstance(state, dict) and "module" in state and "step" in state else state


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state_dict in a run's ``model.pt`` or ``last.pt`` or a snapshot (see :func:`load_run_file`)."""
    return run_file_weights(load_run_file(path))


def load_recipe_model(path: str | Path, name: str = "leansam_tiny", state: object = None):
    """``name`` (a model of the recipe) with the weights of a run file (see :func:`read_weights`), in
    eval mode; ``state``: the file already loaded (:func:`load_run_file`). Weights that do not fit
    raise :class:`~leansam.checkpoints.CheckpointError` listing the keys (strict, as every
    checkpoint leansam loads)."""
    import leansam

    from ..checkpoints import CheckpointError, load_checkpoint
    from ..registry import get_model_info

    weights = read_weights(path) if state is None else run_file_weights(state)
    if not isinstance(weights, dict):
        raise CheckpointError(f"weights {path} hold a {type(weights).__name__}, not a state_dict")
    model = leansam.build_model(name, pretrained=False)
    load_checkpoint(model, get_model_info(name), weights, path)
    return model.eval()


def training_log(root: str) -> list[dict]:
    """Per segment: steps done, images seen, wall and CPU hours, last losses (from metrics.csv)."""
    log = []
    for seg in SEGMENTS:
        path = Path(root) / seg.name / "metrics.csv"
        if not path.is_file():
            continue
        m = read_metrics(path)
        steps = _checkpointed_steps(path.parent, len(m["step"]))
        m = {k: v[:steps] for k, v in m.items()}
        cpu = m.get("cpu_seconds", [])
        tail = slice(max(0, steps - 100), steps)
        log.append(
            {
                "segment": seg.name,
                "data": seg.data,
                "steps_done": steps,
                "steps_planned": seg.stop_after or seg.steps,
                "images_seen": steps * seg.batch_size,
                "trained_on": seg.trained_on,
                "wall_hours": sum(m["seconds"]) / 3600,
                "cpu_hours_logged": sum(cpu) / 3600,
                "steps_with_cpu_logged": len(cpu),
                "loss_last100": sum(m["loss"][tail]) / len(m["loss"][tail]),
                "train_iou_r0_last100": _mean(m.get("iou_r0", [])[-100:]),
            }
        )
    return log


def _checkpointed_steps(run: Path, logged: int) -> int:
    """Steps whose weights exist: all logged ones of a finished run, else those up to ``last.pt``
    (rows a stopped run logged after its last checkpoint are redone on resume)."""
    if (run / "model.pt").is_file() or not (run / "last.pt").is_file():
        return logged
    return min(logged, int(torch.load(run / "last.pt", map_location="cpu", weights_only=True)["step"]))


def _mean(v: list[float]) -> float | None:
    return sum(v) / len(v) if v else None


def evaluate_stage(root: str, weights: str | None = None, n_everything: int = 20) -> dict:
    """mIoU on every set of :data:`EVAL_SETS`, segment-everything recall, encoder latency against
    MobileSAM's, the training log; written to ``docs/results/default_model.json``.

    ``weights``: a run file to evaluate instead of the bundled weights (what users get).
    """
    import leansam

    model = load_recipe_model(weights or asset_path())
    res: dict = {
        "command": f"python -m leansam.train.recipe eval --root {root}",
        "weights": weights or f"leansam/assets/{ASSET} (the bundled weights)",
        "sets": {
            name: {"spec": spec, **evaluate_gt(model, open_source(spec))} for name, spec in EVAL_SETS.items()
        },
    }
    res["everything"] = _everything(model, n_everything, res["command"])
    low = model.transform.encoder_size // 4
    res["mask_resolution_limit"] = {
        "low_res_side": low,
        "sides": mask_resolution_limit(open_source(EVAL_SETS["held_out"]), (low, 2 * low, 4 * low)),
    }
    mobile = leansam.build_model("mobile_sam", pretrained=False)
    t_model, t_mobile = encoder_latency(model, reps=20), encoder_latency(mobile, reps=5, warmup=1)
    res["latency_s"] = {
        "encoder": t_model,
        "mobile_sam_encoder": t_mobile,
        "ratio_to_mobile_sam": t_model / t_mobile,
        "threads": torch.get_num_threads(),
    }
    res["params"] = {
        "model": sum(p.numel() for p in model.parameters()),
        "image_encoder": sum(p.numel() for p in model.image_encoder.parameters()),
    }
    recorded = (
        json.loads(RESULTS.read_text(encoding="utf-8")).get("training", []) if RESULTS.is_file() else []
    )
    res["training"] = _merged_log(recorded, root)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_json_file(RESULTS, res)
    return res


def evaluate_everything_stage(weights: str | None = None, n_everything: int = 20) -> dict:
    """Re-measures only the segment-everything part of ``docs/results/default_model.json`` (the
    same weights; the other parts of the file are kept as they are)."""
    res = json.loads(RESULTS.read_text(encoding="utf-8"))
    if res["weights"] != (weights or f"leansam/assets/{ASSET} (the bundled weights)"):
        raise ValueError(f"{RESULTS} was measured on {res['weights']}, not on these weights")
    model = load_recipe_model(weights or asset_path())
    res["everything"] = _everything(
        model, n_everything, "python -m leansam.train.recipe eval --only everything"
    )
    write_json_file(RESULTS, res)
    return res["everything"]


def training_log_stage(root: str) -> list[dict]:
    """Re-reads only the training log of ``docs/results/default_model.json`` from the run folders
    under ``root``; a segment whose run folder this machine lacks keeps its recorded row."""
    res = json.loads(RESULTS.read_text(encoding="utf-8"))
    res["training"] = _merged_log(res.get("training", []), root)
    write_json_file(RESULTS, res)
    return res["training"]


def _merged_log(recorded: list[dict], root: str) -> list[dict]:
    """:func:`training_log` of ``root``, with the ``recorded`` rows of segments this machine did not run."""
    rows = {t["segment"]: t for t in recorded}
    rows.update({t["segment"]: t for t in training_log(root)})
    return [rows[s.name] for s in SEGMENTS if s.name in rows]


def _everything(model, n_everything: int, command: str) -> dict:
    held = open_source(EVAL_SETS["held_out"])
    ev = everything_section(model, held, n_everything, _example_image(), example_objects())
    return {"command": command, **ev}


def _example_image():
    from ..io import load_image

    return load_image(asset_path().parent / "example.jpg")


def export_stage(root: str, src: str | None = None, dest: str | None = None) -> str:
    """Writes the newest weights into the package as an fp16 state_dict; returns its sha256."""
    from ..checkpoints import sha256_file

    if src is None:
        seg, path = _latest(root)
        _check_bundled_pipeline(seg)
        src = str(path)
    state = read_weights(src)
    out = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    dest = dest or str(asset_path())
    save_atomic(out, dest)
    return sha256_file(dest)


def _check_bundled_pipeline(seg: Segment) -> None:
    """The bundled weights run in ``leansam_tiny``'s pipeline: a segment trained at another input
    size or with another architecture is exported only once the registry entry has them too."""
    import leansam

    from ..registry import get_model_info

    problems = []
    trained, bundled = get_model_info(seg.model).transform, get_model_info("leansam_tiny").transform
    if trained.encoder_size != bundled.encoder_size:
        problems.append(
            f"it trains at {trained.encoder_size} px but leansam_tiny runs at {bundled.encoder_size} px "
            f"(set TINY_TRANSFORM in leansam/zoo/default.py to {trained.encoder_size} px)"
        )
    shapes = [
        {k: v.shape for k, v in leansam.build_model(name, pretrained=False).state_dict().items()}
        for name in (seg.model, "leansam_tiny")
    ]
    differ = sorted(k for k in shapes[0].keys() | shapes[1].keys() if shapes[0].get(k) != shapes[1].get(k))
    if differ:
        problems.append(
            f"its weights do not fit leansam_tiny ({len(differ)} tensors differ, e.g. {differ[0]}; "
            f"build leansam_tiny as {seg.model} in leansam/zoo/default.py)"
        )
    if problems:
        raise ValueError(f"{seg.name} trains {seg.model}: " + "; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leansam.train.recipe")
    p.add_argument(
        "stage",
        choices=["train", "snapshot", "eval", "probe", "export", "docs", "curves", "calibrate-everything"],
    )
    p.add_argument("--root", default="runs/tiny2")
    p.add_argument(
        "--from-asset", action="store_true", help="start the next segment from the bundled weights"
    )
    p.add_argument(
        "--weights",
        default=None,
        help="eval: a run file instead of the bundled weights; probe: the file to probe (default: the newest)",
    )
    p.add_argument(
        "--only", choices=["everything", "training"], help="eval: re-measure only this part of the results"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="train: where to train")
    p.add_argument("--data-workers", type=int, default=0, help="train: processes preparing batches")
    add_calibrate_args(p)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.stage == "train":
        print(f"segment: {train_stage(a.root, a.from_asset, a.device, a.data_workers) or 'all finished'}")
    elif a.stage == "snapshot":
        print(f"snapshot: {snapshot_stage(a.root) or 'no segment with a last.pt'}")
    elif a.stage == "eval" and a.only == "everything":
        try:
            print(json.dumps(evaluate_everything_stage(a.weights), indent=2))
        except (OSError, ValueError) as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
    elif a.stage == "eval" and a.only == "training":
        print(json.dumps(training_log_stage(a.root), indent=2))
    elif a.stage == "eval":
        print(json.dumps(evaluate_stage(a.root, a.weights), indent=2))
    elif a.stage == "probe":
        from .probe import probe_stage

        try:
            print(json.dumps(probe_stage(a.root, a.weights), indent=2))
        except (OSError, ValueError, RuntimeError) as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
    elif a.stage == "calibrate-everything":
        print(json.dumps(calibrate_stage(a), indent=2))
    elif a.stage == "export":
        try:
            print(f"sha256 {export_stage(a.root)}")
        except (OSError, ValueError) as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
    elif a.stage == "docs":
        from .ablation import RESULTS as DISTILLATION
        from .probe import PROBES
        from .report import write_training_doc

        write_training_doc(RESULTS, Path("docs/training.md"), CALIBRATION, PROBES, DISTILLATION)
    else:
        from .curves import plot_runs

        plot_runs(a.root, "docs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
