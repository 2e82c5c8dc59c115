"""End-to-end runs: SIGKILL + exact resume, torchrun data parallelism (gloo), distillation modes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from leansam.train.distill import MODES, DistillConfig, distill
from leansam.train.runner import MetricsCSV
from leansam.train.train import TrainConfig, train

TINY = [
    "--model", "leansam_tiny", "--data", "synth:6:2", "--batch-size", "1", "--prompts-per-image", "2",
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
    assert 0 < state["step"] < steps
    subprocess.run(_cmd(killed, steps), check=True, env=_env(), capture_output=True)
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


def test_metrics_csv_drops_rows_after_checkpoint(tmp_path) -> None:
    p = tmp_path / "m.csv"
    log = MetricsCSV(p, 0)
    for s in range(5):
        log.write({"step": s, "loss": 1.0})
    log.close()
    MetricsCSV(p, 3).close()
    assert [r.split(",")[0] for r in p.read_text().splitlines()] == ["step", "0", "1", "2"]


@pytest.mark.parametrize("mode", MODES)
def test_distill_modes_run(tmp_path, mode) -> None:
    cfg = DistillConfig(
        out=str(tmp_path / mode), mode=mode, steps=1, batch_size=1, data="synth:3:1", progress=False,
        teacher="leansam_tiny_teacher", student="resnet:tiny_student", prompts_per_image=2, loss_res=64,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    last = distill(cfg)
    assert torch.isfinite(torch.tensor(last["loss"]))
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


def test_bad_config_is_an_input_error() -> None:
    with pytest.raises(ValueError):
        TrainConfig(steps=0)
    r = subprocess.run(
        [sys.executable, "-m", "leansam.cli", "distill", "--mode", "nope"], capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr.startswith("error:")
    _ = train  # the Python entry point is public
