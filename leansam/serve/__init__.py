"""``leansam serve``: an interactive segmentation web app and its HTTP API (FastAPI + uvicorn).

Needs the ``serve`` extra: ``pip install 'leansam[serve]'``. Import :func:`create_app` from
:mod:`leansam.serve.app` after :func:`require_serve_deps` succeeded.
"""

from __future__ import annotations

import importlib.util

INSTALL_HINT = "pip install 'leansam[serve]'"
_DEPS = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart"}


def require_serve_deps() -> None:
    """Raises ImportError naming the missing packages and the install command."""
    missing = [pkg for mod, pkg in _DEPS.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise ImportError(f"leansam serve needs {', '.join(missing)}: {INSTALL_HINT}")
