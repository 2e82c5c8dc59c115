"""Per-frame tracking time with both sides in bfloat16 (results of ``video_speed --precision bfloat16``).

python -m benchmarks.video_speed_bf16 [video_speed options]
"""

from __future__ import annotations

from .video_speed import main as _main
from .video_speed import render, targets

__all__ = ["main", "render", "targets"]


def main(argv: list[str] | None = None) -> int:
    return _main(["--precision", "bfloat16", *(argv or [])])


if __name__ == "__main__":
    raise SystemExit(main())
