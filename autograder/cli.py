"""Command line of the grader (the contract of the course specification, section 5).

    python -m autograder grade --assignment SLUG SUBMISSION [--format json|text] [--timeout S]
    python -m autograder grade-all --assignment SLUG[,SLUG...]|all DIR --out OUTDIR [--jobs N]
                                   [--roster CSV] [--student NAME] [--shard K/N] [--no-sandbox]
    python -m autograder merge SHARD_OUTDIR... --out OUTDIR
    python -m autograder check SUBMISSION [--assignment SLUG]
    python -m autograder autograde --assignment SLUG [--course DIR] [--out OUTDIR] [--jobs N]
    python -m autograder report OUTDIR
    python -m autograder gradescope --assignment SLUG [--out DIR]

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
import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from .identify import assignments, guess_assignment, has_hidden_tests, other_assignment, released
from .classlist import ClassError, find_class, read_roster
from .runner import KIT_ONLY, Report, grade, grade_many, grouped, suite_points
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


def in_shard(student: str, shard: tuple[int, int] | None) -> bool:
    """Whether ``student`` belongs to shard ``(k, n)`` (1 <= k <= n): by a hash of the name, so a
    student is in the same shard for every assignment and whatever the others are."""
    if shard is None:
        return True
    k, n = shard
    return int(hashlib.sha256(student.encode()).hexdigest(), 16) % n == k - 1


def _plan(slug: str, directory: Path, roster: list[str] | None, student: str | None,
          shard: tuple[int, int] | None):
    """The class of one assignment, reduced to ``student`` or to a shard."""
    try:
        klass = find_class(directory, slug, roster)
    except ClassError as err:
        raise UsageError(str(err)) from None
    if not klass.students:
        raise UsageError(f"no students in {directory} (expected submitted/<student>/{slug}/*.ipynb "
                         f"or <student>.ipynb / <student>.py)")
    if student is not None and student not in klass.students:
        raise UsageError(f"no student {student!r} in {directory}; its students: {', '.join(klass.students)}")
    keep = (lambda name: name == student) if student is not None else (lambda name: in_shard(name, shard))
    klass.submissions = {k: v for k, v in klass.submissions.items() if keep(k)}
    klass.missing = {k: v for k, v in klass.missing.items() if keep(k)}
    for line in klass.skipped:
        print(f"skipped ({slug}): {line}", file=sys.stderr)
    if klass.not_on_roster:
        print(f"graded but not on the roster ({slug}): {', '.join(klass.not_on_roster)}", file=sys.stderr)
    return klass


def grade_course(slugs: list[str], directory: Path, out: Path, jobs: int, timeout: float, sandboxed: bool = True,
                 roster: Path | None = None, student: str | None = None,
                 shard: tuple[int, int] | None = None) -> dict[str, list[tuple[str, Report]]]:
    """Grade the class of ``directory`` in every assignment of ``slugs`` with one pool of
    workers (a worker keeps its sandbox server from one assignment to the next). Every student
    found, and every one of ``roster``, gets a report (0 and the reason where there is nothing
    to grade). With ``student``, only that one is graded and the outputs are updated in place;
    with ``shard=(k, n)``, the k-th of n disjoint parts of the class (``merge`` joins them).
    The outputs of one assignment go into ``out``, of several into ``out/<slug>``."""
    require_isolation(sandboxed)  # refuse before anything runs
    try:
        names = read_roster(roster) if roster else None
    except ClassError as err:
        raise UsageError(str(err)) from None
    classes = {slug: _plan(slug, directory, names, student, shard) for slug in slugs}
    chunks = []
    total = sum(len(k.submissions) for k in classes.values())
    size = max(1, min(25, -(-total // (jobs * 4))))  # several chunks per job: balance and progress
    for slug, klass in classes.items():
        items = sorted(klass.submissions.items())
        chunks += [(slug, items[i:i + size], timeout, sandboxed) for i in range(0, len(items), size)]
    results: dict[str, dict[str, Report]] = {slug: {} for slug in slugs}
    progress = _progress(total)
    if jobs <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            for name, report in _grade_chunk(chunk):
                results[chunk[0]][name] = report
                progress(name)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_grade_chunk, chunk): chunk[0] for chunk in chunks}
            for future in as_completed(futures):
                for name, report in future.result():
                    results[futures[future]][name] = report
                    progress(name)
    graded = {}
    for slug, klass in classes.items():
        points = suite_points(slug)
        for name, reason in klass.missing.items():
            results[slug][name] = Report(assignment=slug, submission="", max_score=sum(points.values()),
                                         messages=[reason])
        graded[slug] = sorted(results[slug].items())
        target = out if len(slugs) == 1 else out / slug
        target.mkdir(parents=True, exist_ok=True)
        write_outputs(slug, graded[slug], target, list(points), update=student is not None)
    return graded


def grade_all(slug: str, directory: Path, out: Path, jobs: int, timeout: float, sandboxed: bool = True,
              roster: Path | None = None, student: str | None = None) -> list[tuple[str, Report]]:
    """:func:`grade_course` for one assignment, into ``out``."""
    return grade_course([slug], directory, out, jobs, timeout, sandboxed, roster, student)[slug]


def merge(parts: list[Path], out: Path) -> list[str]:
    """Join the outputs of shards (each a grade-all output folder, of one assignment or of
    several in ``<slug>/`` subfolders) into ``out``; returns the assignments merged."""
    def layout(part: Path) -> dict[str, Path]:
        if (part / "grades.csv").is_file():
            with open(part / "grades.csv", newline="") as f:
                row = next(csv.DictReader(f), None)
            return {row["assignment"]: part} if row else {}  # a shard without students adds nothing
        found = {d.name: d for d in sorted(part.iterdir()) if (d / "grades.csv").is_file()} if part.is_dir() else {}
        if not found:
            raise UsageError(f"{part} holds no grade-all output (no grades.csv)")
        return found

    layouts = [layout(Path(p)) for p in parts]
    slugs = sorted({slug for lay in layouts for slug in lay})
    for slug in slugs:
        header, rows, mistakes = None, {}, []
        target = out if len(slugs) == 1 else out / slug
        target.mkdir(parents=True, exist_ok=True)
        for lay in layouts:
            part = lay.get(slug)
            if part is None:
                continue
            with open(part / "grades.csv", newline="") as f:
                table = list(csv.reader(f))
            if header is not None and table[0] != header:
                raise UsageError(f"{part / 'grades.csv'} has other columns than the other shards of {slug}")
            header = table[0]
            for row in table[1:]:
                if row[0] in rows:
                    raise UsageError(f"{row[0]} is in two shards of {slug}: were they made with the same --shard N?")
                rows[row[0]] = row
                if (part / row[0]).is_dir():
                    shutil.copytree(part / row[0], target / row[0], dirs_exist_ok=True)
            if (part / "mistakes.csv").is_file():
                with open(part / "mistakes.csv", newline="") as f:
                    mistakes += list(csv.reader(f))[1:]
        with open(target / "grades.csv", "w", newline="") as f:
            csv.writer(f).writerows([header, *(rows[k] for k in sorted(rows))])
        with open(target / "mistakes.csv", "w", newline="") as f:
            csv.writer(f).writerows([["student", "exercise", "test", "mistake"],
                                     *sorted(mistakes, key=lambda row: row[0])])  # stable: suite order kept
    return slugs


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
        # one line: the message's first line, and its last (what happened) where it has more
        lines = [line.strip() for line in report.messages[-1].splitlines() if line.strip()]
        return " ".join(lines[:1] + lines[1:][-1:])
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
            mistakes = sorted(kept + mistakes, key=lambda row: row[0])  # by student; tests in suite order
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
    slug = _check_assignment(args.assignment, graded=True)
    from .gradebook import autograde
    from .release import COURSE, ROOT

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
    chapters = released()
    waiting = [s for s in assignments() if s not in chapters]
    return ", ".join(chapters) + (f" (graders without a chapter yet: {', '.join(waiting)})" if waiting else "")


def _check_assignment(slug: str, graded: bool = False) -> str:
    """``slug`` if it is an assignment (with its hidden tests when ``graded``), else :class:`UsageError`."""
    if slug not in assignments():
        raise UsageError(f"unknown assignment {slug!r}; known: {_offered()}")
    if graded and not has_hidden_tests(slug):
        raise UsageError(KIT_ONLY.format(slug=slug))
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
    p.add_argument("--assignment", required=True,
                   help="SLUG, several as SLUG,SLUG, or all (every chapter that exists): one pool grades them all")
    p.add_argument("directory", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--roster", type=Path, help="a CSV of the class: its students without a submission get 0 too")
    p.add_argument("--student", help="regrade this student only, updating OUTDIR/grades.csv in place")
    p.add_argument("--shard", help="K/N: grade the K-th of N disjoint parts of the class (join them with merge)")
    p.add_argument("--no-sandbox", **no_sandbox)
    p = sub.add_parser("merge", help="join the outputs of grade-all --shard K/N into one")
    p.add_argument("parts", type=Path, nargs="+", metavar="SHARD_OUTDIR")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("autograde", help="nbgrader autograde, with the sandboxed scores in the grade book")
    p.add_argument("--assignment", required=True)
    p.add_argument("--course", type=Path, default=None, help="the nbgrader course directory (default: course/)")
    p.add_argument("--out", type=Path, default=None, help="grade-all's output (default: _build/grades/SLUG)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--no-sandbox", **no_sandbox)
    p = sub.add_parser("gradescope", help="the autograder.zip of an assignment for Gradescope")
    p.add_argument("--assignment", required=True)
    p.add_argument("--out", type=Path, default=None, help="where to write it (default: _build/gradescope/SLUG)")
    p = sub.add_parser("report", help="the class report (report.html, report.csv) of a grade-all output folder")
    p.add_argument("out", type=Path, metavar="OUTDIR")
    p = sub.add_parser("check", help="run the public checks on your notebook (exit 1 if one fails)")
    p.add_argument("submission", type=Path)
    p.add_argument("--assignment")
    return parser


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise UsageError(f"--shard {text}: expected K/N with 1 <= K <= N, e.g. 2/8")
    return int(k), int(n)


def _grade_all(args) -> int:
    if args.assignment == "all":
        slugs = [_check_assignment(s, graded=True) for s in released()]
    else:
        slugs = [_check_assignment(s.strip(), graded=True) for s in args.assignment.split(",") if s.strip()]
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.student and args.shard:
        raise UsageError("--student and --shard exclude each other")
    shard = _parse_shard(args.shard)
    if len(slugs) > 1 and args.directory.is_dir():
        root = args.directory / "submitted" if (args.directory / "submitted").is_dir() else args.directory
        flat = [p.name for p in root.iterdir() if p.is_file() and p.suffix in (".ipynb", ".py")]
        if flat:
            raise UsageError(f"grading several assignments needs nbgrader's layout submitted/<student>/<slug>/; "
                             f"{root} holds files such as {flat[0]}")
    start = time.monotonic()
    graded = grade_course(slugs, args.directory, args.out, args.jobs, args.timeout, sandboxed=not args.no_sandbox,
                          roster=args.roster, student=args.student, shard=shard)
    for slug, results in graded.items():
        where = args.out if len(slugs) == 1 else args.out / slug
        if not results:
            print(f"{slug}: no student in this shard")
            continue
        mean = sum(r.score for _, r in results) / len(results)
        ungraded = sum(1 for _, r in results if not r.submission)
        print(f"{slug}: {len(results) - ungraded} submissions graded"
              + (f" ({ungraded} student(s) without one: 0, with the reason in grades.csv)" if ungraded else "")
              + f"; mean score {mean:.2f}/{results[0][1].max_score:g}; grades in {where / 'grades.csv'}")
    print(f"graded in {time.monotonic() - start:.1f} s")
    return 0


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
            slug = _check_assignment(args.assignment, graded=True)
            if args.timeout <= 0:
                raise UsageError("--timeout must be positive")
            _submission_file(args.submission, slug)
            report = grade(slug, args.submission, limits=Limits(timeout_s=args.timeout), sandboxed=not args.no_sandbox)
            print(json.dumps(report.to_json(), indent=2) if args.format == "json" else format_text(report))
        elif args.command == "grade-all":
            return _grade_all(args)
        elif args.command == "merge":
            slugs = merge(args.parts, args.out)
            print(f"merged {len(args.parts)} shard(s) of {', '.join(slugs)} into {args.out}")
        elif args.command == "autograde":
            return _autograde(args)
        elif args.command == "check":
            return _check(args)
        elif args.command == "gradescope":
            from .gradescope import ROOT as PROJECT, build

            slug = _check_assignment(args.assignment, graded=True)
            path = build(slug, args.out or PROJECT / "_build" / "gradescope" / slug)
            print(f"Gradescope autograder for {slug}: {path} (upload it as the assignment's autograder)")
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
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith(f"{__package__}."):
            raise
        print(f"error: `{args.command}` is part of the instructor's grader, not of the student kit "
              f"(which runs `python -m autograder check NOTEBOOK`)", file=sys.stderr)
        return 2
    return 0
