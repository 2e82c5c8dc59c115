"""Foundation benchmarks: leansam vs the official segment-anything on the same CPU, weights and run.

    python -m benchmarks.foundation [--runs 5] [--threads 2] [--json out.json]

1. SAM ViT-B image encoder, 1 x 3 x 1024 x 1024: leansam / official time.
2. 50 box prompts on one image: one leansam ``predict_torch`` call vs 50 official ``predict()`` calls
   (each measured end to end: prompt transform, decoder, upscaling to the original size, threshold).

Weights are the deterministic stand-in weights of shared/parity (speed does not depend on values).
Both sides are timed in alternation to cancel machine-load drift. Needs the test extra
(`pip install -e '.[test]'`) for the official package.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import leansam
from leansam.bench.timing import machine_fingerprint, measure_interleaved
from tests import oracles
from tests import parity as P


def _boxes(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x0, y0 = rng.uniform(0, w * 0.7, n), rng.uniform(0, h * 0.7, n)
    bw, bh = rng.uniform(20, w * 0.3, n), rng.uniform(20, h * 0.3, n)
    return np.stack([x0, y0, np.minimum(x0 + bw, w), np.minimum(y0 + bh, h)], 1).astype(np.float32)


def run(runs: int = 5, n_boxes: int = 50) -> dict:
    sa = oracles.segment_anything()
    with tempfile.TemporaryDirectory() as d:
        ckpt = P.write_stand_in_checkpoint("sam_vit_b", Path(d) / "sam_vit_b.pth")
        mine = leansam.build_model("sam_vit_b", checkpoint=ckpt)
        ref = sa.sam_model_registry["vit_b"](checkpoint=str(ckpt)).eval()
    case = P.load_case("sam_vit_b")
    image = case["image"]
    x = torch.randn(1, 3, 1024, 1024)
    results: dict = {"machine": machine_fingerprint().to_dict(), "weights": "stand-in (shared/parity)"}

    with torch.inference_mode():
        enc = measure_interleaved(
            {"leansam": lambda: mine.image_encoder(x), "official": lambda: ref.image_encoder(x)},
            runs=runs,
            warmup=1,
        )
    results["encoder"] = {k: v.to_dict() for k, v in enc.items()}
    results["encoder"]["ratio"] = enc["leansam"].median / enc["official"].median

    p_mine, p_ref = leansam.SamPredictor(mine), sa.SamPredictor(ref)
    p_mine.set_image(image)
    p_ref.set_image(image)
    boxes = _boxes(n_boxes, *image.shape[:2])
    boxes_t = torch.from_numpy(boxes)

    def ours():
        return p_mine.predict_torch(None, None, boxes_t, multimask_output=True, original_coords=True)

    def official():
        return [p_ref.predict(box=b, multimask_output=True) for b in boxes]

    with torch.inference_mode():
        dec = measure_interleaved({"leansam_batched": ours, "official_loop": official}, runs=runs, warmup=1)
    results["boxes"] = {k: v.to_dict() for k, v in dec.items()}
    results["boxes"]["n_boxes"] = n_boxes
    results["boxes"]["ratio"] = dec["leansam_batched"].median / dec["official_loop"].median
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--boxes", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = run(args.runs, args.boxes)
    text = json.dumps(res, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    e, b = res["encoder"], res["boxes"]
    sys.stderr.write(
        f"encoder: leansam {e['leansam']['median_s']:.2f} s, official {e['official']['median_s']:.2f} s, "
        f"ratio {e['ratio']:.2f}\n{b['n_boxes']} boxes: leansam one call {b['leansam_batched']['median_s']:.3f} s, "
        f"official loop {b['official_loop']['median_s']:.3f} s, ratio {b['ratio']:.2f}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
