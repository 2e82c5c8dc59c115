"""Which weights an accuracy result was measured on, so that pages flag results of replaced weights.

leansam's own models (``leansam_tiny``) are retrained from time to time: a result written before the
bundled weights changed no longer describes what users get. Benchmarks record
:func:`weights_sha256` of their model; pages call :func:`stale_note` and do not count such a row as
met.
"""

from __future__ import annotations

from pathlib import Path


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
