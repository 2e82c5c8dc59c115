"""Output folders: checked and locked before any work, owned through a manifest, never mixed.

Commands whose outputs appear at the end stage them with :class:`OutputDir`::

    with OutputDir(args.out, overwrite=args.overwrite, owned_patterns=OWNED) as out:  # checks, locks
        write_json(out.path("masks.json"), ...)        # files go to a hidden staging folder
        save_step(out.folder("01_prune"))              # so do folders
    # on success the entries move into --out; on an exception (SIGINT, SIGTERM too) staging is removed

Commands that write into ``--out`` as they go (training checkpoints, dataset shards, the eval
cache) hold a :class:`RunFolder` for the run and :func:`claim` their names when they create it.

What both guarantee:

* **Only its own files.** ``dest/.leansam-outputs.json`` (the manifest) lists the entries (files
  and folders, with the files inside each folder) leansam wrote there. A run replaces or deletes
  only entries the manifest lists. A file leansam did not write that has one of the output names
  is refused before any work (``--overwrite`` lets it be replaced); a folder leansam did not write,
  or a leansam folder holding files it did not write, is never replaced or deleted, not even with
  ``--overwrite``. Other files are left alone.
* **One run per folder.** An exclusive lock per output folder (``fcntl.flock`` on a file in the
  temp directory, keyed by the resolved path) makes a second run fail at once, not mix files. The
  kernel drops the lock when its process dies, SIGKILL included.
* **One error line.** A dangling symlink, a file where a folder should be, a read-only folder or a
  full disk raise :class:`~leansam.io.InputError` / :class:`OutputError`, with nothing left behind.

What :class:`OutputDir` adds:

* **Nothing before the end.** Entries are written to a hidden staging folder next to the nearest
  existing folder on the way to ``dest``; ``dest`` and its missing parents are created only at
  commit. A new ``dest`` appears in one rename. Into an existing one each entry moves in one
  rename (a folder is swapped with its old version atomically where the system can), the ``.json``
  files and the manifest last; SIGINT and SIGTERM wait until the commit is done.
* **No stale staging.** The staging folder is named after ``dest``; a later run on the same
  ``dest`` (holding its lock, so no live run owns it) removes what a killed run left.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import hashlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
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


def check_output_file(path: str | Path) -> None:
    """Refuses, before any work, a single output file (``--json FILE``) that cannot be written:
    a folder, a dangling symlink, or a parent folder that cannot be created or written. The file
    the user named is then replaced atomically (:func:`leansam.io.atomic_path`).

    Raises:
        InputError: naming the problem (:class:`OutputError` for a read-only folder).
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise InputError(f"output file {path} is a dangling symlink (to {os.readlink(path)}); remove it")
    if path.is_dir():
        raise InputError(f"output file {path} is a folder")
    check_destination(path.absolute().parent)


def _key(dest: Path) -> str:
    return hashlib.sha256(str(dest.resolve()).encode()).hexdigest()[:32]


class FolderLock:
    """An exclusive, non-blocking lock on an output folder, released on :meth:`release` or exit.

    The lock file lives in ``$TMPDIR/leansam-locks/`` (named by the hash of the resolved path), so
    it neither needs the folder to exist nor leaves anything in it.
    """

    def __init__(self, dest: Path) -> None:
        import fcntl

        d = Path(tempfile.gettempdir()) / "leansam-locks"
        d.mkdir(mode=0o1777, exist_ok=True)
        self.path = d / f"{_key(dest)}.lock"
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


def _load(dest: Path) -> dict:
    try:
        data = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return data
    except (OSError, ValueError):
        pass
    return {}


def _names(values: object) -> set[str]:
    return {v for v in values if isinstance(v, str)} if isinstance(values, list) else set()


def read_manifest(dest: Path) -> set[str]:
    """Names of the entries leansam wrote in ``dest`` (empty when there is no readable manifest)."""
    return {n for n in _names(_load(dest).get("files")) if "/" not in n and n not in ("", ".", "..")}


def _folder_contents(dest: Path) -> dict[str, set[str]]:
    """Folder entries of the manifest with the files leansam wrote inside them (relative paths)."""
    folders = _load(dest).get("folders")
    return {str(k): _names(v) for k, v in folders.items()} if isinstance(folders, dict) else {}


