"""Which weights an accuracy result was measured on, so that pages flag results of replaced weights.

leansam's own models (``leansam_tiny``, ``leansam_nano``) are retrained from time to time: a result
written before the bundled weights changed no longer describes what users get. Accuracy benchmarks
record :func:`weights_sha256` of their model; pages call :func:`stale_note` and do not count such a
row as met. Every benchmark records the weights of the bundled models it names
(:func:`record_bundled`), and the page generator marks a section whose result names one without its
current weights (:func:`outdated_note`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


def weights_sha256(spec: str) -> str | None:
    """sha256 of the weights ``NAME`` / ``NAME:CKPT`` loads: the checkpoint file, or a registry
    model's weights shipped inside leansam (None: random weights, a download, a pruned folder)."""
    from leansam.checkpoints import sha256_file
    from leansam.registry import get_model_info

    name, _, ckpt = spec.partition(":")
    if ckpt:
        return sha256_file(ckpt) if Path(ckpt).is_file() else None
    try:
        w = get_model_info(name).weights
    except (KeyError, ValueError):
        return None
    return w.sha256 if w is not None and w.url.startswith("package://") else None


def stale_note(spec: str, recorded: str | None) -> str | None:
    """Why a result recorded on ``recorded`` (a sha256, or None: not recorded) does not describe the
    weights ``spec`` loads now; None when it does (or when ``spec`` loads no file of leansam's)."""
    now = weights_sha256(spec)
    if now is None or recorded == now:
        return None
    was = f"sha256 {recorded[:12]}" if recorded else "not recorded"
    return (
        f"measured on earlier `{spec}` weights ({was}), not on the ones it loads now "
        f"(sha256 {now[:12]}): run the benchmark again"
    )


def bundled_models() -> dict[str, str]:
    """leansam's own models whose weights ship inside the package: {name: sha256 of those weights}."""
    from leansam.registry import list_models

    return {n: sha for n in list_models() if (sha := weights_sha256(n)) is not None}


def record_bundled(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with ``bundled_weights``: the sha256 of every bundled model it names, i.e. the
    weights it was measured on (a benchmark calls this on what it is about to write)."""
    text = json.dumps({k: v for k, v in result.items() if k != "bundled_weights"})
    named = {n: sha for n, sha in bundled_models().items() if names_model(text, n)}
    return {**result, "bundled_weights": named}


def outdated_models(result: dict[str, Any], section: str | None = None) -> list[str]:
    """Bundled models that ``result`` names somewhere without recording their current weights' sha256
    there: rows measured before the weights (or the architecture) changed. A result's sections
    (its dict values) are checked one by one (only ``section`` when given); the file-level
    ``bundled_weights``, and any sha256 in the file's top-level values, cover every section."""
    top = {k: v for k, v in result.items() if not isinstance(v, dict) or k == "bundled_weights"}
    top_hashes = set(_SHA.findall(json.dumps(top)))
    if section is not None:
        parts = [json.dumps(result.get(section, {}))]
    else:
        parts = [json.dumps(v) for k, v in result.items() if isinstance(v, dict) and k != "bundled_weights"]
        parts.append(json.dumps({k: v for k, v in top.items() if k != "bundled_weights"}))
    return [
        name
        for name, sha in bundled_models().items()
        if any(names_model(p, name) and sha not in top_hashes and sha not in _SHA.findall(p) for p in parts)
    ]


def outdated_note(result: dict[str, Any], command: str) -> str | None:
    """One Markdown line for a page section whose result has :func:`outdated_models` (else None)."""
    names = outdated_models(result)
    if not names:
        return None
    models = ", ".join(f"`{n}`" for n in names)
    return (
        f"> **Outdated:** the {models} figures here were measured on earlier weights than the bundled "
        f"ones: re-run `{command}`."
    )


_SHA = re.compile(r"\b[0-9a-f]{64}\b")


def names_model(text: str, model: str) -> bool:
    """Whether ``text`` names the registry model ``model`` (``leansam_tiny``, not ``leansam_tiny_teacher``)."""
    return re.search(rf"(?<!\w){re.escape(model)}(?!\w)", text) is not None
