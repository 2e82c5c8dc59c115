"""Outputs: leansam never replaces or deletes what it did not write, one run per folder, SIGTERM and
file-system failures leave nothing behind, parents appear only at commit."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leansam.outputs import MANIFEST, OutputDir

from .conftest import EXAMPLE, REPO, assert_error, cli

ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _segment(out, *extra):
    return ["segment", EXAMPLE, "--box", "60,60,330,300", "--out", out, *extra]


def _staging_left(root: Path) -> list[Path]:
    return [p for p in root.rglob(".leansam-stage-*")]


def test_foreign_file_with_an_output_name_is_refused_then_overwritten_on_request(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "masks.json").write_text("the user's own masks.json")
    (out / "notes.txt").write_text("unrelated")
    code, _, err = cli(_segment(out), capsys)
    assert_error(code, err, "masks.json, not written by leansam")
    assert "--overwrite" in err
    assert (out / "masks.json").read_text() == "the user's own masks.json"
    code, _, err = cli(_segment(out, "--overwrite"), capsys)
    assert code == 0, err
    assert json.loads((out / "masks.json").read_text())["masks"]
    assert (out / "notes.txt").read_text() == "unrelated"
    assert not _staging_left(tmp_path)


def test_overwrite_never_deletes_foreign_files_it_does_not_write(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mask_007.png").write_text("the user's file with a leansam-like name")
    code, _, err = cli(_segment(out), capsys)
    assert_error(code, err, "mask_007.png, not written by leansam")
    code, _, err = cli(_segment(out, "--overwrite"), capsys)
    assert code == 0, err
    assert (out / "mask_007.png").read_text() == "the user's file with a leansam-like name"
    assert "mask_007.png" not in json.loads((out / MANIFEST).read_text())["files"]


def test_rerun_replaces_its_own_files_and_removes_its_stale_ones(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = cli(_segment(out, "--multimask"), capsys)
    assert code == 0, err
    assert {"mask_000.png", "mask_001.png", "mask_002.png"} <= {p.name for p in out.iterdir()}
    (out / "mine.txt").write_text("kept")
    code, _, err = cli(_segment(out), capsys)  # no --overwrite needed: the files are leansam's
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == [MANIFEST, "mask_000.png", "masks.json", "mine.txt", "overlay.png"]


@pytest.mark.parametrize("kind", ["dangling symlink", "file", "file on the way", "output name is a folder"])
def test_bad_output_paths(tmp_path, capsys, kind):
    if kind == "dangling symlink":
        out = tmp_path / "link"
        out.symlink_to(tmp_path / "nowhere")
        pattern = "is a dangling symlink"
    elif kind == "file":
        out = tmp_path / "out.png"
        out.write_text("x")
        pattern = "exists and is not a folder"
    elif kind == "file on the way":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "sub" / "out"
        pattern = "is not a folder"
    else:
        out = tmp_path / "out"
        (out / "masks.json").mkdir(parents=True)
        (out / MANIFEST).write_text(json.dumps({"files": ["masks.json"]}))
        pattern = "masks.json/, not written by leansam"
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    code, _, err = cli(_segment(out), capsys)
    assert_error(code, err, pattern)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing created, nothing moved


def test_parents_are_created_only_at_commit(tmp_path, capsys):
    out = tmp_path / "x" / "y" / "z"
    code, _, err = cli(_segment(out, "--checkpoint", tmp_path / "missing.pt"), capsys)
    assert_error(code, err, "checkpoint file not found")
    assert not (tmp_path / "x").exists()
    code, _, err = cli(_segment(out), capsys)
    assert code == 0, err
    assert (out / "masks.json").is_file()


def test_a_second_run_on_the_same_folder_fails_fast(tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from leansam.outputs import OutputDir; o = OutputDir(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)",
            str(out),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        t = time.perf_counter()
        code, _, err = cli(_segment(out), capsys)
        assert_error(code, err, f"another leansam run (pid {holder.pid}) is writing to {out}")
        assert time.perf_counter() - t < 10
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    code, _, err = cli(_segment(out), capsys)  # the lock went with the process
    assert code == 0, err


def test_concurrent_output_dirs_exclude_each_other(tmp_path):
    first = OutputDir(tmp_path / "a")
    with pytest.raises(Exception, match="another leansam run"):
        OutputDir(tmp_path / "a" / ".." / "a")  # the same folder, spelled differently
    other = OutputDir(tmp_path / "b")  # another folder is free
    first.discard()
    other.discard()
    OutputDir(tmp_path / "a").discard()


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_a_full_disk_is_one_error_line_with_nothing_left(tmp_path):
    """RLIMIT_FSIZE makes writes past 20 kB fail (EFBIG), as a full disk does (ENOSPC)."""
    out = tmp_path / "deep" / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "leansam.cli", *map(str, _segment(out))],
        env=ENV,
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        timeout=300,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and "File too large" in lines[0] and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no output, no parents, no staging folder


def test_sigterm_cleans_up_like_sigint(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "leansam.cli",
            "everything",
            str(EXAMPLE),
            "--points-per-side",
            "96",
            "--out",
            str(out),
        ],
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while not _staging_left(tmp_path) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert _staging_left(tmp_path), "the run never staged"
    time.sleep(1.0)  # inside the model by now
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "error: terminated after" in err and "Traceback" not in err
    assert not _staging_left(tmp_path) and not out.exists()


def test_eval_writes_nothing_before_it_can_fail(tiny_models, synth_set, tmp_path, capsys):
    out = tmp_path / "runs" / "eval"
    args = ["eval", "--model", "tiny_scripted", "--images", synth_set / "images"]
    args += [
        "--annotations",
        synth_set / "annotations.json",
        "--out",
        out,
        "--checkpoint",
        tmp_path / "none.pt",
    ]
    code, _, err = cli(args, capsys)
    assert code == 2, err
    assert not (tmp_path / "runs").exists()
