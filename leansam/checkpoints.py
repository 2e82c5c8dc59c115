"""Checkpoints: cache, download, verify, read, remap and strictly load.

One module serves every family. Official files are cached under
``$LEANSAM_HOME/checkpoints/<official file name>`` (default ``~/.cache/leansam``),
verified against the registry's sha256, read with ``torch.load(weights_only=True)``
(or safetensors), unwrapped (``{"model": sd}`` ...), remapped by the family's
checkpoint filter, and loaded strictly. Every failure raises one
:class:`CheckpointError` whose message names the model and the file and says
what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from .registry import ModelInfo, _registry, get_model_info

_LIST_LIMIT = 20


class CheckpointError(RuntimeError):
    """A checkpoint could not be found, downloaded, verified, read or loaded."""


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did: the file, and the keys the family filter set aside."""

    model: str
    path: str
    set_aside: list[str] = field(default_factory=list)
    sha256_verified: bool = False

    def summary(self) -> str:
        msg = f"loaded {self.model} from {self.path}"
        if self.set_aside:
            msg += f" ({len(self.set_aside)} keys not used in image mode were set aside)"
        return msg


def cache_dir() -> Path:
    """``$LEANSAM_HOME`` or ``~/.cache/leansam``."""
    return Path(os.environ.get("LEANSAM_HOME") or Path.home() / ".cache" / "leansam")


def checkpoint_path(info: ModelInfo) -> Path:
    """Where the official checkpoint of ``info`` is (or would be) cached."""
    if info.weights is None:
        raise CheckpointError(f"model {info.name!r} has no registered weights")
    if info.weights.url.startswith("package://"):
        return Path(str(resources.files("leansam") / info.weights.url.removeprefix("package://")))
    return cache_dir() / "checkpoints" / info.weights.file_name


def is_cached(info: ModelInfo) -> bool:
    return info.weights is not None and checkpoint_path(info).is_file()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(info: ModelInfo, progress: bool = True, timeout: float = 30.0) -> Path:
    """Downloads the official checkpoint of ``info`` into the cache and verifies its sha256.

    The file is written to a temporary name and renamed only after the hash
    matched, so an interrupted or corrupt download never looks cached.
    """
    dest = checkpoint_path(info)
    url = info.weights.url
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    tmp = Path(tmp_name)
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                bar = _progress(total, f"downloading {info.weights.file_name}", progress)
                h = hashlib.sha256()
                while block := resp.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
                bar.close()
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise CheckpointError(
                f"could not download the {info.name} checkpoint from {url} ({e}). "
                f"Without network access, download it elsewhere and put it at {dest} "
                f"(or pass --checkpoint PATH)"
            ) from e
        digest = h.hexdigest()
        if info.weights.sha256 and digest != info.weights.sha256:
            raise CheckpointError(
                f"downloaded {info.name} checkpoint has sha256 {digest}, expected {info.weights.sha256}; "
                f"the file was discarded (truncated download or changed upstream file: {url})"
            )
        tmp.replace(dest)
        _write_hash_marker(dest, digest)
        return dest
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _progress(total: int | None, desc: str, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a core dependency
        enabled = False
    if not enabled:

        class _Null:
            def update(self, n: int) -> None: ...
            def close(self) -> None: ...

        return _Null()
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc)


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_hash_marker(path: Path, digest: str) -> None:
    st = path.stat()
    with contextlib.suppress(OSError):
        _marker(path).write_text(f"{digest} {st.st_size} {st.st_mtime_ns}\n")


def verify_cached(info: ModelInfo, path: Path) -> bool:
    """Checks a cached official file against the registry sha256 (hashing only when the file changed).

    Returns True when verified, False when the registry has no hash; raises on mismatch.
    """
    expected = info.weights.sha256 if info.weights else None
    if not expected:
        return False
    st = path.stat()
    marker = _marker(path)
    if marker.is_file():
        parts = marker.read_text().split()
        if len(parts) == 3 and parts[1:] == [str(st.st_size), str(st.st_mtime_ns)] and parts[0] == expected:
            return True
    digest = sha256_file(path)
    if digest != expected:
        raise CheckpointError(
            f"cached checkpoint {path} for {info.name} has sha256 {digest}, expected {expected}: "
            f"it is corrupt or not the official file. Delete it to download it again, "
            f"or pass it explicitly with --checkpoint to load it anyway"
        )
    _write_hash_marker(path, digest)
    return True


