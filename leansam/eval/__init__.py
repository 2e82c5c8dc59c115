"""Evaluation: mIoU with ground-truth prompts and COCO AP with detector boxes.

* :func:`evaluate` / :class:`EvalConfig` / :class:`EvalResult` — a model on a COCO-format
  data set (resumable per-image cache, ``torchrun`` sharding); ``leansam eval`` on the command line.
* :class:`MaskIoUEvaluator`, :class:`COCOInstanceEvaluator` — detectron2-style
  ``reset / process / evaluate`` evaluators, independent of models and training.
* :mod:`leansam.eval.gt_prompts` — box / centre-click / random-click prompts from masks.
"""

from __future__ import annotations

from .coco_eval import EvalConfig, EvalResult, evaluate
from .evaluators import AP_NAMES, AREA_RANGES, COCOInstanceEvaluator, MaskIoUEvaluator, area_range, mask_iou
from .gt_prompts import PROMPT_KINDS, InstancePrompts, make_prompts, mask_center

__all__ = [
    "AP_NAMES",
    "AREA_RANGES",
    "PROMPT_KINDS",
    "COCOInstanceEvaluator",
    "EvalConfig",
    "EvalResult",
    "InstancePrompts",
    "MaskIoUEvaluator",
    "area_range",
    "evaluate",
    "make_prompts",
    "mask_center",
    "mask_iou",
]
