"""Loss-curve plots of runs (``metrics.csv``) as PNG. Needs matplotlib (imported lazily; not a
dependency of leansam: ``pip install matplotlib``)."""

from __future__ import annotations

import csv
from pathlib import Path


def read_metrics(path: str | Path) -> dict[str, list[float]]:
    """Columns of a run's metrics.csv as float lists (empty cells skipped per column)."""
    cols: dict[str, list[float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if v not in ("", None):
                    cols.setdefault(k, []).append(float(v))
    return cols


def _smooth(v: list[float], k: int) -> list[float]:
    out, acc = [], 0.0
    for i, x in enumerate(v):
        acc += x
        if i >= k:
            acc -= v[i - k]
        out.append(acc / min(i + 1, k))
    return out


def plot_runs(root: str | Path, out_dir: str | Path, smooth: int = 20) -> list[Path]:
    """One PNG per run folder under ``root`` with a metrics.csv: loss (raw + moving average) and,
    for segmentation runs, the training IoU. Returns the files written (``<out_dir>/curve_<run>.png``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - optional dependency
        raise RuntimeError("plotting loss curves needs matplotlib: pip install matplotlib") from e
    written = []
    for csv_path in sorted(Path(root).glob("*/metrics.csv")):
        m = read_metrics(csv_path)
        if "loss" not in m:
            continue
        run = csv_path.parent.name
        extra = [k for k in ("iou_r0", "iou_r1", "embed_mse", "decoder_loss") if k in m and k != "loss"]
        fig, axes = plt.subplots(1, 1 + bool(extra), figsize=(5 + 5 * bool(extra), 3.5))
        axes = axes if extra else [axes]
        steps = m["step"]
        axes[0].plot(steps, m["loss"], alpha=0.3, lw=0.8, label="loss")
        axes[0].plot(steps, _smooth(m["loss"], smooth), lw=1.5, label=f"moving avg ({smooth})")
        axes[0].set_xlabel("step")
        axes[0].set_yscale("log")
        axes[0].set_title(f"{run}: training loss")
        axes[0].legend()
        if extra:
            for k in extra:
                axes[1].plot(steps[: len(m[k])], _smooth(m[k], smooth), label=k)
            axes[1].set_xlabel("step")
            axes[1].set_title(f"{run}: training metrics (moving avg)")
            axes[1].legend()
        fig.tight_layout()
        dest = Path(out_dir) / f"curve_{run}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(dest, dpi=90)
        plt.close(fig)
        written.append(dest)
    return written
