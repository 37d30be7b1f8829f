"""Read a submission (a filled-in notebook or a ``.py`` file) into the cells to run.

Nothing here executes student code. A notebook's code cells are kept in order, except
nbgrader's graded test cells (the grader runs its own tests) and IPython magics and shell
escapes, which are blanked so that line numbers still match the student's notebook.

Cells that are the chapter's own, unchanged (its demonstrations, figures and experiments:
seconds of work that grade nothing), are reduced to their imports and constants. The
student's solution cells and any cell the student added or changed run in full.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_BYTES = 5 << 20
_MAGIC = re.compile(r"^(\s*)([%!].*|\w+\s*=\s*!.*)$")
_CELL_MAGICS_KEPT = ("%%time", "%%timeit", "%%capture")


class SubmissionReadError(Exception):
    """The file cannot be graded at all; the message says why, in a student's words."""


@dataclass
class Submission:
    path: Path
    cells: list[tuple[str, str]]               # (name shown in tracebacks, source)
    notes: list[str] = field(default_factory=list)  # what was skipped, and why


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise SubmissionReadError(
            f"{path.name} is not UTF-8 text (byte {err.start}, line {line}); save it as UTF-8"
        ) from None


def _strip_magics(source: str) -> str:
    """Blank IPython-only lines (``%magic``, ``!shell``, ``x = !cmd``)."""
    lines = source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        if not lines[0].lstrip().startswith(_CELL_MAGICS_KEPT):
            return ""
        lines[0] = ""
    return "\n".join("" if _MAGIC.match(line) else line for line in lines) + "\n"


def _normalize(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def imports_and_constants(source: str) -> str:
    """Only the imports and the literal constants of a chapter cell (``EPS = 1e-5``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    lines = source.splitlines()
    kept = []
    for node in tree.body:
        literal = isinstance(node, ast.Assign) and isinstance(node.value, (ast.Constant, ast.Tuple))
        if isinstance(node, (ast.Import, ast.ImportFrom)) or literal:
            try:
                if literal:
                    ast.literal_eval(node.value)
            except ValueError:
                continue
            kept.append("\n".join(lines[node.lineno - 1: node.end_lineno]))
    return "\n".join(kept) + "\n"


def _nbgrader(cell: dict) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell.get("metadata"), dict) else {}
    return meta if isinstance(meta, dict) else {}


def _is_test_cell(cell: dict) -> bool:
    meta = _nbgrader(cell)
    return bool(meta.get("grade")) and not meta.get("solution")


def _is_solution_cell(cell: dict) -> bool:
    return bool(_nbgrader(cell).get("solution"))


def read_notebook(path: Path, raw: bytes, chapter_cells: frozenset = frozenset()) -> Submission:
    text = _decode(raw, path)
    if not text.strip():
        raise SubmissionReadError(f"{path.name} is empty")
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as err:
        raise SubmissionReadError(
            f"{path.name} is not a valid notebook: JSON error at line {err.lineno}, column {err.colno} "
            f"({err.msg}); was it saved completely?"
        ) from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise SubmissionReadError(f"{path.name} is not a Jupyter notebook (no list of cells)")
    cells, notes = [], []
    for number, cell in enumerate(nb["cells"], start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(s for s in source if isinstance(s, str))
        if not isinstance(source, str):
            notes.append(f"cell {number}: unreadable source, skipped")
            continue
        if _is_test_cell(cell):
            continue
        source = _strip_magics(source)
        if _normalize(source) in chapter_cells and not _is_solution_cell(cell):
            source = imports_and_constants(source)
        cells.append((f"cell {number}", source))
    if not cells:
        notes.append(f"{path.name} has no code cells")
    return Submission(path, cells, notes)


def chapter_cells(slug: str) -> frozenset:
    """The code cells of chapter ``slug`` as released (normalized sources), to recognize them:
    from the chapter, or where there is none (the student kit) from the list its suite ships."""
    from .identify import CHAPTER_CELLS, CHAPTERS, SUITES

    path = CHAPTERS / f"{slug}.md"
    if path.is_file():
        return frozenset(released_chapter_cells(path))
    shipped = SUITES / slug / CHAPTER_CELLS
    if shipped.is_file():
        return frozenset(json.loads(shipped.read_text()))
    return frozenset()


def released_chapter_cells(path: Path) -> list[str]:
    """The chapter's own code cells at ``path`` (no exercise, no check), normalized, in order."""
    from . import notebooks

    nb = notebooks.generate(path, "instructor")
    cells = [_normalize(_strip_magics(c.source)) for c in nb.cells
             if c.cell_type == "code" and not notebooks.nbgrader_meta(c)]
    return list(dict.fromkeys(cells))


def read_submission(path: Path | str, chapter: frozenset = frozenset()) -> Submission:
    """The cells of a ``.ipynb`` or ``.py`` submission, or :class:`SubmissionReadError`.

    ``chapter`` holds the chapter's own code cells (:func:`chapter_cells`), which run
    reduced to their imports and constants.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise SubmissionReadError(f"{path.name} is larger than {MAX_BYTES >> 20} MB; clear the outputs and resubmit")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SubmissionReadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SubmissionReadError(f"{path} is a directory, not a submission file") from None
    except OSError as err:
        raise SubmissionReadError(f"{path}: cannot be read ({err.strerror})") from None
    if path.suffix == ".ipynb":
        return read_notebook(path, raw, chapter)
    if path.suffix == ".py":
        return Submission(path, [(path.name, _decode(raw, path))])
    raise SubmissionReadError(f"{path.name}: a submission is a .ipynb notebook or a .py file")
