"""Who is in a class and what each student submitted: nobody is dropped silently.

A class folder is nbgrader's ``submitted/<student>/<slug>/`` layout (the folder itself or
its ``submitted/``), or flat files ``<student>.ipynb`` / ``<student>.py``. Every student
found there, and every student of an optional roster, ends up either with a file to grade
or with the reason there is none; every other entry of the folder is listed as skipped,
with why.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

SUFFIXES = (".ipynb", ".py")
ROSTER_COLUMNS = ("student", "student_id", "id", "username", "login")


class ClassError(Exception):
    """The class folder or the roster cannot be read; the message says why."""


@dataclass
class ClassList:
    submissions: dict[str, Path] = field(default_factory=dict)   # student -> the file to grade
    missing: dict[str, str] = field(default_factory=dict)         # student -> why nothing is graded
    skipped: list[str] = field(default_factory=list)              # entries that are no submission, and why
    not_on_roster: list[str] = field(default_factory=list)        # graded students the roster lacks

    @property
    def students(self) -> list[str]:
        return sorted({*self.submissions, *self.missing})


def _pick(files: list[Path], slug: str, where: str, skipped: list[str]) -> Path | None:
    """The file to grade among a student's ``files``: a notebook before a ``.py``, the one
    named after the assignment first; the others are listed as skipped."""
    candidates = sorted((f for f in files if f.suffix in SUFFIXES and not f.name.startswith(".")),
                        key=lambda f: (f.suffix != ".ipynb", f.stem != slug, f.name))
    for other in candidates[1:]:
        skipped.append(f"{where}/{other.name}: another file of the same student; {candidates[0].name} was graded")
    return candidates[0] if candidates else None


def find_class(directory: Path, slug: str, roster: list[str] | None = None) -> ClassList:
    """The class of ``directory`` for assignment ``slug`` (see the module's docstring)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ClassError(f"{directory} is not a directory")
    found = ClassList()
    root = directory / "submitted" if (directory / "submitted").is_dir() else directory
    flat: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            found.skipped.append(f"{entry.name}: hidden")
        elif entry.is_dir():
            folder = entry / slug
            if not folder.is_dir():
                found.missing[entry.name] = f"no submission of {slug} (no folder {entry.name}/{slug})"
                continue
            files = [f for f in folder.iterdir() if f.is_file()]
            chosen = _pick(files, slug, f"{entry.name}/{slug}", found.skipped)
            if chosen is None:
                held = ", ".join(sorted(f.name for f in files)) or "nothing"
                found.missing[entry.name] = f"the submission folder holds no .ipynb or .py file (it holds {held})"
            else:
                found.submissions[entry.name] = chosen
        elif entry.suffix in SUFFIXES:
            flat.setdefault(entry.stem, []).append(entry)
        else:
            found.skipped.append(f"{entry.name}: not a submission (a submission is <student>.ipynb or <student>.py)")
    for student, files in flat.items():
        if student in found.submissions or student in found.missing:
            found.skipped += [f"{f.name}: {student} also has a folder, which was used" for f in files]
            continue
        found.submissions[student] = _pick(files, slug, ".", found.skipped)
    if roster is not None:
        listed = set(roster)
        for student in roster:
            if student not in found.submissions and student not in found.missing:
                found.missing[student] = "on the roster, no submission found"
        found.not_on_roster = sorted(set(found.submissions) - listed)
    return found


def read_roster(path: Path) -> list[str]:
    """The students of a roster CSV: its ``student`` (or ``student_id``, ``id``, ``username``,
    ``login``) column, else its first column; a header row is required."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except OSError as err:
        raise ClassError(f"cannot read the roster {path}: {err.strerror}") from None
    if not rows or not rows[0]:
        raise ClassError(f"the roster {path} is empty; it needs a header row and one student per row")
    header = [h.strip().lower() for h in rows[0]]
    column = next((header.index(c) for c in ROSTER_COLUMNS if c in header), 0)
    students = [row[column].strip() for row in rows[1:] if len(row) > column and row[column].strip()]
    duplicates = sorted({s for s in students if students.count(s) > 1})
    if duplicates:
        raise ClassError(f"the roster {path} lists {', '.join(duplicates)} more than once")
    return students
