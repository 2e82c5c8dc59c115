"""Structural pruning of image encoders (SlimSAM's method) and self-describing pruned models.

    from leansam.prune import PruneConfig, prune_model, save_pruned
    pruned, report = prune_model(teacher, "sam_vit_b", PruneConfig(ratio=0.5))
    save_pruned(pruned, "slim50", report)        # leansam.build_model("slim50") loads it

See docs/pruning.md.
"""

from __future__ import annotations

from .arch import build_from_arch, describe, read_arch, save_pruned
from .pruner import PruneConfig, prune_model

__all__ = ["PruneConfig", "build_from_arch", "describe", "prune_model", "read_arch", "save_pruned"]
