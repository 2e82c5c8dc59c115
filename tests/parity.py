"""Access to the checkpoint-parity fixtures in ``shared/parity`` (see its README).

Each fixture folder holds the official checkpoint's key manifest, and ``case.npz``
with what the official implementation computed on deterministic stand-in
weights. Tests use these helpers to regenerate the weights and read the case.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

_REPO = Path(__file__).resolve().parents[1]


def parity_dir() -> Path:
    """The fixture root: $LEANSAM_PARITY_DIR, else ../shared/parity or ./shared/parity."""
    candidates = []
    if os.environ.get("LEANSAM_PARITY_DIR"):
        candidates.append(Path(os.environ["LEANSAM_PARITY_DIR"]))
    candidates += [_REPO.parent / "shared" / "parity", _REPO / "shared" / "parity"]
    for c in candidates:
        if (c / "synthetic_weights.py").exists():
            return c
    # A missing fixture folder is a broken test setup, never a pass or a skip.
    pytest.fail(
        f"parity fixtures not found (looked in {[str(c) for c in candidates]}); set LEANSAM_PARITY_DIR"
    )


@functools.cache
def _synthetic_module():
    path = parity_dir() / "synthetic_weights.py"
    spec = importlib.util.spec_from_file_location("leansam_parity_synthetic_weights", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def manifest(name: str) -> dict:
    return json.loads((parity_dir() / name / "manifest.json").read_text())


def meta(name: str) -> dict:
    return json.loads((parity_dir() / name / "meta.json").read_text())


def stand_in_state_dict(name: str) -> tuple[dict[str, torch.Tensor], str | None]:
    """(state_dict, wrapper key or None) exactly as in the official checkpoint file."""
    return _synthetic_module().build_state_dict(parity_dir() / name)


def write_stand_in_checkpoint(name: str, path: str | Path) -> Path:
    """Writes the stand-in weights in the official file layout (wrapper included)."""
    _synthetic_module().write_checkpoint(parity_dir() / name, path)
    return Path(path)


def sub_state_dict(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Entries under ``prefix`` (e.g. ``"image_encoder."``) with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_case(name: str) -> dict[str, np.ndarray]:
    with np.load(parity_dir() / name / "case.npz") as z:
        return {k: z[k] for k in z.files}


def encoder_input(case: dict[str, np.ndarray]) -> torch.Tensor:
    """The 1 x 3 x S x S float32 tensor the fixture fed to the official image encoder."""
    seed = int(case["encoder_input_seed"])
    size = int(case["encoder_input_size"])
    x = np.random.default_rng(seed).standard_normal((1, 3, size, size)).astype(np.float32)
    return torch.from_numpy(x)


def case_masks(case: dict[str, np.ndarray], prompt_set: str) -> np.ndarray:
    """Unpacks ``<set>_masks`` to a bool array C x H x W."""
    shape = tuple(int(s) for s in case[f"{prompt_set}_masks_shape"])
    bits = np.unpackbits(case[f"{prompt_set}_masks"])[: int(np.prod(shape))]
    return bits.reshape(shape).astype(bool)


def case_prompts(case: dict[str, np.ndarray], prompt_set: str) -> dict[str, np.ndarray | None]:
    """Keyword arguments for ``SamPredictor.predict`` of one prompt set."""
    if prompt_set == "points":
        return {"point_coords": case["points_coords"], "point_labels": case["points_labels"], "box": None}
    if prompt_set == "box":
        return {"point_coords": None, "point_labels": None, "box": case["box_box"]}
    if prompt_set == "box_points":
        return {
            "point_coords": case["box_points_coords"],
            "point_labels": case["box_points_labels"],
            "box": case["box_points_box"],
        }
    raise ValueError(prompt_set)


PROMPT_SETS = ("points", "box", "box_points")


def assert_close_scaled(
    mine: torch.Tensor | np.ndarray, ref: np.ndarray, tol: float = 1e-4, what: str = ""
) -> float:
    """max|mine - ref| <= tol * max(1, max|ref|); returns the observed max abs difference.

    The fixtures store fp16, whose rounding alone is up to 4.9e-4 * |x|; the
    tolerance is therefore widened by that storage error, which is reported.
    """
    mine = np.asarray(
        mine.detach().float().cpu() if isinstance(mine, torch.Tensor) else mine, dtype=np.float32
    )
    ref32 = ref.astype(np.float32)
    assert mine.shape == ref32.shape, f"{what}: shape {mine.shape} != {ref32.shape}"
    diff = np.abs(mine - ref32)
    fp16_storage = np.abs(ref32) * 2.0**-11 if ref.dtype == np.float16 else 0.0
    scale = max(1.0, float(np.abs(ref32).max()))
    excess = diff - fp16_storage
    assert float(excess.max()) <= tol * scale, (
        f"{what}: max abs diff {diff.max():.3e} beyond fp16 storage error exceeds {tol:g} x scale {scale:.3g}"
    )
    return float(diff.max())
