"""Segment everything: automatic mask generation with pluggable prompt samplers.

* :class:`AutomaticMaskGenerator` — segment_anything's generator and records, plus
  TinySAM's hierarchical sampling and MobileSAMv2's box prompts.
* :func:`load_boxes` — validated box prompts from a COCO-style JSON file, an array or a callable.
* :mod:`leansam.everything.ops` — vectorised NMS, box, stability and RLE helpers (torch).
"""

from __future__ import annotations

from .generator import STRATEGIES, AutomaticMaskGenerator, GenerateStats, GeneratorOptions
from .records import OUTPUT_MODES, MaskSet
from .samplers import BoxSampler, GridSampler, HierarchicalSampler, PromptRound, PromptSampler, load_boxes

__all__ = [
    "OUTPUT_MODES",
    "STRATEGIES",
    "AutomaticMaskGenerator",
    "BoxSampler",
    "GenerateStats",
    "GeneratorOptions",
    "GridSampler",
    "HierarchicalSampler",
    "MaskSet",
    "PromptRound",
    "PromptSampler",
    "load_boxes",
]
