"""Held-out accuracy of training checkpoints: how a running segment's weights compare with the
bundled ones before the segment ends.

``python -m leansam.train.recipe probe`` evaluates one checkpoint (default: the recipe's newest
weights, see :func:`~leansam.train.recipe.latest_weights`) on the held-out and out-of-style sets
with the box and centre-click prompts of :func:`~leansam.train.evaluate.evaluate_gt`, and records
one row per (segment, step) in :data:`PROBES`; docs/training.md shows the rows.
"""

from __future__ import annotations

import json
from pathlib import Path

from .data import open_source
from .evaluate import evaluate_gt
from .runner import write_json_file

PROBES = Path("docs/results/training_probes.json")
#: The sets a probe measures (names of :data:`~leansam.train.recipe.EVAL_SETS`).
PROBE_SETS = ("held_out", "out_of_style")
BEGIN, END = "<!-- probes -->", "<!-- /probes -->"


def checkpoint_step(state: object, path: str | Path) -> tuple[str, int]:
    """(segment, step) of a loaded run file (:func:`~leansam.train.recipe.load_run_file`): a run's
    ``last.pt`` / ``model.pt`` or a committed snapshot, read from ``path``.

    A snapshot names its segment; a run file's segment is its folder's name. ``model.pt`` (a
    finished segment's weights) has no step: -1."""
    path = Path(path)
    if isinstance(state, dict) and "step" in state and "module" in state:
        return str(state.get("segment", path.parent.name)), int(state["step"])
    return path.parent.name, -1


def probe(path: str | Path, sets: dict[str, str], root: str) -> dict:
    """One probe row: ``path``'s weights evaluated on ``sets`` (name -> data spec)."""
    from .recipe import load_recipe_model, load_run_file

    state = load_run_file(path)  # read once: its step and its weights
    segment, step = checkpoint_step(state, path)
    model = load_recipe_model(path, state=state)
    row: dict = {"segment": segment, "step": step, "weights": str(path), "sets": {}}
    for name, spec in sets.items():
        r = evaluate_gt(model, open_source(spec))
        row["sets"][name] = {
            "spec": spec,
            "box_miou": r["box_miou"],
            "point_miou": r["point_miou"],
            "background_miou": r["background_miou"],
            "n_instances": r["n_instances"],
        }
    row["command"] = f"python -m leansam.train.recipe probe --root {root} --weights {path}"
    return row


def record(row: dict, path: Path = PROBES) -> list[dict]:
    """Adds ``row`` to the probes file (replacing one of the same segment and step); returns the rows,
    ordered by segment and step."""
    from .recipe import SEGMENTS

    rows = json.loads(path.read_text(encoding="utf-8"))["rows"] if path.is_file() else []
    order = [s.name for s in SEGMENTS]
    rows = [r for r in rows if (r["segment"], r["step"]) != (row["segment"], row["step"])] + [row]
    rows.sort(
        key=lambda r: (
            order.index(r["segment"]) if r["segment"] in order else len(order),
            r["step"] if r["step"] >= 0 else float("inf"),  # a finished segment's final weights last
        )
    )
    write_json_file(path, {"rows": rows})
    return rows


def probe_stage(root: str, weights: str | None = None) -> dict:
    """Probes ``weights`` (default: the newest weights under ``root``) and records the row."""
    from .recipe import EVAL_SETS, latest_weights

    path = Path(weights) if weights else latest_weights(root)
    row = probe(path, {name: EVAL_SETS[name] for name in PROBE_SETS}, root)
    record(row)
    return row


def probes_markdown(probes: dict, bundled: dict) -> str:
    """The probes block of docs/training.md: one row per probe, under the bundled weights' numbers
    (``bundled``: ``default_model.json``'s ``sets``)."""
    from .recipe import BUNDLED_SEGMENT as bundled_segment

    lines = [
        "| weights | step | held-out box | held-out click | out-of-style box | out-of-style click "
        "| held-out background click |",
        "|---|---|---|---|---|---|---|",
    ]

    def cells(sets: dict) -> str:
        miou = [f"{sets[n]['box_miou']:.3f} | {sets[n]['point_miou']:.3f}" for n in PROBE_SETS]
        bg = sets["held_out"].get("background_miou")
        return " | ".join([*miou, "not measured" if bg is None else f"{bg:.3f}"])

    lines.append(f"| the bundled weights ({bundled_segment}) | | {cells(bundled)} |")
    for r in probes["rows"]:
        step = "final" if r["step"] < 0 else str(r["step"])
        lines.append(f"| {r['segment']} checkpoint | {step} | {cells(r['sets'])} |")
    first = probes["rows"][0]["sets"] if probes["rows"] else {}
    sizes = ", ".join(f"`{s['spec']}` ({s['n_instances']} instances)" for s in first.values())
    return "\n".join(
        [
            "Held-out accuracy of training checkpoints (`python -m leansam.train.recipe probe`; "
            f"box and centre click as above, on {sizes or 'the held-out sets'}):",
            "",
            *lines,
        ]
    )
