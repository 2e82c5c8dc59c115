"""Output folders: staged, locked, owned, committed at the end. Every command writes through here.

::

    with OutputDir(args.out, overwrite=args.overwrite) as out:   # checks and locks, creates nothing
        write_json(out.path("masks.json"), ...)                  # files go to a hidden staging folder
    # on success they move into --out; on an exception (SIGINT, SIGTERM too) the staging is removed

What it guarantees:

* **Nothing before the end.** Files are written to a hidden staging folder next to the nearest
  existing folder on the way to ``dest``; ``dest`` and its missing parents are created only at
  commit. A new ``dest`` appears in one rename; into an existing one the files move one by one,
  the ``.json`` files and the manifest last.
* **Only its own files.** ``dest/.leansam-outputs.json`` (the manifest) lists the files leansam
  wrote there. A commit replaces a file only if the manifest lists it, and deletes only files of
  the previous run that the manifest lists and the new run does not write; any other file with a
  name the run writes is refused (``--overwrite`` replaces it). Other files are left alone.
* **One run per folder.** An exclusive lock per output folder (``fcntl.flock`` on a file in the
  temp directory, keyed by the resolved path) makes a second run fail at once, not mix files.
* **One error line.** A dangling symlink, a file where a folder should be, a read-only folder or a
  full disk raise :class:`~leansam.io.InputError` / :class:`OutputError`, with nothing left behind.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .io import InputError

MANIFEST = ".leansam-outputs.json"
_STAGE_PREFIX = ".leansam-stage-"


class OutputError(InputError):
    """The output could not be written (full disk, read-only folder, permissions)."""


def describe_os_error(e: OSError, dest: Path) -> str:
    """One sentence for an OSError met while writing ``dest``."""
    reason = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
    }.get(e.errno or 0, e.strerror or str(e))
    return f"cannot write the output to {dest}: {reason} ({e.filename or dest}); nothing was written"


def _nearest_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p):
        if p.parent == p:
            break
        p = p.parent
    return p


def check_destination(dest: Path) -> Path:
    """Refuses an output folder that cannot be one; returns its nearest existing ancestor (or itself).

    Raises:
        InputError: a dangling symlink, a file (or a file on the way to it), or a read-only folder.
    """
    if dest.is_symlink() and not dest.exists():
        raise InputError(f"output path {dest} is a dangling symlink (to {os.readlink(dest)}); remove it")
    if dest.exists() and not dest.is_dir():
        raise InputError(f"output path {dest} exists and is not a folder")
    anchor = _nearest_existing(dest.absolute())
    if anchor != dest.absolute() and (not anchor.is_dir() or (anchor.is_symlink() and not anchor.exists())):
        raise InputError(f"cannot create output folder {dest}: {anchor} is not a folder")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write the output to {dest}: {anchor} is not writable")
    return anchor


class FolderLock:
    """An exclusive, non-blocking lock on an output folder, released on :meth:`release` or exit.

    The lock file lives in ``$TMPDIR/leansam-locks/`` (named by the hash of the resolved path), so
    it neither needs the folder to exist nor leaves anything in it.
    """

    def __init__(self, dest: Path) -> None:
        import fcntl

        key = hashlib.sha256(str(dest.resolve()).encode()).hexdigest()[:32]
        d = Path(tempfile.gettempdir()) / "leansam-locks"
        d.mkdir(mode=0o1777, exist_ok=True)
        self.path = d / f"{key}.lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            raise InputError(
                f"another leansam run ({holder}) is writing to {dest}; wait for it to finish or "
                "choose another --out"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()}".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


def read_manifest(dest: Path) -> set[str]:
    """Names of the files leansam wrote in ``dest`` (empty when there is no readable manifest)."""
    try:
        data = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
        return {str(n) for n in data["files"] if isinstance(n, str) and "/" not in n}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


class OutputDir:
    """Stages a command's outputs and commits them into ``dest`` (see the module docstring).

    Args:
        dest: the output folder.
        overwrite: replace files with the names this run writes even when leansam did not write them.
        owned_patterns: glob patterns of the names this run may write; foreign files matching them
            are refused up front (before any work), not only at commit.
        command: recorded in the manifest.

    Raises:
        InputError: see :func:`check_destination`, a lock held by another run, or foreign files.
    """

    def __init__(
        self,
        dest: str | Path,
        overwrite: bool = False,
        owned_patterns: tuple[str, ...] = (),
        command: str = "leansam",
    ) -> None:
        self.dest = Path(dest)
        self.overwrite = overwrite
        self.command = command
        anchor = check_destination(self.dest)
        self.lock = FolderLock(self.dest)
        try:
            self._check_foreign(lambda n: any(fnmatch.fnmatchcase(n, p) for p in owned_patterns))
            self.tmp = Path(
                tempfile.mkdtemp(dir=anchor if anchor.is_dir() else anchor.parent, prefix=_STAGE_PREFIX)
            )
        except OSError as e:
            self.lock.release()
            raise OutputError(describe_os_error(e, self.dest)) from None
        except BaseException:
            self.lock.release()
            raise

    def path(self, name: str) -> Path:
        """Where to write the output file ``name`` (a plain file name, no folders)."""
        if "/" in name or name in ("", ".", "..", MANIFEST):
            raise ValueError(f"output names are plain file names, not {name!r}")
        return self.tmp / name

    def _check_foreign(self, writes: object) -> None:
        if self.overwrite or not self.dest.is_dir():
            return
        ours = read_manifest(self.dest)
        clash = sorted(
            p.name
            for p in self.dest.iterdir()
            if p.name != MANIFEST and p.name not in ours and writes(p.name)
        )
        if clash:
            shown = ", ".join(clash[:5]) + (f" and {len(clash) - 5} more" if len(clash) > 5 else "")
            raise InputError(
                f"{self.dest} holds {shown}, not written by leansam; leansam would replace "
                f"{'it' if len(clash) == 1 else 'them'}. Choose another --out, or pass --overwrite"
            )

    def commit(self) -> None:
        """Moves the staged files into ``dest``; raises :class:`OutputError` on a file-system error."""
        try:
            names = sorted(p.name for p in self.tmp.iterdir())
            self._check_foreign(set(names).__contains__)
            self._write_manifest(names)
            if not os.path.lexists(self.dest):
                self._commit_new()
            else:
                self._commit_into(names)
        except OSError as e:
            raise OutputError(describe_os_error(e, self.dest)) from None
        finally:
            self.discard()

    def _write_manifest(self, names: list[str]) -> None:
        data = {"written_by": self.command, "files": names}
        (self.tmp / MANIFEST).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    def _commit_new(self) -> None:
        created = []
        for parent in reversed(self.dest.absolute().parents):
            if not parent.exists():
                parent.mkdir()
                created.append(parent)
        try:
            os.rename(self.tmp, self.dest)
        except BaseException:
            for parent in reversed(created):
                with contextlib.suppress(OSError):
                    parent.rmdir()
            raise

    def _commit_into(self, names: list[str]) -> None:
        for name in names:
            target = self.dest / name
            if target.is_dir() and not target.is_symlink():
                raise InputError(f"{target} is a folder; leansam writes a file of that name there")
        old = read_manifest(self.dest)
        # Manifest-like files last, so that they never describe files not yet in place.
        for name in sorted(names, key=lambda n: (n.endswith(".json"), n)):
            os.replace(self.tmp / name, self.dest / name)
        for name in sorted(old - set(names)):
            with contextlib.suppress(FileNotFoundError):
                (self.dest / name).unlink()
        os.replace(self.tmp / MANIFEST, self.dest / MANIFEST)

    def discard(self) -> None:
        """Removes the staging folder and releases the lock (idempotent)."""
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.lock.release()

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
