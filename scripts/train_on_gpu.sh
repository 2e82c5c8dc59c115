#!/usr/bin/env bash
# Trains the recipe's next segment (after the bundled one) on a CUDA machine for at most LIMIT
# seconds, then leaves its weights (fp16, with the step reached) and metrics in OUT, to be
# committed as weights/leansam_tiny/<segment>.pt(.metrics.csv): `recipe train --from-asset` then
# finishes the segment from them, or continues it where LIMIT cut it short.
# Usage: scripts/train_on_gpu.sh OUT [LIMIT_SECONDS] [DATA_WORKERS]
set -u
out=${1:?usage: scripts/train_on_gpu.sh OUT [LIMIT_SECONDS] [DATA_WORKERS]}
limit=${2:-470}
workers=${3:-14}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
timeout -s INT "$limit" "$python" -m leansam.train.recipe train --root runs/gpu --from-asset \
    --device cuda --data-workers "$workers" --threads 2 >"$out/train.log" 2>&1
echo "train exit status $? after at most ${limit}s"
"$python" - "$out" <<'PY'
import sys
from pathlib import Path

from leansam.train.recipe import SEGMENTS, snapshot_run

for seg in reversed(SEGMENTS):
    run = Path("runs/gpu") / seg.name
    if (run / "last.pt").is_file():
        print("snapshot:", snapshot_run(run, seg.name, Path(sys.argv[1])))
        break
else:
    print("no run with a last.pt under runs/gpu")
PY
