"""The project's text speaks of the project alone: no page carries the words of a work log."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK_LOG = re.compile(
    r"session|work period|\blent\b|acceptance|try[0-9]|next steps|correction|draft"
    r"|this (task|issue)|no (gpu|device) (was|this|sync)",
    re.IGNORECASE,
)


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "docs" / "results").glob("*.json"))]


def test_docs_hold_no_work_log():
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
            for p in _pages() for i, line in enumerate(p.read_text().splitlines(), 1)
            if WORK_LOG.search(line)]
    assert not hits, "\n".join(hits)


def test_the_check_finds_a_work_log_line():
    assert WORK_LOG.search("We tried this in the last session; next steps below.")
    assert not WORK_LOG.search("The KV cache keeps the last W frames.")
