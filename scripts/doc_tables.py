"""Splices a generated block into a docs page between two HTML-comment markers."""

from __future__ import annotations

import sys
from pathlib import Path


def splice(page: Path, begin: str, end: str, body: str, check: bool) -> int:
    """Replaces the text between ``begin`` and ``end`` in ``page`` with ``body``.

    Returns 0 on success (or, with ``check``, when the page already holds ``body``), 1 when
    ``check`` finds a difference, 2 when the markers are missing.
    """
    text = page.read_text()
    if begin not in text or end not in text:
        print(f"error: {page} lacks the markers {begin} / {end}", file=sys.stderr)
        return 2
    head, rest = text.split(begin, 1)
    new = f"{head}{begin}\n{body}\n{end}{rest.split(end, 1)[1]}"
    if check:
        return 0 if new == text else 1
    page.write_text(new)
    return 0
