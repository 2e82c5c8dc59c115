"""The commands that write an output folder, as test cases shared by the output tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.train.test_runs import TINY

from .conftest import EXAMPLE

BOX = ["--box", "10,10,60,60"]
PRUNE = ["--ratio", "0.5", "--importance", "magnitude", "--calib", "synth:2:0", "--num-calib", "1"]


@dataclass(frozen=True)
class Case:
    """A command writing ``--out``: its arguments, those of a rerun with work to do, the files of
    its old output that a failed rerun must leave byte for byte (None: all of them), and the bytes
    left free on a full disk (for a run that writes small files before its big one)."""

    args: Callable[[Path, dict], list]
    rerun: Callable[[Path, dict], list] | None = None
    kept: tuple[str, ...] | None = None
    free: int = 0


def _recipe(ctx: dict) -> Path:
    path = ctx["root"] / "recipe.yaml"
    if not path.exists():
        gate = {"images": "synth:1:7", "prompts_per_image": 1, "everything": False, "min_box_iou": 0.0}
        step = {"prune": {"ratio": 0.5, "importance": "magnitude", "calib": "synth:2:0", "num_calib": 1}}
        path.write_text(yaml.safe_dump({"model": "leansam_nano", "gate": gate, "steps": [step]}))
    return path


def _eval_data(ctx: dict) -> list:
    return ["--images", ctx["set"] / "images", "--annotations", ctx["set"] / "annotations.json"]


def _sweep(ctx: dict) -> Path:
    path = ctx["root"] / "sweep.yaml"
    if not path.exists():
        sweep = {"model": "leansam_nano", "ratios": [0.5], "importances": ["magnitude"], "save_models": True}
        sweep.update(eval={"data": "synth:1:1000"}, prune={"calib": "synth:2:0", "num_calib": 1})
        path.write_text(yaml.safe_dump(sweep))
    return path


CASES = {
    "segment": Case(lambda out, ctx: ["segment", EXAMPLE, *BOX, "--out", out]),
    "segment dataset": Case(lambda out, ctx: ["segment", ctx["set"] / "images", *BOX, "--out", out]),
    "data synth": Case(lambda out, ctx: ["data", "synth", "--n", "2", "--out", out]),
    "prune": Case(lambda out, ctx: ["prune", "--model", "leansam_nano", *PRUNE, "--out", out]),
    "compress": Case(lambda out, ctx: ["compress", "--recipe", _recipe(ctx), "--out", out]),
    "compress --sweep": Case(
        lambda out, ctx: ["compress", "--sweep", _sweep(ctx), "--no-timing", "--out", out]
    ),
    "train": Case(
        lambda out, ctx: ["train", "--out", out, "--steps", "2", *TINY],
        rerun=lambda out, ctx: ["train", "--out", out, "--steps", "4", *TINY],
        kept=("last.pt", "model.pt"),
        free=256 << 10,  # config.json and metrics.csv fit, the checkpoint does not
    ),
    "eval": Case(lambda out, ctx: ["eval", "--model", "tiny_scripted", *_eval_data(ctx), "--out", out]),
    "bench": Case(lambda out, ctx: ["bench", "--render", ctx["bench"], "--out", out]),
}


def tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root``: files with their bytes, folders and links as None."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
        for p in sorted(root.rglob("*"))
    }


def staging(root: Path) -> list[Path]:
    return list(root.rglob(".leansam-stage-*"))