def resolve_checkpoint(
    info: ModelInfo, allow_download: bool = True, progress: bool = True
) -> tuple[Path, bool]:
    """(path of the official checkpoint, sha256 verified), downloading it when needed."""
    path = checkpoint_path(info)
    if not path.is_file():
        if info.weights.url.startswith("package://"):
            raise CheckpointError(
                f"bundled weights of {info.name} are missing from the installation ({path})"
            )
        if not allow_download:
            raise CheckpointError(
                f"no checkpoint for {info.name} at {path}; download {info.weights.url} and put it there, "
                f"or pass --checkpoint PATH"
            )
        path = download(info, progress=progress)
    return path, verify_cached(info, path)


def read_state_dict(
    path: str | Path, info: ModelInfo | None = None, trust_pickle: bool = False
) -> dict[str, torch.Tensor]:
    """Reads a checkpoint file (.pth/.pt via ``torch.load(weights_only=True)``, or .safetensors).

    Unwraps ``{"model": sd}`` / ``{"state_dict": sd}`` (and the wrappers the
    registry names). Pickled modules are refused unless ``trust_pickle``.
    """
    path = Path(path)
    who = f"model {info.name!r}" if info else "the model"
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path} (for {who})")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} for {who} is empty (0 bytes): truncated download?")
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"cannot read safetensors checkpoint {path} for {who}: {e}") from e
    source = _unzip_single_checkpoint(path) or path  # sizes checked before anything is inflated
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e)
        # Only a disallowed global means "real pickle with foreign objects"; any other
        # unpickling failure (bad opcode, short read) is a corrupt file.
        if "Unsupported global" in text:
            if not trust_pickle:
                raise CheckpointError(
                    f"checkpoint {path} for {who} contains pickled Python objects, not only tensors "
                    f"(e.g. a whole pickled model). leansam can read its tensors with a restricted "
                    f"unpickler that imports and runs no code from the file; pass --trust-pickle "
                    f"(trust_pickle=True) to allow that"
                ) from e
            obj = _load_trusted_pickle(path, who)
        else:
            raise CheckpointError(
                f"cannot read checkpoint {path} for {who}: not a valid PyTorch or safetensors file "
                f"({describe_load_error(e)}); it may be truncated or corrupt"
            ) from e
    return _unwrap(obj, path, who, info)


def _unzip_single_checkpoint(path: Path) -> io.BytesIO | None:
    """A plain zip archive holding one .pt/.pth file (EfficientSAM ViT-S ships so): that file's bytes.

    torch's own zip format (a folder with data.pkl) is left to torch.load.
    """
    try:
        if not zipfile.is_zipfile(path):
            return None
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"checkpoint {path} is a damaged zip archive: {e}") from None
    with z:
        _check_zip_sizes(z, path)
        names = z.namelist()
        if any(n.endswith("data.pkl") for n in names):
            return None
        members = [n for n in names if n.endswith((".pt", ".pth")) and not n.startswith("__MACOSX")]
        if len(members) != 1:
            return None
        try:
            return io.BytesIO(z.read(members[0]))
        except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, NotImplementedError) as e:
            raise CheckpointError(f"checkpoint {path}: cannot read zip member {members[0]}: {e}") from None


def _check_zip_sizes(z: zipfile.ZipFile, path: Path) -> None:
    """Refuses a zip whose members declare more than the memory limit in all, or a compressed member
    that would inflate past the inflate-ratio limit, from the headers alone (nothing is inflated)."""
    from . import limits
    from .io import InputError

    infos = z.infolist()
    try:
        limits.check(
            limits.MEMORY,
            sum(i.file_size for i in infos),
            f"checkpoint {path}: its zip members (declared sizes)",
        )
        for i in infos:
            if i.compress_type != zipfile.ZIP_STORED and i.file_size > (1 << 20):
                ratio = i.file_size / max(i.compress_size, 1)
                limits.check(
                    limits.INFLATE_RATIO,
                    ratio,
                    f"checkpoint {path}: zip member {i.filename} ({limits.fmt_bytes(i.file_size)} from "
                    f"{limits.fmt_bytes(i.compress_size)}, a zip bomb?)",
                )
    except InputError as e:
        raise CheckpointError(str(e)) from None


