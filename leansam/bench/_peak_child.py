"""``python -m leansam.bench._peak_child NAME``: peak memory of one one-box call in a fresh process.

Used by :func:`leansam.bench.memory.segany_peak_subprocess`; prints one JSON line.
"""

from __future__ import annotations

import torch


def main(argv: list[str] | None = None) -> int:
    """Prints ``{"peak_bytes", "method", "process_peak_bytes"}``."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description="peak memory of one end-to-end one-box call (fresh process)")
    ap.add_argument("name")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--size", default="480x640")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from .memory import _status_kib, peak_memory
    from .protocol import BenchConfig, _Calls, load_bench_model, test_image

    h, w = (int(v) for v in args.size.split("x"))
    config = BenchConfig(
        device=args.device, dtype=args.dtype, weights="random", seed=args.seed, image_size=(h, w)
    )
    model, _ = load_bench_model(args.name, config)
    image, _ = test_image((h, w), args.seed)
    calls = _Calls(model, config, image)
    peak = peak_memory(calls.segany, args.device)
    print(json.dumps({**peak.to_dict(), "process_peak_bytes": (_status_kib("VmHWM") or 0) * 1024}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
