"""A restricted unpickler for checkpoints that are pickled ``nn.Module`` objects.

Some official checkpoints (SlimSAM's global-pruning ``SlimSAM-50.pth`` / ``SlimSAM-77.pth``)
are whole models saved with ``torch.save(model)``: ``torch.load`` would import the authors'
Python package and run its classes. This module reads such files **without importing or
running any foreign code**:

* every class the pickle names is replaced by an inert *stub* class (nothing is imported);
  a stub can only be created empty and then receive its attribute dict (the ``NEWOBJ`` +
  ``BUILD`` opcodes that ``torch.save`` emits for modules), which it merely stores;
* calling anything that is not on a short allow-list (torch's tensor rebuild functions,
  ``OrderedDict``, ``set``, ``torch.device`` ...) raises :class:`UnsafePickleError` naming the
  callable; a few well-known dangerous modules (``os``, ``subprocess``, ``builtins.eval`` ...)
  are refused as soon as they are named;
* tensors are rebuilt from the file's storages by ``torch.load`` itself (its
  ``persistent_load``), so the result holds ordinary CPU tensors.

The recorded stub tree is then flattened to a state_dict with the key names
``nn.Module.state_dict()`` would give (persistent buffers only), optionally without the
``.module`` level of ``DataParallel`` wrappers.

    >>> from leansam.pickle_safe import load_pickled_module_checkpoint
    >>> state = load_pickled_module_checkpoint("SlimSAM-50.pth")   # {"image_encoder.pos_embed": ...}

Use it only for files you chose to trust (``trust_pickle=True`` / ``--trust-pickle``): it does
not execute the file's code, but a state_dict from an unknown source can still be wrong.
"""

from __future__ import annotations

import collections
import pickle
import sys
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = [
    "PickledCheckpointError",
    "StubObject",
    "Unpickler",
    "UnsafePickleError",
    "load",
    "load_pickled_module_checkpoint",
    "loads",
    "module_state_dict",
    "safe_torch_load",
]

_DATA_PARALLEL = {
    ("torch.nn.parallel.data_parallel", "DataParallel"),
    ("torch.nn.parallel.distributed", "DistributedDataParallel"),
}

