"""Read a submission (a filled-in notebook or a ``.py`` file) into the cells to run.

Nothing here executes student code. A notebook's code cells are kept in order, except
nbgrader's graded test cells (the grader runs its own tests) and IPython magics and shell
escapes, which are blanked so that line numbers still match the student's notebook.
"""

from __future__ import annotations

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


def _is_test_cell(cell: dict) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell.get("metadata"), dict) else {}
    return bool(meta.get("grade")) and not meta.get("solution")


def read_notebook(path: Path, raw: bytes) -> Submission:
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
        cells.append((f"cell {number}", _strip_magics(source)))
    if not cells:
        notes.append(f"{path.name} has no code cells")
    return Submission(path, cells, notes)


def read_submission(path: Path | str) -> Submission:
    """The cells of a ``.ipynb`` or ``.py`` submission, or :class:`SubmissionReadError`."""
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
        return read_notebook(path, raw)
    if path.suffix == ".py":
        return Submission(path, [(path.name, _decode(raw, path))])
    raise SubmissionReadError(f"{path.name}: a submission is a .ipynb notebook or a .py file")
