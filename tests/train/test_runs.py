"""End-to-end runs: SIGKILL + exact resume, torchrun data parallelism (gloo), distillation modes."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from leansam.train.distill import MODES, DistillConfig, distill
from leansam.train.runner import DistInfo, MetricsCSV, RunConfig, fit
from leansam.train.train import TrainConfig, train

TINY = [
    "--model", "leansam_nano", "--data", "synth:6:2", "--batch-size", "1", "--prompts-per-image", "2",
    "--loss-res", "64", "--threads", "1", "--no-progress", "--ckpt-every", "2", "--lr", "1e-3",
]  # fmt: skip


def _cmd(out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "leansam.cli", "train", "--out", str(out), "--steps", str(steps), *TINY]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_sigkill_then_resume_is_bit_exact(tmp_path) -> None:
    steps = 8
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_cmd(ref, steps), check=True, env=_env(), capture_output=True)
    proc = subprocess.Popen(
        _cmd(killed, steps), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # kill once a checkpoint exists and the run has gone past it
            if (killed / "last.pt").is_file() and (killed / "metrics.csv").is_file():
                rows = (killed / "metrics.csv").read_text().strip().splitlines()
                if len(rows) >= 4:  # header + 3 steps: checkpoint at step 2, step 3 done
                    break
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        was_running = proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert was_running, "the run finished before it could be killed"
    assert not (killed / "model.pt").exists()
    state = torch.load(killed / "last.pt", weights_only=False)
    resumed_at = int(state["step"])
    assert 0 < resumed_at < steps
    before = (killed / "metrics.csv").read_text().splitlines()[: 1 + resumed_at]
    subprocess.run(_cmd(killed, steps), check=True, env=_env(), capture_output=True)
    # Only a resumed run keeps the killed run's rows up to the checkpoint byte for byte (their
    # wall-clock `seconds` column included); a run restarted from scratch rewrites them.
    assert (killed / "metrics.csv").read_text().splitlines()[: 1 + resumed_at] == before
    a, b = _weights(ref / "model.pt"), _weights(killed / "model.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = (killed / "metrics.csv").read_text().strip().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(steps))  # no duplicated steps
    assert (killed / "config.json").is_file()


@pytest.mark.slow
def test_torchrun_gloo_two_processes(tmp_path) -> None:
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561",
        "-m", "leansam.cli", "train", "--out", str(out), "--steps", "2", *TINY,
    ]  # fmt: skip
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "model.pt").is_file()
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + 2 steps, written by rank 0 only


def test_fit_resumes_from_the_checkpoint_state(tmp_path) -> None:
    """A resumed fit() runs only the remaining steps, from the weights, step and schedule in last.pt."""
    cfg = RunConfig(
        out=str(tmp_path), steps=4, ckpt_every=2, warmup=0, bf16=False, progress=False, device="cpu"
    )
    info = DistInfo(0, 1, torch.device("cpu"))

    def run(steps: int) -> tuple[nn.Linear, list[tuple[int, float]]]:
        torch.manual_seed(0)
        module, seen = nn.Linear(3, 1), []

        def step_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
            seen.append((step, float(module.bias.detach())))
            return module(torch.randn(2, 3)).pow(2).mean(), {}

        fit(dataclasses.replace(cfg, steps=steps), module, step_fn, info, module.state_dict)
        return module, seen

    run(2)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    state["module"]["bias"] = torch.tensor([7.0])  # a value no fresh run starts from
    torch.save(state, tmp_path / "last.pt")
    _, seen = run(4)
    assert [s for s, _ in seen] == [2, 3]
    assert seen[0][1] == 7.0
    resumed = torch.load(tmp_path / "last.pt", weights_only=False)
    assert resumed["step"] == 4 and resumed["scheduler"]["last_epoch"] == 4


def test_metrics_csv_drops_rows_after_checkpoint(tmp_path) -> None:
    p = tmp_path / "m.csv"
    log = MetricsCSV(p, 0)
    for s in range(5):
        log.write({"step": s, "loss": 1.0})
    log.close()
    MetricsCSV(p, 3).close()
    assert [r.split(",")[0] for r in p.read_text().splitlines()] == ["step", "0", "1", "2"]


SMALL_FPN = 'tiny_fpn:{"widths": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "stem_width": 16}'


def test_student_without_skip_features_is_refused_for_a_teacher_that_needs_them() -> None:
    import leansam
    from leansam.io import InputError
    from leansam.train.distill import build_student

    teacher = leansam.build_model("leansam_tiny_teacher", pretrained=False)
    with pytest.raises(InputError, match="skip features"):
        build_student("resnet:tiny_student", teacher)
    student = build_student(SMALL_FPN, teacher)
    assert student.mask_decoder.use_high_res_features


@pytest.mark.parametrize("mode", MODES)
def test_distill_modes_run(tmp_path, mode) -> None:
    cfg = DistillConfig(
        out=str(tmp_path / mode), mode=mode, steps=1, batch_size=1, data="synth:3:1", progress=False,
        teacher="leansam_tiny_teacher", student=SMALL_FPN, prompts_per_image=2, loss_res=64,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    last = distill(cfg)
    assert torch.isfinite(torch.tensor(last["loss"]))
    if mode == "encoder":  # the teacher's decoder reads skip features: they are distilled too
        assert last["skip_mse"] > 0 and last["loss"] > last["embed_mse"]
    state = _weights(tmp_path / mode / "model.pt")
    assert not any(k.startswith("head.") for k in state)  # the SAMI decoder is discarded
    assert any(k.startswith("image_encoder.") for k in state)


def test_teacher_cache_is_reused(tmp_path) -> None:
    import leansam
    from leansam.train.distill import TeacherCache

    teacher = leansam.build_model("leansam_tiny_teacher", pretrained=False)
    cache = TeacherCache(teacher, "leansam_tiny_teacher", str(tmp_path))
    x = torch.randn(2, 3, 256, 256)
    a = cache.embeddings(x)
    b = cache.embeddings(x)
    assert cache.misses == 2 and cache.hits == 2
    assert torch.allclose(a, b, atol=1e-2)  # second read comes from the fp16 cache
    assert len(list(cache.dir.glob("*.pt"))) == 2


def test_teacher_cache_id_follows_the_weights(tmp_path) -> None:
    """Cached embeddings are never served for other weights: the id follows the checkpoint's bytes,
    and a bare registry name is keyed by its pinned sha256."""
    from leansam.train.distill import teacher_weights_id
    from leansam.zoo.default import TINY_SHA256

    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"one")
    first = teacher_weights_id(f"leansam_tiny:{ckpt}")
    ckpt.write_bytes(b"two")
    assert teacher_weights_id(f"leansam_tiny:{ckpt}") != first
    folder = tmp_path / "pruned"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"one")
    first = teacher_weights_id(str(folder))
    (folder / "model.safetensors").write_bytes(b"two")
    assert teacher_weights_id(str(folder)) != first
    assert TINY_SHA256 in teacher_weights_id("leansam_tiny")


def test_bad_config_is_an_input_error() -> None:
    with pytest.raises(ValueError):
        TrainConfig(steps=0)
    r = subprocess.run(
        [sys.executable, "-m", "leansam.cli", "distill", "--mode", "nope"], capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr.startswith("error:")
    _ = train  # the Python entry point is public


def test_fit_resumes_a_weights_only_snapshot_on_the_schedule(tmp_path) -> None:
    """A last.pt with only step and weights (a committed snapshot) continues at its step, from its
    weights, at the learning rate the schedule gives that step."""
    cfg = RunConfig(steps=6, ckpt_every=2, warmup=3, lr=0.1, bf16=False, progress=False, device="cpu")
    info = DistInfo(0, 1, torch.device("cpu"))

    def run(out: Path, steps: int) -> list[tuple[int, float]]:
        torch.manual_seed(0)
        module, seen = nn.Linear(3, 1), []

        def step_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
            seen.append((step, float(module.bias.detach())))
            return module(torch.randn(2, 3)).pow(2).mean(), {}

        fit(dataclasses.replace(cfg, out=str(out), steps=steps), module, step_fn, info, module.state_dict)
        return seen

    run(tmp_path / "whole", 6)
    run(tmp_path / "part", 4)
    state = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    snap = {"step": 4, "module": {k: v.half() for k, v in state["module"].items()}}
    snap["module"]["bias"] = torch.tensor([7.0], dtype=torch.float16)
    (tmp_path / "fresh").mkdir()
    torch.save(snap, tmp_path / "fresh" / "last.pt")
    seen = run(tmp_path / "fresh", 6)
    assert [s for s, _ in seen] == [4, 5] and seen[0][1] == 7.0

    def lr_at(run_dir: str, step: int) -> str:
        rows = (tmp_path / run_dir / "metrics.csv").read_text().splitlines()
        return next(r.split(",")[1] for r in rows[1:] if r.split(",")[0] == str(step))

    assert lr_at("fresh", 4) == lr_at("whole", 4) and lr_at("fresh", 5) == lr_at("whole", 5)


def test_stop_after_ends_the_run_early_on_the_full_schedule(tmp_path) -> None:
    """``stop_after`` writes model.pt after that many steps, each at the LR of the full schedule."""
    cfg = RunConfig(steps=6, ckpt_every=4, warmup=1, lr=0.1, bf16=False, progress=False, device="cpu")
    info = DistInfo(0, 1, torch.device("cpu"))

    def run(out: Path, stop_after: int) -> list[str]:
        torch.manual_seed(0)
        module = nn.Linear(3, 1)

        def step_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
            return module(torch.randn(2, 3)).pow(2).mean(), {}

        fit(
            dataclasses.replace(cfg, out=str(out), stop_after=stop_after),
            module,
            step_fn,
            info,
            module.state_dict,
        )
        return [r.split(",")[1] for r in (out / "metrics.csv").read_text().splitlines()[1:]]

    whole, cut = run(tmp_path / "whole", 0), run(tmp_path / "cut", 3)
    assert len(whole) == 6 and cut == whole[:3]
    assert (tmp_path / "cut" / "model.pt").is_file()
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["step"] == 3
    with pytest.raises(ValueError, match="stop_after"):
        RunConfig(steps=6, stop_after=7)