def _files_under(folder: Path) -> set[str]:
    return {
        str((Path(root) / f).relative_to(folder))
        for root, dirs, files in os.walk(folder)
        for f in [*files, *(d for d in dirs if (Path(root) / d).is_symlink())]
    }


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def check_foreign(dest: Path, writes: Callable[[str], bool], overwrite: bool, in_place: bool = False) -> None:
    """Refuses entries of ``dest`` that a run writing the names ``writes`` accepts would replace
    but leansam did not write (see the module docstring).

    Args:
        in_place: the run writes into its folders without replacing them (:class:`RunFolder`), so
            folders the manifest lists count as leansam's whatever they hold.

    Raises:
        InputError: naming the foreign entries.
    """
    if not dest.is_dir():
        return
    ours, contents = read_manifest(dest), _folder_contents(dest)
    files, folders = [], []
    for p in sorted(dest.iterdir()):
        n = p.name
        if n == MANIFEST or n.startswith(_STAGE_PREFIX) or not writes(n):
            continue
        if not (p.is_dir() and not p.is_symlink()):
            if n not in ours:
                files.append(n)
        elif n not in ours or (not in_place and n not in contents):
            folders.append(f"{n}/")
        elif not in_place and (extra := sorted(_files_under(p) - contents[n])):
            folders.append(f"{n}/{extra[0]}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    if folders:
        raise InputError(
            f"{dest} holds {_shown(folders)}, not written by leansam; leansam would replace that folder "
            "and never deletes what it did not write, even with --overwrite. Move it away or choose "
            "another --out"
        )
    if files and not overwrite:
        raise InputError(
            f"{dest} holds {_shown(files)}, not written by leansam; leansam would replace "
            f"{'it' if len(files) == 1 else 'them'}. Choose another --out, or pass --overwrite"
        )


@contextlib.contextmanager
def _released_on_error(lock: FolderLock, dest: Path) -> Iterator[None]:
    """Releases ``lock`` when the block fails; an OSError becomes one :class:`OutputError`."""
    try:
        yield
    except OSError as e:
        lock.release()
        raise OutputError(describe_os_error(e, dest)) from None
    except BaseException:
        lock.release()
        raise


def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    return lambda n: any(fnmatch.fnmatchcase(n, p) for p in patterns)


def _write_manifest_file(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM arrive after the block (a commit is a few renames; none is cut short)."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> None:
    """Swaps the entries at ``a`` and ``b``: in one step with Linux ``renameat2(RENAME_EXCHANGE)``,
    else by moving ``b`` aside first (a moment without ``b``)."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is not None:
        if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(b))
    aside = a.with_name(a.name + ".old")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def _remove_stale_staging(dest: Path) -> None:
    """Removes staging folders of ``dest`` left by killed runs (the caller holds ``dest``'s lock)."""
    prefix = f"{_STAGE_PREFIX}{_key(dest)[:16]}-"
    places = {_nearest_existing(dest.absolute().parent)} | ({dest} if dest.is_dir() else set())
    for place in places:
        with contextlib.suppress(OSError):
            for p in place.iterdir():
                if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)


class OutputDir:
    """Stages a command's outputs and commits them into ``dest`` (see the module docstring).

    Args:
        dest: the output folder.
        overwrite: replace files with the names this run writes even when leansam did not write them.
        owned_patterns: glob patterns of the entry names this run may write; foreign entries
            matching them are refused up front (before any work), not only at commit.
        command: recorded in the manifest.

    Raises:
        InputError: see :func:`check_destination`, a lock held by another run, or foreign entries.
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
        with _released_on_error(self.lock, self.dest):
            check_foreign(self.dest, _matcher(owned_patterns), overwrite)
            _remove_stale_staging(self.dest)
            self.tmp = Path(
                tempfile.mkdtemp(
                    dir=anchor if anchor.is_dir() else anchor.parent,
                    prefix=f"{_STAGE_PREFIX}{_key(self.dest)[:16]}-",
                )
            )
            umask = os.umask(0o022)
            os.umask(umask)
            os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp's 0700 would become the new folder's mode

    def path(self, name: str) -> Path:
        """Where to write the output entry ``name`` (a plain name, no folders; a file, or a folder
        the caller creates)."""
        if "/" in name or name in ("", ".", "..", MANIFEST) or name.startswith(_STAGE_PREFIX):
            raise ValueError(f"output names are plain names, not {name!r}")
        return self.tmp / name

    def folder(self, name: str) -> Path:
        """Creates and returns the staged folder entry ``name``."""
        p = self.path(name)
        p.mkdir()
        return p

    def commit(self) -> None:
        """Moves the staged entries into ``dest``; raises :class:`OutputError` on a file-system error."""
        try:
            with _signals_deferred():
                try:
                    names = sorted(p.name for p in self.tmp.iterdir())
                    check_foreign(self.dest, set(names).__contains__, self.overwrite)
                    self._write_manifest(names)
                    if not os.path.lexists(self.dest):
                        self._commit_new()
                    else:
                        self._commit_into(names)
                finally:
                    self.discard()
        except OSError as e:
            raise OutputError(describe_os_error(e, self.dest)) from None

    def _write_manifest(self, names: list[str]) -> None:
        folders = {n: sorted(_files_under(self.tmp / n)) for n in names if (self.tmp / n).is_dir()}
        data = {"written_by": self.command, "files": names, "folders": folders}
        _write_manifest_file(self.tmp / MANIFEST, data)

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
        old, contents = read_manifest(self.dest), _folder_contents(self.dest)
        # Manifest-like files last, so that they never describe entries not yet in place.
        for name in sorted(names, key=lambda n: (n.endswith(".json"), n)):
            src, dst = self.tmp / name, self.dest / name
            dst_is_dir = dst.is_dir() and not dst.is_symlink()
            if not os.path.lexists(dst) or (not src.is_dir() and not dst_is_dir):
                os.replace(src, dst)
            else:  # the old entry ends up in the staging folder, removed with it
                _exchange(src, dst)
        for name in sorted(old - set(names)):
            p = self.dest / name
            if not (p.is_dir() and not p.is_symlink()):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            elif name in contents and _files_under(p) <= contents[name]:
                os.rename(p, self.tmp / f"{name}.old")
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


def temporaries(names: tuple[str, ...]) -> tuple[str, ...]:
    """Patterns of the temporary files leansam's atomic writers make for ``names`` (for cleanup)."""
    return tuple(p for n in names for p in (f".{n}.*.tmp", f"{n}.*.tmp", f"{n}.tmp"))


class RunFolder:
    """Holds an output folder that a long run writes in place (each file atomically), for the run.

    Checks ``dest`` (:func:`check_destination`), takes its lock, refuses foreign entries with the
    names the run writes, and deletes the temporary files that a killed run left of the names the
    manifest lists; creates nothing.
    The run calls :func:`claim` when it creates the folder.

    Args:
        dest: the output folder.
        owned_patterns: glob patterns of the names the run writes (files and folders).
        overwrite: let foreign files with those names be replaced.

    Raises:
        InputError: a bad destination, a lock held by another run, or foreign entries.
    """

    def __init__(self, dest: str | Path, owned_patterns: tuple[str, ...], overwrite: bool = False) -> None:
        self.dest = Path(dest)
        check_destination(self.dest)
        self.lock = FolderLock(self.dest)
        with _released_on_error(self.lock, self.dest):
            check_foreign(self.dest, _matcher(owned_patterns), overwrite, in_place=True)
            if self.dest.is_dir():  # temporaries of the names this folder's manifest claims
                junk = _matcher(temporaries(tuple(read_manifest(self.dest))))
                for p in self.dest.iterdir():
                    if junk(p.name) and p.is_file():
                        p.unlink()

    def release(self) -> None:
        """Releases the lock (idempotent)."""
        self.lock.release()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.release()


def claim(dest: str | Path, names: tuple[str, ...], command: str) -> None:
    """Records ``names`` (entries a run writes in place) in the manifest of the existing ``dest``,
    before the run writes them, so that a resumed run knows them as its own."""
    dest = Path(dest)
    data = _load(dest)
    have = read_manifest(dest)
    if set(names) <= have:
        return
    data.update(written_by=command, files=sorted(have | set(names)))
    _write_manifest_file(dest / MANIFEST, data)
