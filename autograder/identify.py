"""Which assignment a submission belongs to, from what it holds.

A released notebook names its assignment in its graded cells (``check("ch02_bn_forward",
...)``) and its exercises in nbgrader's ``grade_id``s; a ``.py`` file defines the
exercises' names. :func:`assignment_evidence` collects both; :func:`other_assignment`
says when a submission is plainly another chapter's (none of this assignment's exercises,
some of another's), so it is refused with the right slug named instead of scoring 0.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from pathlib import Path

SUITES = Path(__file__).resolve().parent / "suites"
CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"
_EXERCISE_MARK = re.compile(r"""pytest\.mark\.exercise\(\s*["'](\w+)["']""")
_SLUG_CALL = re.compile(r"""\b(?:check|grade)\(\s*["'](ch\d\d_\w+)["']""")


# A suite ships the code cells of its chapter in the student kit, which has no chapters/.
CHAPTER_CELLS = "chapter_cells.json"


def assignments() -> list[str]:
    """The assignments with a grader suite: their public checks (the student kit has no more)."""
    return sorted(p.name for p in SUITES.iterdir() if (p / "test_public.py").is_file())


def has_hidden_tests(slug: str) -> bool:
    """Whether the hidden tests of ``slug`` are here: in the instructor's grader, not in the kit."""
    return (SUITES / slug / "test_hidden.py").is_file()


def released() -> list[str]:
    """The assignments whose chapter exists (or whose chapter cells the kit ships): those a
    course can release, and offers."""
    return [slug for slug in assignments()
            if (CHAPTERS / f"{slug}.md").is_file() or (SUITES / slug / CHAPTER_CELLS).is_file()]


@functools.lru_cache(maxsize=None)
def exercise_names(slug: str) -> frozenset:
    """The exercises graded in assignment ``slug`` (from its suites' ``exercise`` marks)."""
    names = set()
    for path in (SUITES / slug).glob("test_*.py"):
        names.update(_EXERCISE_MARK.findall(path.read_text()))
    return frozenset(names)


def _defined_names(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


def assignment_evidence(path: Path) -> tuple[set[str], set[str]]:
    """``(slugs its graded cells name, names it defines or marks as exercises)``; empty if unreadable."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return set(), set()
    if Path(path).suffix != ".ipynb":
        return set(_SLUG_CALL.findall(text)), _defined_names(text)
    try:
        cells = json.loads(text).get("cells", [])
    except (ValueError, AttributeError):
        return set(), set()
    slugs, names = set(), set()
    for cell in cells if isinstance(cells, list) else []:
        if not isinstance(cell, dict):
            continue
        source = cell.get("source", "")
        source = "".join(s for s in source if isinstance(s, str)) if isinstance(source, list) else str(source)
        slugs.update(_SLUG_CALL.findall(source))
        meta = cell.get("metadata", {})
        nbgrader = meta.get("nbgrader", {}) if isinstance(meta, dict) else {}
        if isinstance(nbgrader, dict) and isinstance(nbgrader.get("grade_id"), str):
            names.add(nbgrader["grade_id"])
        if cell.get("cell_type") == "code":
            names.update(_defined_names(source))
    return slugs, names


def other_assignment(path: Path, slug: str) -> str | None:
    """The assignment ``path`` plainly belongs to when that is not ``slug``, else None."""
    slugs, names = assignment_evidence(path)
    if slug in slugs or names & exercise_names(slug):
        return None
    for other in assignments():
        if other != slug and (other in slugs or names & exercise_names(other)):
            return other
    return None


def guess_assignment(path: Path) -> str | None:
    """The assignment of ``path`` from its content, then its name; None if it cannot tell."""
    slugs, names = assignment_evidence(path)
    known = assignments()
    named = [s for s in known if s in slugs]
    if len(named) == 1:
        return named[0]
    overlap = {s: len(names & exercise_names(s)) for s in known}
    best = max(overlap.values(), default=0)
    if best and list(overlap.values()).count(best) == 1:
        return max(overlap, key=overlap.get)
    for part in [path.stem, path.parent.name, *path.parts]:
        for slug in known:
            if slug in part:
                return slug
    return None
