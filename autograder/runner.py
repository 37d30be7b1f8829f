"""Grade one submission: load it in a sandbox, drive the assignment's pytest suite, score.

The suite of assignment ``SLUG`` is ``autograder/suites/SLUG/``: ``test_public.py`` (the
checks students run themselves) and ``test_hidden.py`` (comparisons with the reference).
Each test carries ``@pytest.mark.exercise(NAME)`` and ``@pytest.mark.points(P)``; it
talks to the submission through the ``student`` fixture and compares in this process.
"""

from __future__ import annotations

import io
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from .feedback import Mismatch
from .sandbox import Limits, Sandbox, SubmissionError
from .submission import SubmissionReadError, read_submission

SUITES = Path(__file__).resolve().parent / "suites"
ROOT = SUITES.parents[1]


def assignments() -> list[str]:
    return sorted(p.name for p in SUITES.iterdir() if (p / "test_hidden.py").is_file())


@dataclass
class TestResult:
    name: str
    exercise: str
    score: float
    max_score: float
    status: str          # "passed" or "failed"
    output: str
    visibility: str      # "visible" (public check) or "after_published" (hidden test)


@dataclass
class Report:
    assignment: str
    submission: str
    score: float = 0.0
    max_score: float = 0.0
    execution_time: float = 0.0
    tests: list[TestResult] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # about the whole submission
    sandbox: str = ""

    def to_json(self) -> dict:
        """Gradescope's results.json, plus the fields this grader adds."""
        data = asdict(self)
        data["score"] = round(self.score, 4)
        data["output"] = "\n".join(self.messages)
        return data

    def by_exercise(self) -> dict[str, tuple[float, float]]:
        totals: dict[str, list[float]] = {}
        for test in self.tests:
            entry = totals.setdefault(test.exercise, [0.0, 0.0])
            entry[0] += test.score
            entry[1] += test.max_score
        return {k: (v[0], v[1]) for k, v in totals.items()}


class Student:
    """The grader's handle on a submission: every call crosses into the sandbox."""

    def __init__(self, sandbox: Sandbox | None, load_error: str | None = None):
        self._sandbox = sandbox
        self._load_error = load_error

    def op(self, op: str, *args, timeout: float | None = None, **kwargs):
        if self._sandbox is None:
            raise SubmissionError("load", self._load_error or "the submission could not be read")
        return self._sandbox.request(op, *args, timeout=timeout, **kwargs)

    def call(self, name: str, *args, **kwargs):
        """``name(*args, **kwargs)`` in the sandbox."""
        return self.op("basic.call", name, *args, **kwargs)

    def call_checked(self, name: str, *args, **kwargs) -> tuple[object, list]:
        """Call on copies; return ``(result, inputs_after)`` to check inputs are unchanged."""
        answer = self.op("basic.call_checked", name, *args, **kwargs)
        if not isinstance(answer, dict) or "result" not in answer:
            raise SubmissionError("protocol", "malformed answer")
        return answer["result"], answer["inputs_after"]


class _Collector:
    """A pytest plugin: provides the ``student`` fixture and records every test's result."""

    def __init__(self, student: Student):
        self._student = student
        self.results: list[TestResult] = []

    @pytest.fixture(scope="session")
    def student(self):
        return self._student

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.when == "call" or (report.when == "setup" and report.failed):
            exercise = item.get_closest_marker("exercise")
            points = item.get_closest_marker("points")
            max_score = float(points.args[0]) if points else 1.0
            passed = report.passed
            self.results.append(TestResult(
                name=item.name,
                exercise=exercise.args[0] if exercise else "?",
                score=max_score if passed else 0.0,
                max_score=max_score,
                status="passed" if passed else "failed",
                output="" if passed else _explain(call.excinfo),
                visibility="visible" if item.path.name == "test_public.py" else "after_published",
            ))


def _explain(excinfo) -> str:
    if excinfo is None:
        return "failed"
    error = excinfo.value
    if isinstance(error, (Mismatch, SubmissionError)):
        return str(error)
    if isinstance(error, AssertionError):
        return str(error).split("\nassert ")[0] or "a check failed"
    return f"your output could not be checked ({type(error).__name__}: {error})"


def run_suite(slug: str, student: Student, public_only: bool = False) -> list[TestResult]:
    directory = SUITES / slug
    files = [directory / "test_public.py"] + ([] if public_only else [directory / "test_hidden.py"])
    collector = _Collector(student)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    args = [
        "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:xdist", "--import-mode=importlib",
        "-c", str(SUITES / "pytest.ini"), "--rootdir", str(SUITES),
        *[str(f) for f in files if f.is_file()],
    ]
    log = io.StringIO()
    with redirect_stdout(log), redirect_stderr(log):
        code = pytest.main(args, plugins=[collector])
    if code not in (0, 1) or not collector.results:
        raise RuntimeError(f"the test suite of {slug} could not run (pytest exit {int(code)}):\n{log.getvalue()[-3000:]}")
    return collector.results


def grade(
    slug: str,
    path: Path | str,
    limits: Limits | None = None,
    public_only: bool = False,
    hide: list | None = None,
) -> Report:
    """Grade the submission at ``path`` against assignment ``slug``."""
    if slug not in assignments():
        raise ValueError(f"unknown assignment {slug!r}; known: {', '.join(assignments())}")
    start = time.monotonic()
    report = Report(assignment=slug, submission=str(path))
    sandbox = None
    try:
        submission = read_submission(path)
        report.messages += submission.notes
        hidden = [Path(path).resolve().parent, *(hide or [])]
        sandbox = Sandbox(submission.cells, limits=limits or Limits(), hide=hidden)
        student = Student(sandbox)
        try:
            info = sandbox.loaded()
            report.sandbox = info.get("sandbox", "")
            if info.get("sandbox") == "degraded":
                report.messages.append("note: the sandbox ran without isolation: " + info.get("problem", ""))
            for index, error in sorted(info.get("errors", {}).items(), key=lambda kv: int(kv[0])):
                report.messages.append(f"error while running your code:\n{error}")
        except SubmissionError as err:
            student = Student(None, f"your code could not be run: {err.message}")
            report.messages.append(f"your code could not be run: {err.message}")
        report.messages += list(sandbox.skipped.values())
    except SubmissionReadError as err:
        student = Student(None, str(err))
        report.messages.append(str(err))
    try:
        report.tests = run_suite(slug, student, public_only=public_only)
    finally:
        if sandbox is not None:
            sandbox.close()
    report.score = sum(t.score for t in report.tests)
    report.max_score = sum(t.max_score for t in report.tests)
    report.execution_time = round(time.monotonic() - start, 3)
    return report
