"""Command line of the grader (the contract of the course specification, section 5).

    python -m autograder grade --assignment SLUG SUBMISSION [--format json|text] [--timeout S]
    python -m autograder grade-all --assignment SLUG DIR --out OUTDIR [--jobs N]
    python -m autograder check SUBMISSION [--assignment SLUG]
    python -m autograder autograde --assignment SLUG [--course DIR] [--out OUTDIR] [--jobs N]
    python -m autograder report OUTDIR

``autograde`` runs nbgrader's autograde for its records, grades the same submissions in the
sandbox and writes those scores into nbgrader's grade book (``autograder.gradebook``).

Exit status 0 whenever grading completed, whatever the score (``check``: 1 when a public
check failed); 2 when the grader could not run: unknown assignment, a path that is not a
submission, a notebook of another assignment, or no sandbox (``--no-sandbox`` grades
trusted code without one).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from .identify import assignments, guess_assignment, other_assignment
from .classlist import ClassError, find_class, read_roster
from .runner import Report, grade, grade_many, grouped, suite_points
from .sandbox import Limits, SandboxUnavailable, require_isolation, unavailable_reason


class UsageError(Exception):
    pass


# ---------------------------------------------------------------------------- text

def format_text(report: Report, public_only: bool = False) -> str:
    """A readable report: one line per test, the feedback under each failure."""
    lines = [f"{report.assignment}: {report.submission}"]
    lines += [f"  ! {m}" for m in report.messages for m in [m.replace("\n", "\n    ")]]
    width = max((len(t.name) for t in report.tests), default=10)
    for exercise, (earned, possible) in report.by_exercise().items():
        lines.append(f"\n{exercise}  [{earned:g}/{possible:g}]")
        for group in grouped([t for t in report.tests if t.exercise == exercise]):
            lines += _format_group(group, width)
    kind = "public checks" if public_only else "score"
    lines.append(f"\n{kind}: {report.score:g}/{report.max_score:g}  ({report.execution_time:.1f} s)")
    return "\n".join(lines)


def _format_group(group, width: int) -> list[str]:
    """One test with its feedback, or several failed with the same feedback, said once."""
    lines = [f"  {'PASS' if t.status == 'passed' else 'FAIL'}  {t.name:<{width}}  {t.score:g}/{t.max_score:g}"
             for t in group]
    if group[0].output:
        lines += ["        " + line for line in group[0].output.splitlines()]
    if len(group) > 1:
        lines.append(f"        (the same in all {len(group)} tests above)")
    return lines


def format_check_table(report: Report) -> str:
    """The students' table: exercise, status, hint."""
    rows = []
    for exercise, (earned, possible) in report.by_exercise().items():
        failed = [t for t in report.tests if t.exercise == exercise and t.status == "failed"]
        hint = failed[0].output.splitlines()[0] if failed else ""
        rows.append((exercise, "ok" if not failed else "FAILED", hint))
    width = max([len(r[0]) for r in rows] + [8])
    lines = [f"{'exercise':<{width}}  status  hint", f"{'-' * width}  ------  ----"]
    lines += [f"{e:<{width}}  {s:<6}  {h}" for e, s, h in rows]
    lines += [f"  ! {m.splitlines()[0]}" for m in report.messages]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- grade-all

def _grade_chunk(args):
    """Grade a chunk of a class in one pytest session (in a worker process of the pool)."""
    slug, chunk, timeout, sandboxed = args
    try:
        reports = grade_many(slug, dict(chunk), limits=Limits(timeout_s=timeout), sandboxed=sandboxed)
    except SandboxUnavailable:
        raise
    except Exception as err:  # noqa: BLE001 - one chunk's failure must not stop the class
        reports = {}
        for student, path in chunk:
            try:  # grade the chunk's students one by one, so only the culprit is lost
                reports[student] = grade_many(slug, {student: path}, limits=Limits(timeout_s=timeout),
                                              sandboxed=sandboxed)[student]
            except Exception:  # noqa: BLE001
                reports[student] = Report(assignment=slug, submission=str(path),
                                          messages=[f"grader error: {type(err).__name__}: {err}"])
    return list(reports.items())