# Modules that no model checkpoint has a reason to name: refused outright, with a clear message.
_DENIED_MODULES = {
    "os",
    "posix",
    "nt",
    "subprocess",
    "sys",
    "shutil",
    "importlib",
    "runpy",
    "pickle",
    "_pickle",
    "marshal",
    "io",
    "socket",
    "code",
    "codeop",
    "ctypes",
    "types",
    "functools",
    "operator",
    "pty",
    "signal",
    "webbrowser",
    "multiprocessing",
    "threading",
    "asyncio",
    "tempfile",
    "pathlib",
    "glob",
    "inspect",
    "numpy",
    "pdb",
    "timeit",
    "platform",
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something other than tensors, containers and module state."""


class PickledCheckpointError(ValueError):
    """A pickled checkpoint was read safely but holds no module or state_dict to load."""


class StubObject:
    """Stand-in for an instance of a class named in the pickle (never imported).

    ``__dict__`` holds exactly the attribute state the pickle recorded (for an ``nn.Module``:
    ``_parameters``, ``_buffers``, ``_modules``, ``training``, ...). ``stub_class_path`` is
    the original ``"module.ClassName"``.
    """

    _stub_module: str = "?"
    _stub_name: str = "?"

    def __new__(cls, *args: Any) -> StubObject:
        if args:
            raise UnsafePickleError(
                f"the pickle creates {cls._stub_module}.{cls._stub_name} with constructor arguments; "
                f"only plain attribute state is accepted"
            )
        return object.__new__(cls)

    def __setstate__(self, state: Any) -> None:
        slots = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
        for part in (state, slots):
            if part is None:
                continue
            if not isinstance(part, dict):
                raise UnsafePickleError(
                    f"state of {self.stub_class_path} is a {type(part).__name__}, not an attribute dict"
                )
            self.__dict__.update({str(k): v for k, v in part.items()})

    @property
    def stub_class_path(self) -> str:
        return f"{type(self)._stub_module}.{type(self)._stub_name}"

    @property
    def is_module(self) -> bool:
        """True when the recorded state looks like an ``nn.Module``'s."""
        return isinstance(self.__dict__.get("_modules"), dict) and isinstance(
            self.__dict__.get("_parameters"), dict
        )

    def children(self) -> dict[str, StubObject]:
        """Sub-modules in registration order (``None`` entries skipped)."""
        return _children(self)

    def __getattr__(self, name: str) -> Any:
        # Mirrors nn.Module attribute lookup into its registries, for reading only.
        if name.startswith("__"):
            raise AttributeError(name)
        d = object.__getattribute__(self, "__dict__")
        for reg in ("_parameters", "_buffers", "_modules"):
            table = d.get(reg)
            if isinstance(table, dict) and name in table:
                return table[name]
        raise AttributeError(f"{self.stub_class_path} stub has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"<stub {self.stub_class_path}>"


def _children(obj: StubObject) -> dict[str, StubObject]:
    mods = obj.__dict__.get("_modules")
    return {k: v for k, v in mods.items() if isinstance(v, StubObject)} if isinstance(mods, dict) else {}


class _StubMeta(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        # Reached through REDUCE / INST / OBJ: the pickle wants to *call* the named object.
        shown = ", ".join(_short(a) for a in args)
        raise UnsafePickleError(
            f"the pickle calls {cls._stub_module}.{cls._stub_name}({shown}); refusing to run code from "
            f"a checkpoint (only tensors, containers and module attribute state are accepted)"
        )


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------------
# The allow-list: the only callables a pickle may invoke.


def _check_storage(storage: Any) -> None:
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafePickleError(f"tensor rebuild from a {type(storage).__name__}, not a storage of the file")


def _check_shape(name: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(isinstance(v, int) for v in value):
        raise UnsafePickleError(f"tensor {name} must be a tuple of ints, got {_short(value)}")
    return value


def _rebuild_tensor(storage: Any, storage_offset: int, size: Any, stride: Any) -> torch.Tensor:
    _check_storage(storage)
    if not isinstance(storage_offset, int):
        raise UnsafePickleError("tensor storage offset must be an int")
    return torch._utils._rebuild_tensor(
        storage, storage_offset, _check_shape("size", size), _check_shape("stride", stride)
    )


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: int,
    size: Any,
    stride: Any,
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    t = _rebuild_tensor(storage, storage_offset, size, stride)
    if isinstance(metadata, dict) and metadata:
        torch._utils.set_tensor_metadata(t, metadata)
    return t  # requires_grad and backward hooks are dropped: inference weights only


def _rebuild_tensor_v3(
    storage: Any,
    storage_offset: int,
    size: Any,
    stride: Any,
    requires_grad: bool,
    backward_hooks: Any,
    dtype: torch.dtype,
    metadata: Any = None,
) -> torch.Tensor:
    t = _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata)
    if isinstance(dtype, torch.dtype) and t.dtype != dtype:
        raise UnsafePickleError(f"tensor dtype {dtype} does not match its storage ({t.dtype})")
    return t


def _rebuild_parameter(
    data: Any, requires_grad: bool = True, backward_hooks: Any = None, state: Any = None
) -> Any:
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError(f"parameter data is a {type(data).__name__}, not a tensor")
    return data  # a plain tensor: the stub tree only needs values


_REBUILD_FUNCS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter)


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    if func not in _REBUILD_FUNCS or not isinstance(args, tuple):
        raise UnsafePickleError(f"tensor subclass rebuild through {_short(func)} is not allowed")
    if new_type not in (torch.Tensor, torch.nn.Parameter):
        raise UnsafePickleError(f"tensor subclass {_short(new_type)} is not allowed")
    return func(*args)


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor (pickle protocols 0/1): object.__new__(cls), for stub classes only.
    if not (isinstance(cls, type) and issubclass(cls, StubObject)) or base is not object:
        raise UnsafePickleError(f"copyreg._reconstructor({_short(cls)}, {_short(base)}) is not allowed")
    return cls.__new__(cls)


def _codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Protocol 2 pickles bytes as _codecs.encode(str, "latin1").
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise UnsafePickleError("_codecs.encode is only allowed on a str with latin1/utf-8")
    return obj.encode(encoding, errors)


def _make_set(items: Any = ()) -> set:
    return set(_plain_iterable(items))


def _make_frozenset(items: Any = ()) -> frozenset:
    return frozenset(_plain_iterable(items))


def _make_ordered_dict(items: Any = ()) -> collections.OrderedDict:
    return collections.OrderedDict(_plain_iterable(items))


def _plain_iterable(items: Any) -> Any:
    if not isinstance(items, (list, tuple, set, frozenset, dict)):
        raise UnsafePickleError(f"container built from a {type(items).__name__}")
    return items


def _make_device(*args: Any) -> torch.device:
    if not all(isinstance(a, (str, int)) for a in args):
        raise UnsafePickleError(f"torch.device{_short(args)}")
    return torch.device(*args)


def _make_size(dims: Any = ()) -> torch.Size:
    return torch.Size(_check_shape("size", tuple(dims) if isinstance(dims, list) else dims))


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch._tensor", "Tensor"): torch.Tensor,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "device"): _make_device,
    ("torch", "Size"): _make_size,
    ("torch", "UntypedStorage"): torch.UntypedStorage,
    ("collections", "OrderedDict"): _make_ordered_dict,
    ("builtins", "set"): _make_set,
    ("builtins", "frozenset"): _make_frozenset,
    ("__builtin__", "set"): _make_set,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _codecs_encode,
}


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that never imports: allow-listed torch rebuild functions, inert stubs otherwise.

    ``torch.load(..., pickle_module=leansam.pickle_safe, weights_only=False)`` subclasses this
    class (adding storage-name handling and its ``persistent_load`` for the file's tensor
    storages). Stub classes are created per unpickler, so two loads never share state.
    """

    def __init__(self, file: BinaryIO, *args: Any, **kwargs: Any) -> None:
        super().__init__(file, *args, **kwargs)
        self._stubs: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            raise UnsafePickleError(f"malformed global {module!r}.{name!r}")
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        root = module.split(".")[0]
        if root in _DENIED_MODULES or root in ("builtins", "__builtin__", "copyreg", "copy_reg", "_codecs"):
            raise UnsafePickleError(
                f"checkpoint pickle refers to {module}.{name}: refusing (a model checkpoint should only hold "
                f"tensors and module state; this file may try to run code)"
            )
        if root == "torch" and not module.startswith("torch.nn."):
            raise UnsafePickleError(f"checkpoint pickle refers to {module}.{name}, which is not allowed")
        if not all(part.isidentifier() for part in [*module.split("."), *name.split(".")]):
            raise UnsafePickleError(f"malformed global {module!r}.{name!r}")
        if key not in self._stubs:
            self._stubs[key] = _StubMeta(name, (StubObject,), {"_stub_module": module, "_stub_name": name})
        return self._stubs[key]


def loads(data: bytes, **kwargs: Any) -> Any:
    """``pickle.loads`` with :class:`Unpickler` (plain pickles; no tensor storages)."""
    import io

    return Unpickler(io.BytesIO(data), **kwargs).load()


def load(file: BinaryIO, **kwargs: Any) -> Any:
    """``pickle.load`` with :class:`Unpickler` (``torch.load`` calls it for legacy-format headers)."""
    return Unpickler(file, **kwargs).load()


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` of a ``torch.save`` file (zip or legacy format) through :class:`Unpickler`, on CPU.

    Returns the unpickled object with every foreign class replaced by :class:`StubObject`
    instances and every tensor a plain CPU tensor. Raises :class:`UnsafePickleError` when the
    pickle calls anything outside the allow-list.
    """
    try:
        return torch.load(
            Path(path), map_location="cpu", pickle_module=sys.modules[__name__], weights_only=False
        )
    except RuntimeError as e:
        if "explicit pickle_module" in str(e):
            raise PickledCheckpointError(
                "TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, which forbids the restricted unpickler; unset it "
                f"to read the pickled checkpoint {path}"
            ) from e
        raise


def _is_data_parallel(obj: StubObject) -> bool:
    return (type(obj)._stub_module, type(obj)._stub_name) in _DATA_PARALLEL and "module" in _children(obj)


def module_state_dict(
    obj: StubObject, prefix: str = "", unwrap_data_parallel: bool = True
) -> dict[str, torch.Tensor]:
    """The state_dict a recorded ``nn.Module`` would return (parameters and persistent buffers).

    Keys follow ``nn.Module.state_dict()``: ``<child>.<child>.<name>``, parameters before
    buffers within a module, children in registration order. With ``unwrap_data_parallel``
    a ``DataParallel`` / ``DistributedDataParallel`` level adds no ``module.`` to the keys.
    Custom ``_save_to_state_dict`` / extra state of the original classes is not reproduced.
    """
    if not obj.is_module:
        raise PickledCheckpointError(f"{obj.stub_class_path} is not an nn.Module")
    if unwrap_data_parallel and _is_data_parallel(obj):
        return module_state_dict(_children(obj)["module"], prefix, unwrap_data_parallel)
    out: dict[str, torch.Tensor] = {}
    d = obj.__dict__
    skip = d.get("_non_persistent_buffers_set") or set()
    for table, is_buffer in ((d.get("_parameters") or {}), False), ((d.get("_buffers") or {}), True):
        for name, value in table.items():
            if value is None or (is_buffer and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise PickledCheckpointError(f"{prefix}{name} of {obj.stub_class_path} is not a tensor")
            out[prefix + name] = value
    for name, child in _children(obj).items():
        out.update(module_state_dict(child, f"{prefix}{name}.", unwrap_data_parallel))
    return out


def _flatten(obj: Any, unwrap_data_parallel: bool) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, StubObject) and obj.is_module:
        return module_state_dict(obj, unwrap_data_parallel=unwrap_data_parallel)
    if (
        isinstance(obj, dict)
        and obj
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        return dict(obj)
    return None


def load_pickled_module_checkpoint(
    path: str | Path,
    wrappers: tuple[str, ...] = ("model", "state_dict", "module", "net"),
    unwrap_data_parallel: bool = True,
) -> dict[str, torch.Tensor]:
    """Reads a pickled-module checkpoint safely and returns a flat state_dict of CPU tensors.

    Accepts a pickled ``nn.Module`` (e.g. SlimSAM's global-pruning files), or a dict that
    holds one (or a state_dict) under one of ``wrappers``, or a plain state_dict. With
    ``unwrap_data_parallel`` the ``.module`` level of ``DataParallel`` is dropped from keys
    (``image_encoder.module.blocks.0...`` -> ``image_encoder.blocks.0...``).

    Raises :class:`UnsafePickleError` when the pickle tries to call anything but tensor
    rebuilds / containers, :class:`PickledCheckpointError` when it holds no module or tensors.
    """
    obj = safe_torch_load(path)
    flat = _flatten(obj, unwrap_data_parallel)
    if flat is None and isinstance(obj, dict):
        for key in wrappers:
            if key in obj and (flat := _flatten(obj[key], unwrap_data_parallel)) is not None:
                break
    if flat is None:
        kind = obj.stub_class_path if isinstance(obj, StubObject) else type(obj).__name__
        keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else []
        raise PickledCheckpointError(
            f"pickled checkpoint {path} holds a {kind}{f' with keys {keys}' if keys else ''}, "
            f"not an nn.Module or a state_dict"
        )
    if not flat:
        raise PickledCheckpointError(f"pickled checkpoint {path} holds a module without any tensors")
    return flat