def describe_load_error(e: Exception) -> str:
    """The informative line of a torch.load error (its first line is often generic)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "error" in ln.lower() and "WeightsUnpickler" not in ln), None)
    detail = (
        detail
        or next((ln for ln in lines if ln.startswith("Unsupported")), None)
        or (lines[0] if lines else "")
    )
    return f"{type(e).__name__}: {detail[:200]}"


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors: 8-byte little-endian header length then a JSON object.
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 27)


def _load_trusted_pickle(path: Path, who: str) -> object:
    """A pickled model or object, read by leansam's restricted unpickler (no foreign code runs)."""
    from .pickle_safe import PickledCheckpointError, UnsafePickleError, load_pickled_module_checkpoint

    try:
        return load_pickled_module_checkpoint(path)
    except UnsafePickleError as e:
        raise CheckpointError(f"refusing to unpickle checkpoint {path} for {who}: {e}") from e
    except PickledCheckpointError as e:
        raise CheckpointError(f"cannot use checkpoint {path} for {who}: {e}") from e
    except Exception as e:
        raise CheckpointError(f"cannot unpickle checkpoint {path} for {who}: {e}") from e


def _unwrap(obj: object, path: Path, who: str, info: ModelInfo | None) -> dict[str, torch.Tensor]:
    wrappers = (info.weights.wrappers if info and info.weights else ()) + ("model", "state_dict")
    for _ in range(2):
        if isinstance(obj, dict) and not _is_tensor_dict(obj):
            inner = next((obj[k] for k in wrappers if k in obj and isinstance(obj[k], dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not _is_tensor_dict(obj):
        kind = type(obj).__name__
        keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else []
        raise CheckpointError(
            f"checkpoint {path} for {who} is a {kind}{f' with keys {keys}' if keys else ''}, "
            f"not a state_dict of tensors"
        )
    return obj


def _is_tensor_dict(d: dict) -> bool:
    return len(d) > 0 and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


def _fmt_keys(keys: list[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f", ... and {len(keys) - _LIST_LIMIT} more" if len(keys) > _LIST_LIMIT else "")


def expected_shapes(info: ModelInfo) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state_dict the architecture of ``info`` expects (built on the meta device)."""
    with torch.device("meta"):
        model = info.build()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _fit(info: ModelInfo, state: dict[str, torch.Tensor]) -> float:
    try:
        mapped, _ = info.filter_state_dict(dict(state))
        want = expected_shapes(info)
    except Exception:
        return 0.0
    ok = sum(1 for k, v in mapped.items() if want.get(k) == tuple(v.shape))
    return ok / max(len(want), len(mapped), 1)


def best_fitting_models(
    state: dict[str, torch.Tensor], exclude: str = "", top: int = 1
) -> list[tuple[str, float]]:
    """Registered models whose architecture best fits a state_dict: [(name, fraction of keys+shapes that fit)]."""
    scores = [(n, _fit(i, state)) for n, i in _registry().items() if n != exclude]
    scores.sort(key=lambda t: -t[1])
    return [s for s in scores[:top] if s[1] > 0.5]


def load_checkpoint(
    model: torch.nn.Module,
    info: ModelInfo,
    state: dict[str, torch.Tensor],
    path: str | Path = "<state_dict>",
) -> LoadReport:
    """Remaps ``state`` with the family filter and loads it strictly into ``model``.

    Raises :class:`CheckpointError` listing sorted missing / unexpected / wrongly
    shaped keys and naming the registered model whose keys fit best.
    """
    mapped, set_aside = info.filter_state_dict(dict(state))
    own = model.state_dict()
    missing = [k for k in own if k not in mapped]
    unexpected = [k for k in mapped if k not in own]
    wrong = [
        f"{k} (file {tuple(mapped[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in mapped and mapped[k].shape != own[k].shape
    ]
    # Float weights stored as integers (or the reverse) would be cast silently: a broken file.
    wrong += [
        f"{k} (file {str(mapped[k].dtype).removeprefix('torch.')}, model {str(own[k].dtype).removeprefix('torch.')})"
        for k in own
        if k in mapped
        and mapped[k].shape == own[k].shape
        and mapped[k].is_floating_point() != own[k].is_floating_point()
    ]
    if missing or unexpected or wrong:
        lines = [f"checkpoint {path} does not fit model {info.name!r}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_fmt_keys(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_fmt_keys(unexpected)}")
        if wrong:
            lines.append(f"  wrong shapes or dtypes ({len(wrong)}): {_fmt_keys(wrong)}")
        fits = best_fitting_models(state, exclude=info.name)
        if fits:
            name, score = fits[0]
            lines.append(
                f"  it looks like a {name!r} checkpoint ({score:.0%} of keys fit): use --model {name}"
            )
        else:
            lines.append("  no registered model fits it: is it a SAM-family checkpoint?")
        raise CheckpointError("\n".join(lines))
    non_float = {k for k, v in own.items() if not v.is_floating_point()}
    converted = {k: (v if k in non_float else v.to(own[k].dtype)) for k, v in mapped.items()}
    model.load_state_dict(converted, strict=True)
    return LoadReport(model=info.name, path=str(path), set_aside=sorted(set_aside))


def load_model(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    pretrained: bool = True,
    trust_pickle: bool = False,
    allow_download: bool = True,
    progress: bool = True,
) -> tuple[torch.nn.Module, LoadReport | None]:
    """Builds ``name`` and loads weights: ``checkpoint`` if given, else the official file when ``pretrained``."""
    info = get_model_info(name)
    verified = False
    if (
        checkpoint is None
        and pretrained
        and info.weights is not None
        and info.weights.file_name.endswith(".onnx")
    ):
        raise CheckpointError(
            f"{name}'s official weights are ONNX files ({info.weights.file_name}): run them on ONNX Runtime "
            f"(leansam.export.load_onnx_model, or --backend onnx; see docs/deployment.md)"
        )
    if checkpoint is None and pretrained and info.weights is not None:
        checkpoint, verified = resolve_checkpoint(info, allow_download=allow_download, progress=progress)
    if checkpoint is None:
        return info.build(), None
    from .prune.arch import read_arch

    arch = read_arch(checkpoint)
    if arch is not None:
        return _load_pruned(info, arch, checkpoint)
    if Path(checkpoint).is_dir():
        raise CheckpointError(f"checkpoint {checkpoint} is a folder, not a checkpoint file or pruned model")
    state = read_state_dict(checkpoint, info, trust_pickle=trust_pickle)
    model = info.build(state)
    report = load_checkpoint(model, info, state, checkpoint)
    report.sha256_verified = verified
    return model.eval(), report


def _load_pruned(info: ModelInfo, arch: dict, path: str | Path) -> tuple[torch.nn.Module, LoadReport]:
    """A pruned model (``leansam prune``): the architecture its metadata describes, loaded strictly.

    Under another registry name the weights are loaded like any checkpoint of that model (a pruned
    ``sam_vit_b`` with SlimSAM-50's widths loads as ``slimsam_50``).
    """
    from .prune.arch import build_from_arch, load_state, weights_file

    state = load_state(path)
    if arch["base"] != info.name:
        model = info.build(state)
        try:
            report = load_checkpoint(model, info, state, weights_file(path))
        except CheckpointError as e:
            raise CheckpointError(
                f"{path} is a pruned {arch['base']!r} model and does not fit {info.name!r}: use "
                f"--model {arch['base']} or give the path as the model (--model {path}). {e}"
            ) from None
        return model.eval(), report
    model = build_from_arch(arch)
    model.name = info.name
    report = load_checkpoint(model, info, state, weights_file(path))
    return model.eval(), report


def copy_to_cache(info: ModelInfo, src: str | Path) -> Path:
    """Places a manually downloaded official file into the cache (after checking its hash)."""
    dest = checkpoint_path(info)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    shutil.copyfile(src, tmp)
    tmp.replace(dest)
    verify_cached(info, dest)
    return dest