def grade_all(slug: str, directory: Path, out: Path, jobs: int, timeout: float, sandboxed: bool = True,
              roster: Path | None = None, student: str | None = None) -> list[tuple[str, Report]]:
    """Grade the class of ``directory``: every student found, and every one of ``roster``, gets
    a report (0 and the reason where there is nothing to grade). With ``student``, only that
    one is graded and the outputs in ``out`` are updated in place."""
    require_isolation(sandboxed)  # refuse before anything runs
    try:
        klass = find_class(directory, slug, read_roster(roster) if roster else None)
    except ClassError as err:
        raise UsageError(str(err)) from None
    if not klass.students:
        raise UsageError(f"no students in {directory} (expected submitted/<student>/{slug}/*.ipynb "
                         f"or <student>.ipynb / <student>.py)")
    if student is not None:
        if student not in klass.students:
            raise UsageError(f"no student {student!r} in {directory}; its students: {', '.join(klass.students)}")
        klass.submissions = {k: v for k, v in klass.submissions.items() if k == student}
        klass.missing = {k: v for k, v in klass.missing.items() if k == student}
    for line in klass.skipped:
        print(f"skipped: {line}", file=sys.stderr)
    if klass.not_on_roster:
        print(f"graded but not on the roster: {', '.join(klass.not_on_roster)}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    items = sorted(klass.submissions.items())
    size = max(1, min(25, -(-len(items) // (jobs * 4))))  # several chunks per job: balance and progress
    chunks = [(slug, items[i:i + size], timeout, sandboxed) for i in range(0, len(items), size)]
    results: dict[str, Report] = {}
    progress = _progress(len(items))
    if jobs <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            for name, report in _grade_chunk(chunk):
                results[name] = report
                progress(name)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for future in as_completed([pool.submit(_grade_chunk, chunk) for chunk in chunks]):
                for name, report in future.result():
                    results[name] = report
                    progress(name)
    points = suite_points(slug)
    for name, reason in klass.missing.items():
        results[name] = Report(assignment=slug, submission="", max_score=sum(points.values()), messages=[reason])
    ordered = sorted(results.items())
    write_outputs(slug, ordered, out, list(points), update=student is not None)
    return ordered


def _progress(total: int):
    try:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="student", file=sys.stderr, disable=not sys.stderr.isatty())
    except ImportError:  # pragma: no cover
        bar = None

    def step(student):
        if bar is not None:
            bar.update(1)
            if bar.n == total:
                bar.close()

    return step


def reason_of(report: Report) -> str:
    """Why a report scores 0 without being graded (no file, unreadable, another chapter...)."""
    if report.score == 0 and report.messages and not any(t.status == "passed" for t in report.tests):
        return report.messages[-1].splitlines()[0]
    return ""


GRADE_COLUMNS = ("student", "assignment", "score", "max_score")


def write_outputs(slug: str, results: list[tuple[str, Report]], out: Path, exercises: list[str],
                  update: bool = False) -> None:
    """``grades.csv`` (a row per student: scores per exercise and the reason of a 0),
    ``mistakes.csv`` (a row per failed test) and per student ``results.json`` and
    ``feedback.txt``. With ``update``, the rows of other students already there are kept."""
    rows = {student: [student, slug, f"{r.score:g}", f"{r.max_score:g}",
                      *(f"{r.by_exercise().get(e, (0, 0))[0]:g}" for e in exercises), reason_of(r)]
            for student, r in results}
    mistakes = [[student, t.exercise, t.name, t.mistake] for student, r in results for t in r.tests
                if t.status == "failed"]
    header = [*GRADE_COLUMNS, *exercises, "reason"]
    if update and (out / "grades.csv").is_file():
        with open(out / "grades.csv", newline="") as f:
            old = list(csv.reader(f))
        if old and old[0] != header:
            raise UsageError(f"{out / 'grades.csv'} has other columns than this assignment's; grade the class "
                             f"without --student first")
        rows = {**{row[0]: row for row in old[1:] if row}, **rows}
        if (out / "mistakes.csv").is_file():
            with open(out / "mistakes.csv", newline="") as f:
                kept = [row for row in list(csv.reader(f))[1:] if row and row[0] not in dict(results)]
            mistakes = sorted(kept + mistakes)
    with open(out / "grades.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows[student] for student in sorted(rows))
    with open(out / "mistakes.csv", "w", newline="") as f:  # one row per failed test, for counting
        writer = csv.writer(f)
        writer.writerow(["student", "exercise", "test", "mistake"])
        writer.writerows(mistakes)
    for student, report in results:
        folder = out / student
        folder.mkdir(exist_ok=True)
        (folder / "results.json").write_text(json.dumps(report.to_json(), indent=2))
        (folder / "feedback.txt").write_text(format_text(report) + "\n")


# ---------------------------------------------------------------------------- autograde

def _autograde(args) -> int:
    from .gradebook import autograde
    from .release import COURSE, ROOT

    slug = _check_assignment(args.assignment)
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    course = args.course or COURSE
    if not (course / "submitted").is_dir():
        raise UsageError(f"{course / 'submitted'} does not exist: collect the submissions first (nbgrader collect)")
    out = args.out or ROOT / "_build" / "grades" / slug
    try:
        reports, differences, problems = autograde(slug, course, out, args.jobs, args.timeout,
                                                   sandboxed=not args.no_sandbox)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for line in problems:
        print(f"nbgrader: {line}", file=sys.stderr)
    print(f"grade book: {len(reports)} submissions of {slug} hold the sandboxed scores; grades in {out / 'grades.csv'}")
    if differences:
        print(f"{len(differences)} score(s) differed from what the student's kernel reported "
              f"(the sandboxed score was recorded; see {out / 'differences.csv'}):")
        for d in differences:
            print(f"  {d.student} {d.cell or '(submission)'}: in-kernel {d.in_kernel}, sandboxed {d.sandboxed}: {d.note}")
    return 0


# ---------------------------------------------------------------------------- main

SUBMISSION_SUFFIXES = (".ipynb", ".py")


def _submission_file(path: Path, slug: str | None = None) -> Path:
    """``path`` if it can be a submission (of ``slug``), else :class:`UsageError`."""
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        raise UsageError(f"{path} is a directory; grade one file, or a class with grade-all")
    if path.suffix not in SUBMISSION_SUFFIXES:
        raise UsageError(f"{path.name} is not a submission: expected a .ipynb notebook or a .py file")
    if slug is not None:
        other = other_assignment(path, slug)
        if other:
            raise UsageError(f"{path.name} holds the exercises of {other}, not {slug}; "
                             f"use --assignment {other}")
    return path


def _guess_assignment(path: Path) -> str:
    slug = guess_assignment(path)
    if slug is None:
        raise UsageError(f"cannot tell which assignment {path.name} is; pass --assignment (one of {_offered()})")
    return slug


def _offered() -> str:
    """The assignments to offer: the chapters that exist, then the graders still without one."""
    chapters = Path(__file__).resolve().parents[1] / "chapters"
    released = [s for s in assignments() if (chapters / f"{s}.md").is_file()]
    waiting = [s for s in assignments() if s not in released]
    return ", ".join(released) + (f" (graders without a chapter yet: {', '.join(waiting)})" if waiting else "")


def _check_assignment(slug: str) -> str:
    if slug not in assignments():
        raise UsageError(f"unknown assignment {slug!r}; known: {_offered()}")
    return slug


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autograder", description="Grade Batch Normalization course exercises.")
    sub = parser.add_subparsers(dest="command", required=True)
    no_sandbox = dict(action="store_true", help="run the submissions without isolation (only for code you trust)")
    p = sub.add_parser("grade", help="grade one submission")
    p.add_argument("--assignment", required=True)
    p.add_argument("submission", type=Path)
    p.add_argument("--format", choices=("json", "text"), default="text")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per test call (default 10)")
    p.add_argument("--no-sandbox", **no_sandbox)
    p = sub.add_parser("grade-all", help="grade a class")
    p.add_argument("--assignment", required=True)
    p.add_argument("directory", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--roster", type=Path, help="a CSV of the class: its students without a submission get 0 too")
    p.add_argument("--student", help="regrade this student only, updating OUTDIR/grades.csv in place")
    p.add_argument("--no-sandbox", **no_sandbox)
    p = sub.add_parser("autograde", help="nbgrader autograde, with the sandboxed scores in the grade book")
    p.add_argument("--assignment", required=True)
    p.add_argument("--course", type=Path, default=None, help="the nbgrader course directory (default: course/)")
    p.add_argument("--out", type=Path, default=None, help="grade-all's output (default: _build/grades/SLUG)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--no-sandbox", **no_sandbox)
    p = sub.add_parser("report", help="the class report (report.html, report.csv) of a grade-all output folder")
    p.add_argument("out", type=Path, metavar="OUTDIR")
    p = sub.add_parser("check", help="run the public checks on your notebook (exit 1 if one fails)")
    p.add_argument("submission", type=Path)
    p.add_argument("--assignment")
    return parser


def _check(args) -> int:
    """The students' command: their own code, so it runs isolated where the machine allows."""
    _submission_file(args.submission)
    slug = _check_assignment(args.assignment) if args.assignment else _guess_assignment(args.submission)
    _submission_file(args.submission, slug)
    reason = unavailable_reason()
    if reason:
        print(f"note: {reason}; your code runs without the sandbox", file=sys.stderr)
    report = grade(slug, args.submission, public_only=True, sandboxed=not reason)
    print(format_check_table(report))
    return 0 if report.tests and all(t.status == "passed" for t in report.tests) else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "grade":
            slug = _check_assignment(args.assignment)
            if args.timeout <= 0:
                raise UsageError("--timeout must be positive")
            _submission_file(args.submission, slug)
            report = grade(slug, args.submission, limits=Limits(timeout_s=args.timeout), sandboxed=not args.no_sandbox)
            print(json.dumps(report.to_json(), indent=2) if args.format == "json" else format_text(report))
        elif args.command == "grade-all":
            slug = _check_assignment(args.assignment)
            if args.jobs < 1:
                raise UsageError("--jobs must be at least 1")
            start = time.monotonic()
            results = grade_all(slug, args.directory, args.out, args.jobs, args.timeout, sandboxed=not args.no_sandbox,
                                roster=args.roster, student=args.student)
            mean = sum(r.score for _, r in results) / len(results)
            ungraded = sum(1 for _, r in results if not r.submission)
            print(f"graded {len(results) - ungraded} submissions of {slug} in {time.monotonic() - start:.1f} s"
                  + (f" ({ungraded} student(s) without one: 0, with the reason in grades.csv)" if ungraded else "")
                  + f"; mean score {mean:.2f}/{results[0][1].max_score:g}; grades in {args.out / 'grades.csv'}")
        elif args.command == "autograde":
            return _autograde(args)
        elif args.command == "check":
            return _check(args)
        elif args.command == "report":
            from .report import ReportError, write_report

            try:
                page, table = write_report(args.out)
            except ReportError as err:
                raise UsageError(str(err)) from None
            print(f"class report: {page} (mistakes ranked: {table})")
    except (UsageError, SandboxUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
