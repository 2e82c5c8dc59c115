"""Foundation benchmarks: leansam vs the official segment-anything on the same CPU, weights and run.

    python -m benchmarks.foundation [--runs 3] [--threads 2] [--json docs/results/foundation.json]

1. SAM ViT-B image encoder, 1 x 3 x 1024 x 1024: leansam / official time.
2. 50 box prompts on one image: one leansam ``predict_torch`` call vs 50 official ``predict()`` calls
   (each measured end to end: prompt transform, decoder, upscaling to the original size, threshold).

Weights are the deterministic stand-in weights of shared/parity (speed does not depend on values).
Both sides are timed in alternation to cancel machine-load drift. Needs the test extra
(`pip install -e '.[test]'`) for the official package.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import leansam
from leansam.bench.timing import machine_fingerprint, measure_interleaved
from leansam.io import write_json
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

    p_one = leansam.SamPredictor(mine, prompt_block=None)
    p_one.set_features(p_mine.features, p_mine.original_size)

    def ours():  # the default predictor: blocks of prompt_block (4) prompts, one batched decoder call each
        return p_mine.predict_torch(None, None, boxes_t, multimask_output=True, original_coords=True)

    def ours_one_call():  # all 50 prompts in a single decoder call
        return p_one.predict_torch(None, None, boxes_t, multimask_output=True, original_coords=True)

    def official():
        return [p_ref.predict(box=b, multimask_output=True) for b in boxes]

    fns = {"leansam_batched": ours, "leansam_one_call": ours_one_call, "official_loop": official}
    with torch.inference_mode():
        dec = measure_interleaved(fns, runs=runs, warmup=1)
    results["boxes"] = {k: v.to_dict() for k, v in dec.items()}
    results["boxes"]["n_boxes"] = n_boxes
    results["boxes"]["prompt_block"] = p_mine.prompt_block
    results["boxes"]["ratio"] = dec["leansam_batched"].median / dec["official_loop"].median
    results["boxes"]["ratio_one_call"] = dec["leansam_one_call"].median / dec["official_loop"].median
    return results


def _pairs(a: dict, b: dict) -> str:
    return ", ".join(f"{x / y:.2f}" for x, y in zip(a["runs_s"], b["runs_s"]))


def targets(res: dict) -> list[dict]:
    """The foundation issue's two speed targets, as measured in ``res``."""
    e, b = res["encoder"], res["boxes"]
    return [
        {
            "target": "ViT-B image encoder <= 0.75x segment-anything",
            "measured": f"{e['ratio']:.2f}",
            "met": e["ratio"] <= 0.75,
        },
        {
            "target": f"{b['n_boxes']} boxes in one call <= 0.3x {b['n_boxes']} official predict() calls",
            "measured": f"{b['ratio']:.2f}",
            "met": b["ratio"] <= 0.3,
        },
    ]


