"""``leansam.cli.main`` with the tiny test models registered (for the ``torchrun`` tests).

python -m torch.distributed.run --standalone --nproc_per_node 2 tests/eval/tiny_cli.py eval ...
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from leansam.cli import main
from leansam.registry import _registry
from tests.eval import tiny

if __name__ == "__main__":
    _registry()[tiny.NAME] = tiny.INFO
    _registry()[tiny.SCRIPTED] = tiny.SCRIPTED_INFO
    raise SystemExit(main())
