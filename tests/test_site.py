"""Tests of the built student website (`make book` writes it; `make test` builds it first)."""

import html
import re
from pathlib import Path

import pytest

from autograder import notebooks as nbgen

ROOT = nbgen.ROOT
SITE = ROOT / "_build" / "html"
CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))

pytestmark = pytest.mark.site


@pytest.fixture(scope="module")
def pages() -> dict[Path, str]:
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no built website in {SITE}: run `make book` (or `make test`, which builds it)")
    return {p: p.read_text(encoding="utf-8") for p in SITE.rglob("*.html")}


def visible_text(page: str) -> str:
    """The text of a page with tags removed and entities decoded (code spans joined)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def test_every_chapter_and_the_bibliography_are_built(pages):
    for path in CHAPTERS:
        assert SITE / "chapters" / f"{path.stem}.html" in pages, f"{path.stem} missing from the site"
    references = pages[SITE / "references.html"]
    for key in ("Ioffe", "Santurkar"):
        assert key in references


def test_no_solution_code_in_the_student_site(pages):
    """Not collapsed, absent: no line of a reference body appears in any built file."""
    site_text = "\n".join(visible_text(p) for p in pages.values())
    site_text += "\n".join(p.read_text(errors="replace") for p in SITE.rglob("*") if p.suffix in (".ipynb", ".md", ".py", ".txt"))
    checked = 0
    for path in CHAPTERS:
        chapter_text = path.read_text()
        for name, definition in nbgen.load_definitions(path.stem).items():
            for line in definition.solution_text.splitlines():
                line = line.strip()
                if len(line) < 25 or line.startswith("#") or line in chapter_text:
                    continue
                checked += 1
                assert line not in site_text, f"solution code of {path.stem}.{name} in the student site: {line}"
    assert checked > 20, "too few solution lines to make this test meaningful"


def test_exercise_stubs_are_shown(pages):
    text = visible_text(pages[SITE / "chapters" / f"{CHAPTERS[0].stem}.html"])
    assert "raise NotImplementedError" in text and "YOUR CODE HERE" in text


EXTERNAL = re.compile(
    r"<(script|img|iframe|audio|video|source|embed)\b[^>]*\bsrc=[\"']?(https?:)?//"
    r"|<link\b[^>]*\bhref=[\"']?(https?:)?//",
    re.I,
)


def test_site_loads_nothing_from_the_network(pages):
    for path, page in pages.items():
        for tag in re.findall(r"<(?:script|img|iframe|link|audio|video|source|embed)\b[^>]*>", page, re.I):
            if tag.lower().startswith("<link") and re.search(r"rel=[\"']?(next|prev|canonical)", tag):
                continue  # navigation links, not loaded resources
            assert not EXTERNAL.search(tag), f"{path.relative_to(SITE)} loads from the network: {tag}"
    for css in SITE.rglob("*.css"):
        urls = re.findall(r"url\(\s*[\"']?(?:https?:)?//[^)]*\)|@import\s+[\"']?(?:https?:)?//", css.read_text(errors="replace"))
        assert not urls, f"{css.relative_to(SITE)} loads from the network: {urls[:3]}"


def test_equations_render_from_local_mathjax(pages):
    for path in CHAPTERS:
        page = pages[SITE / "chapters" / f"{path.stem}.html"]
        scripts = re.findall(r"<script[^>]*src=\"([^\"]*mathjax[^\"]*)\"", page, re.I)
        assert scripts, f"{path.stem}: no MathJax script"
        for src in scripts:
            assert not src.startswith(("http", "//")), src
            assert (SITE / "chapters" / src.split("?")[0]).resolve().is_file(), f"{src} is not in the site"
        assert "\\(" in page or "\\[" in page, f"{path.stem}: no math found"
    fonts = list((SITE / "_static" / "mathjax").rglob("*.woff"))
    assert fonts, "MathJax fonts are not bundled"


def test_chapters_have_figures_and_no_errors(pages):
    for path in CHAPTERS:
        page = pages[SITE / "chapters" / f"{path.stem}.html"]
        images = re.findall(r"<img[^>]*src=\"([^\"]+\.(?:png|svg))\"", page)
        assert images, f"{path.stem}: no figure"
        for src in images:
            assert (SITE / "chapters" / src).resolve().is_file(), f"{path.stem}: missing image {src}"
        assert "Traceback (most recent call last)" not in visible_text(page)
        assert 'class="output traceback' not in page and "output_error" not in page


def test_pages_show_the_lesson_not_the_build(pages):
    """The site runs the reference, so a graded cell's "passed" (under an empty stub) is not
    shown; nor is the build's timing, nor a link to an empty index."""
    for path, page in pages.items():
        text = visible_text(page)
        name = path.relative_to(SITE)
        assert "public checks passed" not in text, f"{name}: a check reports on the reference"
        assert "chapter executed in" not in text, f"{name}: the build's timing is shown"
        assert "genindex.html" not in page, f"{name}: links to the (empty) general index"


