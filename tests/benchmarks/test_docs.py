"""The generated docs agree with the results files they are built from (``python -m benchmarks check``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import __main__ as pages

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def test_pages_match_a_rebuild_from_the_results_files(in_repo):
    diffs = pages.stale_pages()
    assert not diffs, (
        "a generated page was edited by hand or its results changed; run `python -m benchmarks docs`:\n"
        + "\n".join(diffs)[:4000]
    )


def test_every_block_page_has_a_generated_block(in_repo):
    for page in pages.BLOCK_PAGES:
        assert pages._BLOCK.search(page.read_text()), f"{page} has no generated block"


def test_an_edited_number_is_caught(in_repo, monkeypatch, tmp_path):
    page = tmp_path / "compression.md"
    text = (REPO / "docs" / "compression.md").read_text()
    ratio = re.search(r"\(0\.\d\dx\)", text).group(0)  # the first generated ratio on the page
    fake = "(0.01x)" if ratio != "(0.01x)" else "(0.02x)"
    edited = text.replace(ratio, fake, 1)
    assert edited != text
    page.write_text(edited)
    monkeypatch.setattr(pages, "BLOCK_PAGES", (page,))
    diffs = [d for d in pages.stale_pages() if str(page) in d]
    assert len(diffs) == 1 and fake in diffs[0]
