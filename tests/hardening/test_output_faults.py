"""File-system faults on every command that writes a folder: a dangling symlink or a file as
``--out``, a read-only ``--out`` or parent, a full disk. Each is one ``error:`` line, the old output
stays byte for byte, and no staging folder is left.

Read-only folders and full disks are real: a tmpfs is mounted for the test (remounted read-only,
or filled to the last byte). Without mount rights (not root), read-only falls back to permissions
and the full-disk cases are skipped; ``test_outputs.py`` covers a full disk with RLIMIT_FSIZE too.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from .conftest import assert_error, cli
from .output_cases import CASES, Case, staging, tree


class Volume:
    """A folder on its own tmpfs (root with mount rights), else a plain folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        self.mounted = os.geteuid() == 0 and shutil.which("mount") is not None
        if self.mounted:
            r = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(path)],
                capture_output=True,
                text=True,
            )
            self.mounted = r.returncode == 0

    def read_only(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)
        elif os.geteuid() == 0:
            pytest.skip("a read-only folder needs a read-only mount for root, and mount failed")
        else:
            for p in [self.path, *self.path.rglob("*")]:
                if p.is_dir() and not p.is_symlink():
                    p.chmod(stat.S_IRUSR | stat.S_IXUSR)

    def fill(self, free: int = 0) -> None:
        """Fills the file system to the last byte (writes then fail with ENOSPC), then frees ``free``."""
        if not self.mounted:
            pytest.skip("a full disk needs a tmpfs (mount rights)")
        fd = os.open(self.path / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for size in (1 << 20, 4096, 1):
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * size)
        finally:
            os.close(fd)
        probe = self.path / "probe"
        with pytest.raises(OSError) as e:
            probe.write_bytes(b"\0" * 4096)
        assert e.value.errno == errno.ENOSPC
        probe.unlink(missing_ok=True)
        if free:
            os.truncate(self.path / "filler", (self.path / "filler").stat().st_size - free)

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)
        else:
            for p in [self.path, *self.path.rglob("*")]:
                if p.is_dir() and not p.is_symlink():
                    p.chmod(0o755)


@pytest.fixture
def volume(tmp_path):
    v = Volume(tmp_path / "vol")
    try:
        yield v
    finally:
        v.close()


def _run(case: Case, out: Path, ctx: dict, capsys, rerun: bool = False) -> tuple[int, str]:
    args = (case.rerun if rerun and case.rerun else case.args)(out, ctx)
    code, _, err = cli(args, capsys)
    return code, err


@pytest.mark.parametrize("name", sorted(CASES))
def test_dangling_symlink_as_out(name, case_inputs, tmp_path, capsys):
    out = tmp_path / "link"
    out.symlink_to(tmp_path / "nowhere")
    before = tree(tmp_path)
    code, err = _run(CASES[name], out, case_inputs, capsys)
    assert_error(code, err, "is a dangling symlink")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name", sorted(CASES))
def test_file_where_the_folder_should_be(name, case_inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("the user's file")
    code, err = _run(CASES[name], out, case_inputs, capsys)
    assert_error(code, err, "exists and is not a folder")
    assert out.read_text() == "the user's file" and sorted(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("name", sorted(CASES))
def test_read_only_parent(name, case_inputs, volume, capsys):
    volume.read_only()
    code, err = _run(CASES[name], volume.path / "new" / "out", case_inputs, capsys)
    line = assert_error(code, err, "is not writable", status=1)
    assert err.strip() == line, "refused after doing work"
    assert list(volume.path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_read_only_out_keeps_the_old_output(name, case_inputs, volume, capsys):
    out = volume.path / "out"
    code, err = _run(CASES[name], out, case_inputs, capsys)
    assert code == 0, err
    before = tree(volume.path)
    volume.read_only()
    code, err = _run(CASES[name], out, case_inputs, capsys, rerun=True)
    line = assert_error(code, err, "is not writable", status=1)
    assert err.strip() == line, "refused after doing work"
    assert tree(volume.path) == before


@pytest.mark.parametrize("name", sorted(CASES))
def test_full_disk_keeps_the_old_output(name, case_inputs, volume, capsys):
    case = CASES[name]
    out = volume.path / "out"
    (volume.path / "mine.txt").write_text("the user's file")
    code, err = _run(case, out, case_inputs, capsys)
    assert code == 0, err
    kept = {k: v for k, v in tree(out).items() if case.kept is None or k in case.kept}
    volume.fill(case.free)
    code, err = _run(case, out, case_inputs, capsys, rerun=True)
    line = assert_error(code, err, "", status=1)
    assert "No space left on device" in line or "the disk is full" in line, line
    assert {k: v for k, v in tree(out).items() if k in kept} == kept
    if case.kept is None:
        assert tree(out) == kept  # nothing added either
    assert not staging(volume.path)
    assert (volume.path / "mine.txt").read_text() == "the user's file"
    assert json.loads((out / ".leansam-outputs.json").read_text())["files"]


def _compare(path: Path, ctx: dict) -> list:
    images = ctx["set"] / "images"
    return [
        "compare",
        "--reference",
        "leansam_nano",
        "--candidate",
        "leansam_nano",
        "--images",
        images,
        "--json",
        path,
    ]


def _bench_docs(path: Path, ctx: dict) -> list:
    return ["bench", "--render", ctx["bench"], "--out", ctx["root"] / "b", "--docs", path]


SINGLE_FILES = {"compare --json": _compare, "bench --docs": _bench_docs}


@pytest.mark.parametrize("fault", ["dangling symlink", "folder", "read-only folder"])
@pytest.mark.parametrize("name", sorted(SINGLE_FILES))
def test_single_output_files_are_checked_before_any_work(name, fault, case_inputs, volume, capsys):
    path = volume.path / "report.json"
    if fault == "dangling symlink":
        path.symlink_to(volume.path / "nowhere")
        pattern, status = "is a dangling symlink", 2
    elif fault == "folder":
        path.mkdir()
        pattern, status = "is a folder", 2
    else:
        pattern, status = "is not writable", 1
        volume.read_only()
    before = tree(volume.path)
    code, _, err = cli(SINGLE_FILES[name](path, case_inputs), capsys)
    line = assert_error(code, err, pattern, status)
    assert err.strip() == line, "refused after doing work"
    assert tree(volume.path) == before
