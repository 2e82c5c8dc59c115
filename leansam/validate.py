"""One validation layer for the files leansam reads (COCO annotations and results, boxes files,
detections, JSON configs).

A schema is built from a few node types (:class:`Num`, :class:`Str`, :class:`Bool`,
:class:`Arr`, :class:`Obj`, :class:`OneOf`, :data:`ANY`); :func:`check` walks a parsed JSON value
against it and raises :class:`ValidationError` (an :class:`~leansam.io.InputError`) naming the file
and the path of the first offending field::

    instances.json: annotations[3].bbox[2]: expected a finite number, got null

:func:`read_json` reads a JSON file within :data:`leansam.limits.JSON_BYTES`, and
:func:`dataclass_from_dict` builds a config dataclass from a JSON object, refusing unknown keys
(with the closest known one) and ill-typed values.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import limits
from .io import InputError


class ValidationError(InputError):
    """A value does not match its schema; ``path`` is the offending field (``a[3].b``)."""

    def __init__(self, source: str, path: str, message: str) -> None:
        self.source, self.path, self.detail = source, path, message
        where = ": ".join(s for s in (source, path or "(top level)") if s)
        super().__init__(f"{where}: {message}")


def describe(v: Any) -> str:
    """A short JSON-flavoured description of a value for messages (``null``, ``"abc"``, ``a list``)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v) if len(repr(v)) <= 24 else f"{v:.6g}"
    if isinstance(v, str):
        return json.dumps(v[:40] + ("..." if len(v) > 40 else ""))
    if isinstance(v, list | tuple):
        return f"a list of {len(v)}"
    if isinstance(v, Mapping):
        return "an object"
    return type(v).__name__


