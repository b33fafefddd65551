"""The README and the manual under docs/: every ```python block runs and prints what it shows,
every relative link resolves (to a file, and to a heading where it names one), the README stays
a front page (at most 250 lines) and links every page of the manual.

Blocks fenced ```py are not run: they need GPUs or a Ray cluster, and each says which test runs
the same code on a CPU."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 250

FENCE = re.compile(r"^(`{3,}|~{3,})[^\n]*\n.*?^\1[ \t]*$", flags=re.S | re.M)
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+).+?\1", flags=re.S)


def pages() -> list[Path]:
    """The README and every page of the manual."""
    return [README, *sorted(DOCS.glob("*.md"))]


def python_blocks() -> list[tuple[Path, int, str]]:
    """(page, block number within the page, code) of every ```python block."""
    blocks = []
    for page in pages():
        for i, code in enumerate(re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)):
            blocks.append((page, i, code))
    return blocks


def block_id(block: tuple[Path, int, str]) -> str:
    return f"{block[0].relative_to(REPO)}#{block[1]}"


@pytest.mark.parametrize("block", python_blocks(), ids=block_id)
def test_python_example_runs_and_prints(block, capsys):
    page, _, code = block
    if "import torch, timm, transformers" in code:
        pytest.importorskip("timm")
        pytest.importorskip("transformers")
    exec(compile(code, f"{block_id(block)} (python block)", "exec"), {"__name__": "docs"})
    assert capsys.readouterr().out.strip(), f"{block_id(block)}: every example prints what it shows"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())   # a link's text only
    text = text.lower().replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor in a page (a repeated heading gets -1, -2, ... as GitHub gives it)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", page.read_text()), flags=re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(page: Path) -> list[str]:
    """The targets of a page's links outside code: those without a scheme (http:, mailto:)."""
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text()))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t, flags=re.I)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path)).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(REPO)} "
                          f"(it has {sorted(anchors(dest))})")
    return broken


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(REPO)}: broken links:\n" + "\n".join(broken)


def test_the_link_checker_sees_a_broken_file_and_a_broken_anchor(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "other.md").write_text("# Other page\n\n## The `--flag` option: on\n")
    page = tmp_path / "page.md"
    page.write_text("See [it](other.md#the---flag-option-on), [gone](missing.md), [bad](other.md#nothing),\n"
                    "[web](https://example.com/x), and `[code](not-a-link.md)`.\n\n"
                    "```bash\n[in a block](also-not.md)\n```\n")
    assert [b.split(":")[0] for b in broken_links(page)] == ["missing.md", "other.md#nothing"]


def test_readme_is_a_front_page():
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: the details belong in docs/ (at most {README_MAX_LINES})"


def test_readme_links_every_page_of_the_manual():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    missing = [str(p.relative_to(REPO)) for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert DOCS.is_dir() and any(DOCS.glob("*.md")), "docs/ holds the manual"
    assert not missing, f"pages of docs/ that README.md does not link: {missing}"


def test_every_page_says_who_it_is_for():
    """A page opens, after its title, with a line in italics saying who it is for."""
    for page in sorted(DOCS.glob("*.md")):
        body = page.read_text().split("\n\n")
        assert body[0].startswith("# ") and body[1].startswith("*For "), f"{page.name} opens with {body[1][:60]!r}"
