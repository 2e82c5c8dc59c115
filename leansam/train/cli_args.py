"""Command-line flags generated from a config dataclass (one ``--field-name`` per field)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

from ..io import InputError

T = TypeVar("T")


def add_dataclass_args(p: argparse.ArgumentParser, cls: type, required: tuple[str, ...] = ()) -> None:
    """Adds ``--name`` for every field of ``cls`` (booleans get ``--name/--no-name``).

    Defaults are left as None so :func:`config_from_args` can tell given flags from defaults.
    """
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_ = f"(default: {default!r})" if f.name not in required else "(required)"
        if isinstance(default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif isinstance(default, int):
            p.add_argument(flag, dest=f.name, type=int, default=None, metavar="N", help=help_)
        elif isinstance(default, float):
            p.add_argument(flag, dest=f.name, type=float, default=None, metavar="X", help=help_)
        else:
            p.add_argument(flag, dest=f.name, default=None, required=f.name in required, help=help_)


def config_from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """Builds ``cls`` from the given flags (others keep their defaults); bad values -> InputError."""
    kw = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if getattr(args, f.name, None) is not None
    }
    kw.update(overrides)
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise InputError(f"invalid {cls.__name__}: {e}") from None