def render(res: dict) -> str:
    """The docs section for one result of :func:`run`."""
    m, e, b = res["machine"], res["encoder"], res["boxes"]
    load = res.get("load_average")
    load_txt = (
        f" Load average (1 min) {load['start'][0]:.1f} at the start, {load['end'][0]:.1f} at the end."
        if load
        else ""
    )
    t = {x["target"]: x for x in targets(res)}
    v = ["**met**" if x["met"] else "**not met**" for x in t.values()]
    n = b["n_boxes"]
    one_call_row = (
        f"| the same with `prompt_block=None`: all {n} prompts in ONE decoder call "
        f"| {b['leansam_one_call']['median_s']:.2f} s | {b['official_loop']['median_s']:.2f} s "
        f"| {b['ratio_one_call']:.2f} ({_pairs(b['leansam_one_call'], b['official_loop'])}) | (context) |\n"
        if "leansam_one_call" in b
        else ""
    )
    return f"""## Foundation: leansam vs the official segment-anything (SAM ViT-B)

Command (needs the test extra for the official package):

```
{res.get("command", "python -m benchmarks.foundation")}
```

Machine: `{m["cpu"]}`, {m["cores"]} cores, torch {m["torch"]}, {m["threads"]} threads. Weights: {res["weights"]}.{load_txt}
Raw per-run times: `docs/results/foundation.json`.

| quantity | leansam (median) | official (median) | ratio (per interleaved pair) | target |
|---|---|---|---|---|
| ViT-B image encoder, 1 x 3 x 1024 x 1024 | {e["leansam"]["median_s"]:.2f} s | {e["official"]["median_s"]:.2f} s | **{e["ratio"]:.2f}** ({_pairs(e["leansam"], e["official"])}) | <= 0.75: {v[0]} |
| {n} box prompts: one `predict_torch` call (default `prompt_block={b.get("prompt_block", "None")}`) vs {n} `predict()` calls | {b["leansam_batched"]["median_s"]:.2f} s | {b["official_loop"]["median_s"]:.2f} s | **{b["ratio"]:.2f}** ({_pairs(b["leansam_batched"], b["official_loop"])}) | <= 0.30: {v[1]} |
{one_call_row}
Both sides include everything a user waits for: prompt transform, decoder, upscaling of the
3 masks per box to the original image size, and thresholding.

What makes the difference:

* **Encoder**: attention runs on `scaled_dot_product_attention`; the decomposed relative-position
  term is added as a mask built chunk by chunk over queries (at most 96 MB at a time), so neither
  the 4096 x 4096 attention matrix nor the full bias is ever materialised (the official code
  materialises both, 12 x 4096 x 4096 floats per global block).
* **Decoder, many prompts on one image** (`leansam/models/fast/factored.py`): every prompt starts
  from the same 4096 image tokens and changes them only by low-rank updates (an image-to-token
  attention adds a mix of the prompt's ~7 token values; a LayerNorm rescales tokens and channels), so
  after any layer the image tokens of prompt b are exactly `a_b * (D X) + Z_b @ F_b` with X shared,
  Z_b 4096 x ~116 and F_b ~116 x 256. Every projection, the LayerNorm statistics and the first
  transposed convolution then split into one prompt-independent product per image (cached on the
  image's features, checked by value on every call) plus per-prompt products with inner dimension ~56-116
  instead of 256: ~0.45 GMAC per box instead of ~1.05. It is set up from 3 prompts in one call
  (its per-image products cost ~1.3 one-box decodes), never under autograd or ONNX export.
* **Upscaling**: one prompt at a time, the second transposed convolution 32 rows of its 128 x 128 grid at a time
  and separately for even and odd output rows, so each chunk's logits are whole image rows and no
  intermediate reaches 32 MB (glibc's mmap threshold, above which every allocation is fresh
  page-faulted memory): 2x faster than the batched upscaling here.
* **Postprocessing to the original size**: upscale, crop and resize along each axis is one small
  matrix built from interpolation's own weights; columns are one dense product, rows are applied
  32 output rows at a time to the ~15-row band those rows read (`leansam.transforms`), ~10x fewer
  multiply-adds than the dense row matrix.
* The predictor decodes in blocks of 4 prompts (`prompt_block`) and writes each block's masks,
  thresholded in place, straight into the result.

All of this is the same arithmetic reassociated: the parity tests against the official package
(fp32, logits atol 1e-3, IoU 1e-4, masks) run through these paths and pass, and in float64 the
factored decoder matches the plain one to 1e-9 for the SAM, SAM 2 and EfficientSAM decoder variants
(`tests/models/test_fast_decoder.py`). The "one decoder call" row decodes all 50 prompts at once: its
working set no longer fits in cache, which is why the default works in blocks.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--boxes", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="docs/results/foundation.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = list(os.getloadavg())
    res = run(args.runs, args.boxes)
    res["load_average"] = {"start": start, "end": list(os.getloadavg())}
    res["command"] = (
        f"python -m benchmarks.foundation --runs {args.runs} --boxes {args.boxes} --threads {args.threads}"
    )
    if args.json:
        write_json(args.json, res)
    e, b = res["encoder"], res["boxes"]
    sys.stderr.write(
        f"encoder: leansam {e['leansam']['median_s']:.2f} s, official {e['official']['median_s']:.2f} s, "
        f"ratio {e['ratio']:.2f}\n{b['n_boxes']} boxes: leansam one call {b['leansam_batched']['median_s']:.3f} s, "
        f"official loop {b['official_loop']['median_s']:.3f} s, ratio {b['ratio']:.2f} "
        f"(one decoder call: {b['ratio_one_call']:.2f})\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
