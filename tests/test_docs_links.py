"""Every relative link in README.md and docs/*.md resolves to a file in the repository, and
every `#anchor` to a heading of that file (GitHub's slugs). No link leaves the repository: the
project carries its own design (docs/design.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*|_(?=\w)|(?<=\w)_", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", text, re.M)}


def _links(path: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", path.read_text()))


def test_the_documents_link_to_something() -> None:
    assert sum(len(_links(p)) for p in DOCUMENTS) > 10
    assert (ROOT / "docs" / "design.md").is_file()


@pytest.mark.parametrize("document", DOCUMENTS, ids=[p.name for p in DOCUMENTS])
def test_every_relative_link_resolves_inside_the_repository(document: Path) -> None:
    broken = []
    for link in _links(document):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (document.parent / target).resolve() if target else document
        if not path.is_relative_to(ROOT):
            broken.append(f"{link}: points outside the repository")
        elif not path.exists():
            broken.append(f"{link}: {path.relative_to(ROOT)} does not exist")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{link}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, f"{document.relative_to(ROOT)}: " + "; ".join(broken)


def test_no_document_names_a_design_file_outside_the_repository() -> None:
    for document in DOCUMENTS:
        assert "DESIGN.md" not in document.read_text(), document.name
