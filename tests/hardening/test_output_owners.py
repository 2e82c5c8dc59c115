"""Ownership across commands: files leansam did not write are never deleted (not even with
--overwrite), a clash with an output name is refused before any work, one run per folder, and a
run killed with SIGKILL leaves nothing that blocks or pollutes the next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leansam.outputs import MANIFEST

from .conftest import REPO, assert_error, cli
from .output_cases import CASES, staging, tree

ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _run(name: str, out: Path, ctx: dict, capsys, *extra) -> tuple[int, str]:
    code, _, err = cli([*CASES[name].args(out, ctx), *extra], capsys)
    return code, err


@pytest.mark.parametrize("name", sorted(CASES))
def test_files_leansam_did_not_write_survive_runs_and_overwrite(name, case_inputs, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "sub" / "x.json").write_text("mine too")
    for extra in ((), ("--overwrite",)):
        code, err = _run(name, out, case_inputs, capsys, *extra)
        assert code == 0, err
        assert (out / "notes.txt").read_text() == "mine" and (
            out / "sub" / "x.json"
        ).read_text() == "mine too"
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert "notes.txt" not in listed and "sub" not in listed
    assert not staging(tmp_path)


def _output_names(name: str, ctx: dict, tmp_path: Path, capsys) -> tuple[list[str], list[str]]:
    """(files, folders) that ``name`` writes, from a run into a scratch folder."""
    scratch = tmp_path / "scratch"
    code, err = _run(name, scratch, ctx, capsys)
    assert code == 0, err
    names = json.loads((scratch / MANIFEST).read_text())["files"]
    return [n for n in names if not (scratch / n).is_dir()], [n for n in names if (scratch / n).is_dir()]


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_foreign_file_with_an_output_name_is_refused_before_any_work(name, case_inputs, tmp_path, capsys):
    files, _ = _output_names(name, case_inputs, tmp_path, capsys)
    out = tmp_path / "out"
    out.mkdir()
    (out / files[0]).write_text("the user's own file")
    code, err = _run(name, out, case_inputs, capsys)
    line = assert_error(code, err, f"{files[0]}, not written by leansam")
    assert err.strip() == line, "refused after doing work"
    assert sorted(p.name for p in out.iterdir()) == [files[0]]
    code, err = _run(name, out, case_inputs, capsys, "--overwrite")  # the user said so: replaced
    assert code == 0, err
    assert (out / files[0]).read_bytes() != b"the user's own file"


@pytest.mark.parametrize("name", ["compress", "compress --sweep", "data synth"])
def test_folders_with_foreign_files_are_never_replaced(name, case_inputs, tmp_path, capsys):
    _, folders = _output_names(name, case_inputs, tmp_path, capsys)
    out = tmp_path / "out"
    (out / folders[0]).mkdir(parents=True)
    (out / folders[0] / "notes.txt").write_text("a foreign folder")
    for extra in ((), ("--overwrite",)):
        code, err = _run(name, out, case_inputs, capsys, *extra)
        assert_error(code, err, f"{folders[0]}/, not written by leansam")
    assert tree(out) == {folders[0]: None, f"{folders[0]}/notes.txt": b"a foreign folder"}
    # leansam's own folder with a file the user added: kept, not replaced
    code, err = _run(name, tmp_path / "scratch", case_inputs, capsys)
    assert code == 0, err
    (tmp_path / "scratch" / folders[0] / "added.txt").write_text("added by the user")
    before = tree(tmp_path / "scratch")
    for extra in ((), ("--overwrite",)):
        code, err = _run(name, tmp_path / "scratch", case_inputs, capsys, *extra)
        assert_error(code, err, f"{folders[0]}/added.txt, not written by leansam")
    assert tree(tmp_path / "scratch") == before


@pytest.mark.parametrize("name", ["compress", "compress --sweep", "data synth"])
def test_a_rerun_replaces_its_own_folders(name, case_inputs, tmp_path, capsys):
    _, folders = _output_names(name, case_inputs, tmp_path, capsys)
    scratch = tmp_path / "scratch"
    marker = scratch / folders[0] / "stale.bin"
    marker.write_bytes(b"written by the earlier run")
    manifest = json.loads((scratch / MANIFEST).read_text())
    manifest["folders"][folders[0]].append("stale.bin")  # as if leansam had written it
    (scratch / MANIFEST).write_text(json.dumps(manifest))
    code, err = _run(name, scratch, case_inputs, capsys)
    assert code == 0, err
    assert not marker.exists() and not staging(tmp_path)


HOLD = (
    "import sys, time; from pathlib import Path; from leansam.outputs import FolderLock; "
    "FolderLock(Path(sys.argv[1])); print('locked', flush=True); time.sleep(120)"
)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_second_run_on_the_same_folder_is_refused(name, case_inputs, tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], env=ENV, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = _run(name, out, case_inputs, capsys)
        assert_error(code, err, f"another leansam run (pid {holder.pid}) is writing to {out}")
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()


def _synth(out: Path, n: int) -> list[str]:
    return [sys.executable, "-m", "leansam.cli", "data", "synth", "--n", str(n), "--out", str(out)]


@pytest.mark.parametrize("existing", [False, True], ids=["new folder", "existing output"])
def test_a_sigkilled_run_leaves_nothing_that_outlives_the_next_run(tmp_path, existing):
    out = tmp_path / "out"
    if existing:
        subprocess.run(_synth(out, 1), env=ENV, check=True, capture_output=True)
        (out / "mine.txt").write_text("the user's file")
    before = tree(out) if existing else {}
    proc = subprocess.Popen(_synth(out, 400), env=ENV, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:  # kill it mid-write
            if len([p for s in staging(tmp_path) for p in s.rglob("*.jpg")]) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert staging(tmp_path), "SIGKILL cannot be caught: the staging folder is left"
    assert {k: v for k, v in tree(out).items() if ".leansam-stage-" not in k} == before
    # the next run is neither blocked by the dead run's lock nor mixed with its staging
    subprocess.run(_synth(out, 1), env=ENV, check=True, capture_output=True, timeout=240)
    assert not staging(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST, "annotations.json", "images", *(["mine.txt"] if existing else [])]
    )
