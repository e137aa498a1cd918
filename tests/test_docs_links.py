"""Every link in the README and docs/ points inside the repository, at a file that exists (a
fresh clone must be readable offline; a renamed file must not leave a dead link)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))  # code blocks hold no links
    return LINK.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_in_the_repository_and_resolve(page: Path) -> None:
    problems = []
    for target in _links(page):
        path = target.split("#", 1)[0]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            problems.append(f"{target}: points outside the repository")
        elif path and not (page.parent / path).exists():
            problems.append(f"{target}: no such file")
    assert problems == []


def test_the_pages_have_links_to_check() -> None:
    assert len(_links(ROOT / "README.md")) > 10
