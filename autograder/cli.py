"""Command line of the grader (the contract of the course specification, section 5).

    python -m autograder grade --assignment SLUG SUBMISSION [--format json|text] [--timeout S]
    python -m autograder grade-all --assignment SLUG DIR --out OUTDIR [--jobs N]
    python -m autograder check SUBMISSION [--assignment SLUG]
    python -m autograder autograde --assignment SLUG [--course DIR] [--out OUTDIR] [--jobs N]

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
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from .identify import assignments, guess_assignment, other_assignment
from .runner import Report, grade, grade_many, grouped
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

STUDENT_ID = re.compile(r"^[A-Za-z0-9_.@+-]+$")


def find_submissions(directory: Path, slug: str) -> dict[str, Path]:
    """``{student: file}`` from nbgrader's ``submitted/<student>/<slug>/*.ipynb`` or flat files."""
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
    found: dict[str, Path] = {}
    root = directory / "submitted" if (directory / "submitted").is_dir() else directory
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            folder = entry / slug
            notebooks = sorted(folder.glob("*.ipynb")) if folder.is_dir() else []
            if notebooks:
                preferred = [n for n in notebooks if n.stem == slug]
                found[entry.name] = (preferred or notebooks)[0]
        elif entry.suffix in (".ipynb", ".py") and not entry.name.startswith("."):
            found[entry.stem] = entry
    return found


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


def grade_all(slug: str, directory: Path, out: Path, jobs: int, timeout: float,
              sandboxed: bool = True) -> list[tuple[str, Report]]:
    require_isolation(sandboxed)  # refuse before anything runs
    submissions = find_submissions(directory, slug)
    if not submissions:
        raise UsageError(f"no submissions for {slug} in {directory} (expected submitted/<student>/{slug}/*.ipynb "
                         f"or <student>.ipynb / <student>.py)")
    out.mkdir(parents=True, exist_ok=True)
    items = list(submissions.items())
    size = max(1, min(25, -(-len(items) // (jobs * 4))))  # several chunks per job: balance and progress
    chunks = [(slug, items[i:i + size], timeout, sandboxed) for i in range(0, len(items), size)]
    results: dict[str, Report] = {}
    progress = _progress(len(items))
    if jobs <= 1:
        for chunk in chunks:
            for student, report in _grade_chunk(chunk):
                results[student] = report
                progress(student)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for future in as_completed([pool.submit(_grade_chunk, chunk) for chunk in chunks]):
                for student, report in future.result():
                    results[student] = report
                    progress(student)
    ordered = sorted(results.items())
    write_outputs(slug, ordered, out)
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


def write_outputs(slug: str, results: list[tuple[str, Report]], out: Path) -> None:
    exercises: list[str] = []
    for _, report in results:
        for exercise in report.by_exercise():
            if exercise not in exercises:
                exercises.append(exercise)
    with open(out / "grades.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "assignment", "score", "max_score", *exercises])
        for student, report in results:
            per = report.by_exercise()
            writer.writerow([student, slug, f"{report.score:g}", f"{report.max_score:g}",
                             *(f"{per.get(e, (0, 0))[0]:g}" for e in exercises)])
    with open(out / "mistakes.csv", "w", newline="") as f:  # one row per failed test, for counting
        writer = csv.writer(f)
        writer.writerow(["student", "exercise", "test", "mistake"])
        for student, report in results:
            writer.writerows([student, t.exercise, t.name, t.mistake] for t in report.tests if t.status == "failed")
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
        raise UsageError(f"cannot tell which assignment {path.name} is; pass --assignment (one of {', '.join(assignments())})")
    return slug


def _check_assignment(slug: str) -> str:
    if slug not in assignments():
        raise UsageError(f"unknown assignment {slug!r}; known: {', '.join(assignments())}")
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
    p.add_argument("--no-sandbox", **no_sandbox)
    p = sub.add_parser("autograde", help="nbgrader autograde, with the sandboxed scores in the grade book")
    p.add_argument("--assignment", required=True)
    p.add_argument("--course", type=Path, default=None, help="the nbgrader course directory (default: course/)")
    p.add_argument("--out", type=Path, default=None, help="grade-all's output (default: _build/grades/SLUG)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--no-sandbox", **no_sandbox)
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
            results = grade_all(slug, args.directory, args.out, args.jobs, args.timeout, sandboxed=not args.no_sandbox)
            mean = sum(r.score for _, r in results) / len(results)
            print(f"graded {len(results)} submissions of {slug} in {time.monotonic() - start:.1f} s; "
                  f"mean score {mean:.2f}/{results[0][1].max_score:g}; grades in {args.out / 'grades.csv'}")
        elif args.command == "autograde":
            return _autograde(args)
        elif args.command == "check":
            return _check(args)
    except (UsageError, SandboxUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
