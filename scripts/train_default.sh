#!/usr/bin/env bash
# Reproduces the bundled default model leansam_tiny on CPU (see docs/training.md).
#   scripts/train_default.sh [ROOT]        # default ROOT=runs/tiny
# Stages (each resumable: re-running continues from ROOT/<stage>/last.pt):
#   teacher  leansam_tiny_teacher from scratch on synthetic shapes (2 processes, gloo)
#   student  leansam_tiny distilled from it (encoder MSE), then fine-tuned on the masks (250 + 400 steps)
#   eval     held-out synthetic mIoU (box / centre point), latency vs MobileSAM -> ROOT/results.json
#   export   student weights -> leansam/assets/leansam_tiny.pt (prints the sha256 for leansam/zoo/default.py)
#   curves   loss curves -> docs/curve_<run>.png (needs matplotlib)
set -euo pipefail
ROOT=${1:-runs/tiny}
export OMP_NUM_THREADS=1
python -m torch.distributed.run --nproc_per_node 2 --master_port "${MASTER_PORT:-29611}" \
    -m leansam.train.recipe teacher --root "$ROOT"
python -m torch.distributed.run --nproc_per_node 2 --master_port "${MASTER_PORT:-29611}" \
    -m leansam.train.recipe student --root "$ROOT"
python -m leansam.train.recipe eval --root "$ROOT"
python -m leansam.train.recipe export --root "$ROOT"
python -m leansam.train.recipe curves --root "$ROOT" || echo "(curves skipped: pip install matplotlib)"