# ------------------------------------------------------------------ cross-chapter references

TOC_CHAPTERS = [c["file"] for c in __import__("yaml").safe_load((ROOT / "_toc.yml").read_text())
                ["parts"][0]["chapters"]]
BOOK_SOURCES = [*CHAPTERS, ROOT / "intro.md", *(ROOT / f"{f}.md" for f in TOC_CHAPTERS if "/" not in f)]
MENTION = re.compile(r"(?<![\w`<{/])[Cc]hapters? \d")


def prose(text: str) -> str:
    """The Markdown prose of a chapter: code cells, code blocks and display math removed."""
    text = re.sub(r"^(`{3,})(\{code-cell\}|\{code-block\}|\w+).*?^\1\s*$", "", text, flags=re.S | re.M)
    return re.sub(r"^\$\$.*?^\$\$.*?$", "", text, flags=re.S | re.M)


@pytest.mark.parametrize("path", BOOK_SOURCES, ids=lambda p: p.stem)
def test_every_chapter_mention_is_a_link_to_that_chapter(path):
    """A reader can follow every "chapter N" of the prose, and it leads to the N-th chapter of
    the table of contents (a {doc} link Sphinx checks; a placeholder page keeps a chapter's
    number until the chapter exists). Sphinx's -n cannot see a mention that is not a link, nor
    a link to the wrong chapter."""
    text = prose(path.read_text(encoding="utf-8"))
    links = re.findall(r"\{doc\}`([^`<\n]*)<([^`>\n]+)>`", text)
    for title, target in links:
        number = re.search(r"\d", title)
        if number:
            expected = "/" + TOC_CHAPTERS[int(number[0]) - 1]
            assert target.strip() == expected, f"{path.name}: '{title.strip()}' links to {target}, not {expected}"
    unlinked = MENTION.findall(re.sub(r"`[^`\n]*`", "", re.sub(r"\{[\w:-]+\}`[^`\n]*`", "", text)))
    assert not unlinked, f"{path.name}: mentions that are not links: {unlinked}"


def test_every_internal_link_of_the_site_resolves(pages):
    """Every link between pages points at a built page and, with a #fragment, at an id on it."""
    ids = {path: set(re.findall(r"\bid=\"([^\"]+)\"", page)) for path, page in pages.items()}
    broken = []
    for path, page in pages.items():
        for href in re.findall(r"<a\b[^>]*\bhref=\"([^\"]+)\"", page):
            href = html.unescape(href)
            if re.match(r"^[a-z][a-z0-9+.-]*:", href) or href.startswith(("_sources/", "../_sources/")):
                continue
            file, _, fragment = href.partition("#")
            target = (path.parent / file).resolve() if file else path
            if target.is_dir():
                target = target / "index.html"
            if target.suffix != ".html":
                if not target.exists():
                    broken.append(f"{path.relative_to(SITE)} -> {href}")
                continue
            if target not in ids or (fragment and fragment not in ids[target]):
                broken.append(f"{path.relative_to(SITE)} -> {href}")
    assert not broken, "links that point nowhere:\n" + "\n".join(sorted(set(broken))[:20])


def test_every_numbered_figure_is_a_picture(pages):
    """A table printed by a figure cell would become a numbered "figure" repeating the caption:
    every figure of the site holds an image, and no caption appears twice on a page."""
    for path, page in pages.items():
        figures = re.findall(r"<figure\b[^>]*>(.*?)</figure>", page, flags=re.S)
        without = [f for f in figures if "<img" not in f]
        assert not without, f"{path.relative_to(SITE)}: {len(without)} figure(s) without an image"
        captions = re.findall(r'<span class="caption-text">(.*?)</span>', page, flags=re.S)
        repeated = {c[:60] for c in captions if captions.count(c) > 1}
        assert not repeated, f"{path.relative_to(SITE)}: captions repeated: {sorted(repeated)}"
