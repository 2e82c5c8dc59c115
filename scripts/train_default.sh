#!/usr/bin/env bash
# Trains the bundled default model leansam_tiny on CPU (see docs/training.md), one segment per call.
#   scripts/train_default.sh [ROOT]        # default ROOT=runs/tiny2
# Re-running continues the first unfinished segment from ROOT/<segment>/last.pt (exact resume). On a
# machine without ROOT, pass --from-asset through FROM_ASSET=1 to start from the bundled weights.
set -euo pipefail
ROOT=${1:-runs/tiny2}
python -m leansam.train.recipe train --root "$ROOT" ${FROM_ASSET:+--from-asset}
python -m leansam.train.recipe export --root "$ROOT"   # the newest weights become the bundled ones
# Segment-everything defaults for the new weights (grid thresholds, hierarchical's confident logit;
# validation split). Its "chosen" and "hierarchical.chosen" go into TINY_EVERYTHING and export's
# sha256 into TINY_SHA256 (leansam/zoo/default.py); eval's segment-everything part measures the
# registered defaults, so re-run `eval --only everything` and `docs` after changing them.
python -m leansam.train.recipe calibrate-everything
python -m leansam.train.recipe eval --root "$ROOT"     # so eval measures what users get
python -m leansam.train.recipe docs
python -m leansam.train.recipe curves --root "$ROOT" || echo "(curves skipped: pip install matplotlib)"