class Schema:
    """Base node: :meth:`check` returns the value (possibly normalised) or raises."""

    expected = "a value"

    def check(self, v: Any, path: str, source: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def fail(self, v: Any, path: str, source: str, expected: str | None = None) -> typing.NoReturn:
        raise ValidationError(source, path, f"expected {expected or self.expected}, got {describe(v)}")


class _Any(Schema):
    def check(self, v: Any, path: str, source: str) -> Any:
        return v


ANY = _Any()


@dataclasses.dataclass
class Num(Schema):
    """A finite JSON number (booleans refused); ``integer`` for whole numbers; inclusive bounds."""

    min: float | None = None
    max: float | None = None
    integer: bool = False

    @property
    def expected(self) -> str:  # type: ignore[override]
        kind = "an integer" if self.integer else "a finite number"
        lo, hi = _num(self.min), _num(self.max)
        if self.min is not None and self.max is not None and abs(self.min) < 2**53:
            return f"{kind} in [{lo}, {hi}]"
        if self.min is not None and abs(self.min) < 2**53:
            return f"{kind} >= {lo}"
        if self.max is not None and abs(self.max) < 2**53:
            return f"{kind} <= {hi}"
        return kind

    def check(self, v: Any, path: str, source: str) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.fail(v, path, source)
        if isinstance(v, float) and not math.isfinite(v):
            self.fail(v, path, source)
        if self.integer and not isinstance(v, int):
            self.fail(v, path, source)
        if (self.min is not None and v < self.min) or (self.max is not None and v > self.max):
            self.fail(v, path, source)
        return v


@dataclasses.dataclass
class Str(Schema):
    """A string of at most ``max_len`` characters."""

    max_len: int = 4096
    nonempty: bool = False

    @property
    def expected(self) -> str:  # type: ignore[override]
        return f"a{' non-empty' if self.nonempty else ''} string of at most {self.max_len} characters"

    def check(self, v: Any, path: str, source: str) -> Any:
        if not isinstance(v, str) or len(v) > self.max_len or (self.nonempty and not v):
            self.fail(v, path, source)
        return v


class Bool(Schema):
    expected = "true or false"

    def check(self, v: Any, path: str, source: str) -> Any:
        if not isinstance(v, bool):
            self.fail(v, path, source)
        return v


@dataclasses.dataclass
class Arr(Schema):
    """A list whose items match ``item``; ``length`` exact, or ``min_len`` .. ``max_len``."""

    item: Schema = ANY
    length: int | None = None
    min_len: int = 0
    max_len: int | None = None
    what: str = "a list"

    @property
    def expected(self) -> str:  # type: ignore[override]
        if self.length is not None:
            return f"{self.what} of {self.length}"
        if self.max_len is not None:
            return f"{self.what} of {self.min_len} to {self.max_len} items"
        return f"{self.what} of at least {self.min_len}" if self.min_len else self.what

    def check(self, v: Any, path: str, source: str) -> Any:
        if not isinstance(v, list):
            self.fail(v, path, source)
        n = len(v)
        if (self.length is not None and n != self.length) or n < self.min_len:
            self.fail(v, path, source)
        if self.max_len is not None and n > self.max_len:
            self.fail(v, path, source)
        if self.item is not ANY:
            for i, x in enumerate(v):
                self.item.check(x, f"{path}[{i}]", source)
        return v


@dataclasses.dataclass
class Obj(Schema):
    """A JSON object: ``required`` and ``optional`` keys with their schemas; others refused unless
    ``extra`` (then kept unchecked)."""

    required: dict[str, Schema] = dataclasses.field(default_factory=dict)
    optional: dict[str, Schema] = dataclasses.field(default_factory=dict)
    extra: bool = True
    expected = "an object"

    def check(self, v: Any, path: str, source: str) -> Any:
        if not isinstance(v, Mapping):
            self.fail(v, path, source)
        for key, schema in self.required.items():
            if key not in v:
                raise ValidationError(source, path, f"missing key {key!r}")
            schema.check(v[key], _join(path, key), source)
        for key, schema in self.optional.items():
            if key in v:
                schema.check(v[key], _join(path, key), source)
        if not self.extra:
            known = {*self.required, *self.optional}
            for key in v:
                if key not in known:
                    raise ValidationError(source, path, unknown_key_message(str(key), known))
        return v


class OneOf(Schema):
    """The first of ``options`` that accepts the value; the message lists them all."""

    def __init__(self, *options: Schema, expected: str | None = None) -> None:
        self.options = options
        self.expected = expected or " or ".join(o.expected for o in options)

    def check(self, v: Any, path: str, source: str) -> Any:
        same_kind = [o for o in self.options if _kind(o) is not None and isinstance(v, _kind(o))]
        if len(same_kind) == 1:  # the value is clearly meant as this option: report its error
            return same_kind[0].check(v, path, source)
        for o in self.options:
            try:
                return o.check(v, path, source)
            except ValidationError as e:
                if e.path != path:  # the right kind, a deeper field is wrong: report that one
                    raise
        self.fail(v, path, source)


def _kind(schema: Schema) -> type | tuple[type, ...] | None:
    """The Python type(s) of the JSON values a schema node is about (None: any)."""
    return {Obj: Mapping, Arr: list, Str: str, Bool: bool}.get(type(schema))


def _num(v: float | None) -> str:
    if v is None:
        return ""
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def unknown_key_message(key: str, known: set[str] | list[str]) -> str:
    """``unknown key 'dpeth' (did you mean 'depth'?; known: ...)``."""
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key {key!r} ({hint}known: {', '.join(sorted(known))})"


def check(value: Any, schema: Schema, source: str = "", path: str = "") -> Any:
    """Validates ``value`` against ``schema``; ``source`` (a file name) prefixes the message.

    Raises:
        ValidationError: the first field that does not match, with its path.
    """
    return schema.check(value, path, source)


def parse_json(text: str | bytes, source: str) -> Any:
    """JSON text -> value, every parse failure as one :class:`InputError` naming ``source``."""
    try:
        return json.loads(text)
    except UnicodeDecodeError:
        raise InputError(f"{source} is not a JSON text file (not UTF-8)") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{source} is not valid JSON: {e}") from None
    except RecursionError:
        raise InputError(f"{source} is nested too deeply to be a leansam input") from None


def read_json(path: str | Path, what: str) -> Any:
    """Reads and parses a JSON file of at most ``LEANSAM_MAX_JSON_BYTES`` bytes.

    Raises:
        InputError: missing, not a file, too large, unreadable, not UTF-8 or not JSON.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} file not found: {path}")
    if not path.is_file():
        raise InputError(f"{what} path is not a file: {path}")
    try:
        limits.check(limits.JSON_BYTES, path.stat().st_size, f"{what} file {path}")
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {what} file {path}: {e.strerror or e}") from None
    return parse_json(data, f"{path} ({what})")


# --- dataclass configs ----------------------------------------------------------------------------
def dataclass_from_dict(cls: type, data: Any, source: str, fixed: Mapping[str, Any] | None = None) -> Any:
    """``cls(**data, **fixed)`` after checking ``data`` against ``cls``'s fields and annotations.

    Lists become tuples where the field is a tuple. ``fixed`` keys are set by leansam, so ``data``
    may not give them.

    Raises:
        ValidationError: not an object, an unknown key (with the closest known one), a key in
            ``fixed``, or a value whose type does not match the field (bool, int, float, str,
            tuples/lists of those, optional).
    """
    fixed = dict(fixed or {})
    if not isinstance(data, Mapping):
        raise ValidationError(source, "", f"expected an object, got {describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, v in data.items():
        if key in fixed:
            raise ValidationError(source, key, "is set by leansam from the teacher; leave it out")
        if key not in fields:
            raise ValidationError(source, "", unknown_key_message(str(key), set(fields) - set(fixed)))
        kwargs[key] = _coerce(v, hints[key], key, source)
    return cls(**kwargs, **fixed)


def _coerce(v: Any, hint: Any, path: str, source: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(v, a, path, source)
            except ValidationError:
                continue
        raise ValidationError(source, path, f"expected {_hint_name(hint)}, got {describe(v)}")
    if origin in (tuple, list):
        if not isinstance(v, list | tuple):
            raise ValidationError(source, path, f"expected {_hint_name(hint)}, got {describe(v)}")
        item_hints = args[:1] if (origin is list or (len(args) == 2 and args[1] is Ellipsis)) else args
        if origin is tuple and len(item_hints) > 1 and len(item_hints) != len(v):
            raise ValidationError(source, path, f"expected {_hint_name(hint)}, got {describe(v)}")
        items = [
            _coerce(x, item_hints[min(i, len(item_hints) - 1)] if item_hints else Any, f"{path}[{i}]", source)
            for i, x in enumerate(v)
        ]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        return Bool().check(v, path, source)
    if hint is int:
        return Num(integer=True).check(v, path, source)
    if hint is float:
        return float(Num().check(v, path, source))
    if hint is str:
        return Str().check(v, path, source)
    return v


def _hint_name(hint: Any) -> str:
    if typing.get_origin(hint) is None and hasattr(hint, "__name__"):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "null")
