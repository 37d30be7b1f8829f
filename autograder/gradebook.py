"""nbgrader's grade book holds the sandboxed scores, never a number the student's kernel computed.

    python -m autograder autograde --assignment SLUG [--course DIR] [--out OUTDIR] [--jobs N]
    make autograde ASSIGNMENT=SLUG

Under ``nbgrader autograde`` each graded cell runs ``grade(...)`` in the student's own
kernel, after the student's cells: any earlier cell can replace that function and forge its
points. So nbgrader keeps what it is good at (the submission records, the feedback files,
the manually graded answers, formgrader, ``nbgrader export``), and the autograded scores are
taken from ``grade-all``, which runs student code in the sandbox and computes scores in the
grader:

1. :func:`run_nbgrader_autograde`: ``nbgrader autograde SLUG`` (its records and cells);
2. ``grade-all`` on ``course/submitted`` into ``OUTDIR`` (``grades.csv``, feedback);
3. :func:`record_scores`: through nbgrader's own API (``nbgrader.api.Gradebook``) the
   ``auto_score`` of each graded cell ``check_<exercise>`` becomes the sandboxed score;
4. every difference between the in-kernel number and the sandboxed one is reported (printed,
   and ``OUTDIR/differences.csv``): it is either a grader bug or a student who tampered.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from .runner import Report
from .sandbox import require_isolation

# Scores are sums of points such as 1, 2 or 0.5: equal up to float rounding.
SAME_SCORE = 1e-9


@dataclass(frozen=True)
class Difference:
    """A score the grade book held that the sandbox did not confirm."""
    student: str
    cell: str                  # the graded cell, check_<exercise>, or "" for the whole submission
    in_kernel: float | None    # what nbgrader's autograde recorded (None: nothing recorded)
    sandboxed: float | None    # what grade-all computed (None: the grade book has no such cell)
    note: str

    def row(self) -> list[str]:
        def number(value):
            return "" if value is None else f"{value:g}"
        return [self.student, self.cell, number(self.in_kernel), number(self.sandboxed), self.note]


def run_nbgrader_autograde(slug: str, course: Path) -> list[str]:
    """``nbgrader autograde SLUG --force`` on ``course``. nbgrader goes on after a submission
    it cannot process (and leaves it out of its grade book); its error lines are returned, and
    :func:`record_scores` puts such a submission into the grade book all the same."""
    from .release import nbgrader

    result = nbgrader("autograde", slug, "--force", course=course)
    log = result.stdout + result.stderr
    if "No module named 'autograder'" in log:
        raise RuntimeError("nbgrader's kernels cannot import the course's grader (No module named 'autograder'): "
                           "every graded cell would score 0. Run nbgrader from the project or from course/ "
                           "(nbgrader_config.py puts the project on PYTHONPATH)")
    problems = [line.strip() for line in log.splitlines() if "| ERROR]" in line]
    if result.returncode != 0 and not problems:
        raise RuntimeError(f"nbgrader autograde {slug} failed (exit {result.returncode}):\n{log[-3000:]}")
    return problems


def record_scores(db_url: str, slug: str, reports: dict[str, Report]) -> list[Difference]:
    """Write the sandboxed per-exercise scores of ``reports`` (student -> report) into the grade
    book's graded cells ``check_<exercise>`` of assignment ``slug``, and return the differences
    with what was there. Manually graded cells and manual overrides are left as they are."""
    from nbgrader.api import Gradebook, MissingEntry

    differences: list[Difference] = []
    with Gradebook(db_url) as gb:
        for student, report in sorted(reports.items()):
            added = False
            try:
                submission = gb.find_submission(slug, student)
            except MissingEntry:   # nbgrader never recorded it: record it all the same
                gb.update_or_create_student(student)
                submission = gb.add_submission(slug, student)
                added = True
                differences.append(Difference(student, "", None, report.score,
                                              "nbgrader has no record of this submission; it was added to the "
                                              "grade book with the sandboxed scores"))
            scores = {f"check_{exercise}": earned for exercise, (earned, _) in report.by_exercise().items()}
            cells = {grade.name: grade for notebook in submission.notebooks for grade in notebook.grades
                     if grade.name.startswith("check_")}
            for name, grade in sorted(cells.items()):
                if name not in scores:
                    differences.append(Difference(student, name, grade.auto_score, None,
                                                  "a graded cell the grader's suite does not know: left as it was"))
                    continue
                sandboxed = float(scores[name])
                if grade.auto_score is None and not added:
                    differences.append(Difference(student, name, None, sandboxed,
                                                  "nbgrader recorded no score (its autograde failed on this "
                                                  "notebook): the sandboxed score was recorded"))
                elif grade.auto_score is not None and abs(grade.auto_score - sandboxed) > SAME_SCORE:
                    note = ("the in-kernel score is not the sandboxed one: a grader bug, or a notebook that "
                            "changed how it is graded")
                    differences.append(Difference(student, name, grade.auto_score, sandboxed, note))
                grade.auto_score = sandboxed
            for name in sorted(set(scores) - set(cells)):
                differences.append(Difference(student, name, None, float(scores[name]),
                                              "the submitted notebook has no such graded cell: not recorded"))
        gb.db.commit()
    return differences


def course_db_url(course: Path) -> str:
    """The grade book nbgrader uses for ``course``: ``BNGRADE_DB_URL`` for the project's own
    course directory (as ``nbgrader_config.py`` says), else the course's SQLite file."""
    from .release import COURSE

    if Path(course).resolve() == COURSE.resolve() and os.environ.get("BNGRADE_DB_URL"):
        return os.environ["BNGRADE_DB_URL"]
    return f"sqlite:///{Path(course).resolve()}/gradebook.db"


def write_differences(differences: list[Difference], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "cell", "in_kernel", "sandboxed", "note"])
        writer.writerows(d.row() for d in differences)


def autograde(slug: str, course: Path, out: Path, jobs: int, timeout: float, db_url: str | None = None,
              sandboxed: bool = True) -> tuple[dict[str, Report], list[Difference], list[str]]:
    """The four steps of the module docstring; returns the reports, the differences and the
    error lines of nbgrader's autograde."""
    from .cli import grade_all

    require_isolation(sandboxed)  # before nbgrader runs anything
    problems = run_nbgrader_autograde(slug, course)
    # Students without a submission of this assignment have no record to update.
    reports = {student: report for student, report in grade_all(slug, course, out, jobs, timeout, sandboxed=sandboxed)
               if report.submission}
    differences = record_scores(db_url or course_db_url(course), slug, reports)
    write_differences(differences, out / "differences.csv")
    return reports, differences, problems
