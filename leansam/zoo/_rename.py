"""Key renaming by ordered regex rules, shared by the families whose official keys differ from leansam's."""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

#: Ordered (pattern, replacement) pairs; the first pattern that matches a key renames it.
Rules = tuple[tuple[re.Pattern[str], str], ...]


def compile_rules(pairs: Iterable[tuple[str, str]]) -> Rules:
    """Compiles ``(regex, replacement)`` pairs (anchor them with ``^`` so renamed keys stay put)."""
    return tuple((re.compile(p), r) for p, r in pairs)


def rename_key(key: str, rules: Rules) -> str:
    """``key`` renamed by the first rule that matches it (unchanged when none does)."""
    for pattern, repl in rules:
        new, n = pattern.subn(repl, key, count=1)
        if n:
            return new
    return key


def rename_keys(state: dict[str, torch.Tensor], rules: Rules) -> dict[str, torch.Tensor]:
    """A new state_dict with every key renamed by :func:`rename_key`; tensors are not copied."""
    return {rename_key(k, rules): v for k, v in state.items()}
