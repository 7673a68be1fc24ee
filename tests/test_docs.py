"""The documentation holds together: links resolve, cited sections exist, nothing points outside."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = [p for d in ("src", "tests", "benchmarks", "experiments", "envs")
           for p in sorted((ROOT / d).rglob("*")) if p.suffix in (".py", ".md", ".toml")]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _headings(path: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in path.read_text().splitlines()
            if line.startswith("#")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target, anchor in re.findall(r"\]\(([^)#\s:]*\.md|)(?:#([\w-]+))?\)", page.read_text()):
        path = (page.parent / target) if target else page
        assert path.is_file(), f"{page.name}: link to missing {target}"
        if anchor:
            assert anchor in {_slug(h) for h in _headings(path)}, f"{page.name}: #{anchor}"


def test_cited_doc_sections_exist():
    """Docstrings cite `docs/<page>.md, "<section>"`: the page and a heading starting so exist."""
    cited = 0
    for source in SOURCES + PAGES:
        text = " ".join(source.read_text().split())  # citations may wrap across lines
        for page, section in re.findall(r'docs/([a-z_]+\.md)(?:,? \(?"([^"]+)"\)?)?', text):
            path = ROOT / "docs" / page
            assert path.is_file(), f"{source.relative_to(ROOT)} cites missing docs/{page}"
            if section:
                cited += 1
                assert any(h.startswith(section) for h in _headings(path)), (
                    f"{source.relative_to(ROOT)} cites docs/{page} section {section!r}")
    assert cited >= 10


def test_nothing_refers_to_files_outside_the_repository():
    # The names are assembled so that this file does not mention them either.
    outside = ["DES" + "IGN", "ALGO" + "RITHMS", "SCEN" + "ARIOS", "../" + "shared", "shared" + "/"]
    for source in SOURCES + PAGES + [ROOT / "pyproject.toml", ROOT / ".ci" / "run"]:
        text = source.read_text()
        for name in outside:
            assert name not in text, f"{source.relative_to(ROOT)} mentions {name}"
