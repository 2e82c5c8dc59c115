"""``leansam eval``: mIoU with ground-truth prompts, or COCO AP with detector boxes.

    leansam eval --model mobile_sam --images val2017 --annotations instances_val2017.json --prompt center
    leansam eval --model mobile_sam --images val2017 --annotations instances_val2017.json \\
        --detections vitdet_results.json --out eval_out
    torchrun --nproc_per_node 2 -m leansam.cli eval ... --out eval_out     # images split across processes
    leansam eval ... --out eval_out --engine ray --address auto --workers 8  # on a Ray cluster

Per-image results are cached in ``--out`` as they are computed: run the same command again to
resume an interrupted run (``--fresh`` starts over). The summary goes to stderr, the full
result to ``OUT/results.json`` (and the masks as COCO results to ``OUT/segm_results.json`` with
``--detections``).
"""

from __future__ import annotations

import argparse
import json

from ..batch.cli import add_engine_args
from ..eval.gt_prompts import PROMPT_KINDS
from .common import add_overwrite_arg, log, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model on COCO-format data (mIoU with GT prompts, or AP with detector boxes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="registry name (`leansam models`)")
    p.add_argument("--checkpoint", default=None, help="weights file (default: the official checkpoint)")
    p.add_argument("--images", required=True, help="folder the annotations' file_name entries are in")
    p.add_argument("--annotations", required=True, help="COCO (or LVIS) instances JSON")
    p.add_argument(
        "--allow-outside-images",
        action="store_true",
        help="read file_name entries outside --images (absolute, '..', symlinks out): trusted files only",
    )
    p.add_argument(
        "--prompt",
        choices=PROMPT_KINDS,
        default="box",
        help="prompt from each GT instance: box (annotation bbox), tight-box (box of the mask), "
        "center (most interior pixel), randomN (N clicks in the mask; seeded). Default: box",
    )
    p.add_argument("--detections", default=None, help="COCO results JSON of a detector: report mask AP")
    p.add_argument(
        "--out", default=None, help="output folder: results.json and the resumable per-image cache"
    )
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N images")
    p.add_argument("--seed", type=int, default=0, help="seed of the random clicks (default 0)")
    p.add_argument(
        "--batch-size", type=positive_int, default=64, help="prompts per decoder call (default 64)"
    )
    p.add_argument("--fresh", action="store_true", help="discard cached per-image results in --out")
    add_overwrite_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="also print the result as JSON on stdout")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument(
        "--trust-pickle", action="store_true", help="allow checkpoints that are pickled Python objects"
    )
    add_engine_args(p, shards=False)


def run(args: argparse.Namespace) -> int:
    from ..eval.coco_eval import EvalConfig, evaluate
    from ..registry import get_model_info

    get_model_info(args.model)  # unknown names fail before any data is read
    cfg = EvalConfig(
        model=args.model,
        images=args.images,
        annotations=args.annotations,
        checkpoint=args.checkpoint,
        prompt=args.prompt,
        detections=args.detections,
        out=args.out,
        limit=args.limit,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
        fresh=args.fresh,
        trust_pickle=args.trust_pickle,
        allow_outside_images=args.allow_outside_images,
        engine=args.engine,
        address=args.address,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    result = evaluate(cfg)
    import os

    if int(os.environ.get("RANK", "0") or 0) == 0:
        log(result.summary())
        if args.out:
            log(f"results written to {args.out}/results.json")
        if args.json:
            print(json.dumps(result.to_dict(), indent=1))
    return 0
