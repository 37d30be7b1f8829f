"""Grade one submission: load it in a sandbox, drive the assignment's pytest suite, score.

The suite of assignment ``SLUG`` is ``autograder/suites/SLUG/``: ``test_public.py`` (the
checks students run themselves) and ``test_hidden.py`` (comparisons with the reference).
Each test carries ``@pytest.mark.exercise(NAME)`` and ``@pytest.mark.points(P)``; it
talks to the submission through the ``student`` fixture and compares in this process.
"""

from __future__ import annotations

import ast
import io
import re
import signal
import sys
import threading
import types
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from .feedback import Mismatch
from .identify import assignments, exercise_names, has_hidden_tests, other_assignment
from .sandbox import Limits, Sandbox, SubmissionError, require_isolation
from .submission import SubmissionReadError, chapter_cells, read_submission

SUITES = Path(__file__).resolve().parent / "suites"
ROOT = SUITES.parents[1]


@dataclass
class TestResult:
    name: str
    exercise: str
    score: float
    max_score: float
    status: str          # "passed" or "failed"
    output: str
    visibility: str      # "visible" (public check) or "after_published" (hidden test)
    mistake: str = ""    # failed: a stable identifier of what went wrong (feedback.Mismatch.mistake)


_INPUTS = re.compile(r" \(inputs: (?:[^()]|\([^()]*\))*\)")


def same_feedback(output: str) -> str:
    """``output`` without the description of the inputs: equal for the same mistake in two cases."""
    return _INPUTS.sub("", output)


def grouped(tests: list[TestResult]) -> list[list[TestResult]]:
    """The tests in order, failed ones with the same feedback (but for the inputs) together,
    at the place of the first: the feedback is said once for all of them."""
    groups: list[list[TestResult]] = []
    index: dict[str, list[TestResult]] = {}
    for test in tests:
        if test.status != "failed":
            groups.append([test])
            continue
        key = same_feedback(test.output)
        if key in index:
            index[key].append(test)
        else:
            index[key] = [test]
            groups.append(index[key])
    return groups


def calls_between_exercises(cells: list[tuple[str, str]], exercises) -> dict[str, set[str]]:
    """``{exercise: other exercises its code refers to}`` from the submission's source."""
    calls: dict[str, set[str]] = {}
    for _, source in cells:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in exercises:
                used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                calls[node.name] = (used & set(exercises)) - {node.name}
    return calls


def mark_unimplemented(tests: list[TestResult]) -> list[TestResult]:
    """An exercise that still raises NotImplementedError anywhere is a stub: every failed test
    of it says "not implemented yet" (and the report says it once)."""
    stubs = {t.exercise for t in tests if t.mistake == "not_implemented"}
    for test in tests:
        if test.status == "failed" and test.exercise in stubs:
            test.output, test.mistake = NOT_IMPLEMENTED, "not_implemented"
    return tests


def attribute_to_callees(tests: list[TestResult], calls: dict[str, set[str]]) -> list[TestResult]:
    """Failed tests of an exercise whose code calls another failing exercise say so first:
    the student then fixes the function the mistake comes from."""
    failing = {t.exercise for t in tests if t.status == "failed"}
    for test in tests:
        culprits = sorted(calls.get(test.exercise, set()) & failing)
        if test.status == "failed" and culprits:
            names = " and ".join(culprits)
            test.output = (f"{test.exercise} calls your {names}, which {'fails' if len(culprits) == 1 else 'fail'} "
                           f"its own tests: fix {names} first, then check {test.exercise} again.\n{test.output}")
            test.mistake = "calls_failing_exercise"
    return tests


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
        self._timed_out: dict[tuple, SubmissionError] = {}

    def op(self, op: str, *args, timeout: float | None = None, **kwargs):
        """Run ``op`` on the submission. A function that timed out once is not called again: its
        timeout is reported at once, so an infinite loop costs one time limit, not one per test."""
        key = (op, args[0] if args and isinstance(args[0], str) else None)
        if key in self._timed_out:
            raise self._timed_out[key]
        try:
            return self._run(op, args, kwargs, timeout)
        except SubmissionError as err:
            if err.kind == "timeout":
                self._timed_out[key] = err
            raise

    def _run(self, op: str, args: tuple, kwargs: dict, timeout: float | None):
        """``op`` in the sandbox."""
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


class LocalStudent(Student):
    """The same handle on code that runs in this process (a student's own notebook kernel).

    Used by the checks inside notebooks, and by nbgrader's autograde, which executes the
    student's notebook itself. Values go through the wire format anyway, so the tests see
    exactly the types they see from the sandbox.
    """

    def __init__(self, namespace: dict, limits: Limits | None = None):
        super().__init__(None)
        self._namespace = namespace
        self._limits = limits or Limits()

    def _run(self, op: str, args: tuple, kwargs: dict, timeout: float | None):
        """``op`` in this process, under the same time limit per call as in the sandbox."""
        from . import ops, protocol

        seconds = timeout or self._limits.timeout_s
        name = args[0] if args and isinstance(args[0], str) else op
        # The arguments cross the same wire as to the sandbox: the student's code gets copies.
        args, kwargs = protocol.read_message(io.BytesIO(protocol.encode((tuple(args), dict(kwargs)))))
        try:
            with _time_limit(seconds):
                value = ops.to_wire(ops.OPERATIONS[op](self._namespace, *args, **kwargs))
        except _TimeLimit:
            raise SubmissionError(
                "timeout", f"no answer within {seconds:g} s in {name}: an infinite loop, or far too slow") from None
        except ops.MissingName as err:
            raise SubmissionError("missing", str(err)) from None
        except Exception as err:  # noqa: BLE001 - reported like the sandbox reports it
            raise SubmissionError("exception", f"{type(err).__name__}: {err}") from None
        return protocol.read_message(io.BytesIO(protocol.encode(value)))


class _TimeLimit(BaseException):
    """Raised in the student's code when its time is up (a BaseException: ``except Exception``
    in a loop does not swallow it)."""


@contextmanager
def _time_limit(seconds: float):
    """A wall-clock limit on the main thread of a Unix process (a notebook kernel's); elsewhere none.

    The alarm interrupts Python code; a single long NumPy call ends first.
    """
    if (not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread()
            or signal.getitimer(signal.ITIMER_REAL)[0] > 0):  # someone else's alarm is running: leave it
        yield
        return

    def expire(signum, frame):
        raise _TimeLimit

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_ENTRIES = pytest.StashKey[dict]()


@pytest.fixture(scope="session", name="student")
def _student_fixture(request):
    """The submission under test (one parameter per submission of the session)."""
    entry = request.config.stash[_ENTRIES][request.param]
    try:
        yield entry.open()
    finally:
        entry.close()


_FIXTURES = types.ModuleType("autograder.runner_fixtures")  # a plugin module that holds the fixture
_FIXTURES.student = _student_fixture


class _Collector:
    """A pytest plugin: the ``student`` fixture, one parameter per submission, and results.

    ``student`` is session-scoped and parametrized by submission, so pytest collects the
    suite once and runs it for each submission in turn; a submission's sandbox starts
    when its first test needs it and closes before the next submission's starts.
    """

    def __init__(self, entries: dict, exercise: str | None = None):
        self._entries = entries
        self._exercise = exercise
        self.results: dict[str, list[TestResult]] = {key: [] for key in entries}


    def pytest_collection_modifyitems(self, config, items):
        if self._exercise is None:
            return
        keep, drop = [], []
        for item in items:
            marker = item.get_closest_marker("exercise")
            (keep if marker and marker.args[0] == self._exercise else drop).append(item)
        items[:] = keep
        config.hook.pytest_deselected(items=drop)

    def pytest_generate_tests(self, metafunc):
        if "student" in metafunc.fixturenames:
            keys = list(self._entries)
            metafunc.parametrize("student", keys, ids=[f"SUBMISSION{i}" for i in range(len(keys))],
                                 indirect=True, scope="session")

    def pytest_configure(self, config):
        config.stash[_ENTRIES] = self._entries

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.when == "call" or (report.when == "setup" and report.failed):
            explanation = _explain(call.excinfo)
            key = item.callspec.params["student"]
            exercise = item.get_closest_marker("exercise")
            points = item.get_closest_marker("points")
            max_score = float(points.args[0]) if points else 1.0
            passed = report.passed
            self.results[key].append(TestResult(
                name=re.sub(r"\[SUBMISSION\d+\]|-SUBMISSION\d+(?=[-\]])|(?<=\[)SUBMISSION\d+-", "", item.name),
                exercise=exercise.args[0] if exercise else "?",
                score=max_score if passed else 0.0,
                max_score=max_score,
                status="passed" if passed else "failed",
                output="" if passed else explanation[0],
                visibility="visible" if item.path.name == "test_public.py" else "after_published",
                mistake="" if passed else explanation[1],
            ))


KIT_ONLY = ("the hidden tests of {slug} are not here: this is the student kit, which runs the public checks "
            "(python -m autograder check NOTEBOOK); your instructor grades with the full suite")


NOT_IMPLEMENTED = "not implemented yet: the function still raises NotImplementedError; replace the stub's body with your code"


def _explain(excinfo) -> tuple[str, str]:
    """``(feedback, mistake identifier)`` of a failed test."""
    if excinfo is None:
        return "failed", "failed"
    error = excinfo.value
    if isinstance(error, Mismatch):
        return str(error), error.mistake
    if isinstance(error, SubmissionError):
        lines = error.message.strip().splitlines()
        if lines and lines[-1].startswith("NotImplementedError"):
            return NOT_IMPLEMENTED, "not_implemented"
        return str(error), error.kind
    if isinstance(error, AssertionError):
        return str(error).split("\nassert ")[0] or "a check failed", "wrong_value"
    return f"your output could not be checked ({type(error).__name__}: {error})", "unreadable_output"


_CHAPTER_CELLS: dict[str, frozenset] = {}


def _chapter_cells(slug: str) -> frozenset:
    if slug not in _CHAPTER_CELLS:
        _CHAPTER_CELLS[slug] = chapter_cells(slug)
    return _CHAPTER_CELLS[slug]


class _Entry:
    """One submission being graded: its report, and its sandbox while its tests run."""

    def __init__(self, slug: str, path: Path, limits: Limits, sandboxed: bool):
        self.path, self.limits, self.sandboxed = Path(path), limits, sandboxed
        self.report = Report(assignment=slug, submission=str(path))
        self.calls: dict[str, set[str]] = {}
        self.sandbox: Sandbox | None = None
        self.started = 0.0

    def open(self) -> Student:
        self.started = time.monotonic()
        report = self.report
        try:
            submission = read_submission(self.path, _chapter_cells(self.report.assignment))
        except SubmissionReadError as err:
            report.messages.append(str(err))
            return Student(None, str(err))
        other = other_assignment(self.path, report.assignment)
        if other:
            message = (f"{self.path.name} holds the exercises of {other}, not {report.assignment}: "
                       f"the wrong notebook was submitted")
            report.messages.append(message)
            return Student(None, message)
        report.messages += submission.notes
        self.calls = calls_between_exercises(submission.cells, exercise_names(self.report.assignment))
        self.sandbox = Sandbox(submission.cells, limits=self.limits, sandboxed=self.sandboxed)
        try:
            info = self.sandbox.loaded()
        except SubmissionError as err:
            report.messages += list(self.sandbox.skipped.values())
            report.messages.append(f"your code could not be run: {err.message}")
            return Student(None, f"your code could not be run: {err.message}")
        report.sandbox = info.get("sandbox", "")
        if report.sandbox != "bwrap":
            report.messages.append("note: graded without isolation (--no-sandbox): the code could read any file")
        report.messages += list(self.sandbox.skipped.values())
        for _, error in sorted(info.get("errors", {}).items(), key=lambda kv: int(kv[0])):
            report.messages.append(f"error while running your code:\n{error}")
        return Student(self.sandbox)

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None
        if self.started and not self.report.execution_time:
            self.report.execution_time = round(time.monotonic() - self.started, 3)


PYTEST_ARGS = (
    "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:xdist", "-p", "no:unraisableexception",
    "-p", "no:threadexception", "-p", "no:faulthandler", "-p", "no:warnings", "-p", "no:legacypath", "-p", "no:logging",
    "--tb=no", "--import-mode=importlib", "-c", str(SUITES / "pytest.ini"), "--rootdir", str(SUITES),
)


def run_suite(slug: str, entries: dict, public_only: bool = False,
              exercise: str | None = None) -> dict[str, list[TestResult]]:
    """Run the suite of ``slug`` (or its tests of one ``exercise``) once for every entry."""
    directory = SUITES / slug
    files = [directory / "test_public.py"] + ([] if public_only else [directory / "test_hidden.py"])
    collector = _Collector(entries, exercise)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    log = io.StringIO()
    with redirect_stdout(log), redirect_stderr(log):
        code = pytest.main([*PYTEST_ARGS, *[str(f) for f in files if f.is_file()]], plugins=[collector, _FIXTURES])
    if code not in (0, 1, 5) or not all(collector.results.values()):
        raise RuntimeError(f"the test suite of {slug} could not run (pytest exit {int(code)}):\n{log.getvalue()[-3000:]}")
    return collector.results


class _PointsCounter:
    """A pytest plugin that sums the points of the collected tests per exercise."""

    def __init__(self):
        self.points: dict[str, float] = {}

    def pytest_collection_modifyitems(self, items):
        for item in items:
            exercise = item.get_closest_marker("exercise")
            points = item.get_closest_marker("points")
            name = exercise.args[0] if exercise else "?"
            self.points[name] = self.points.get(name, 0.0) + (float(points.args[0]) if points else 1.0)


def suite_points(slug: str, public_only: bool = False) -> dict[str, float]:
    """``{exercise: points}`` of the suite of ``slug``, as the grader counts them."""
    directory = SUITES / slug
    files = [directory / "test_public.py"] + ([] if public_only else [directory / "test_hidden.py"])
    counter = _PointsCounter()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        pytest.main([*PYTEST_ARGS, "--collect-only", *[str(f) for f in files if f.is_file()]],
                     plugins=[counter, _Collector({"count": None}), _FIXTURES])
    return counter.points


def grade_many(
    slug: str,
    paths: dict[str, Path | str],
    limits: Limits | None = None,
    public_only: bool = False,
    sandboxed: bool = True,
) -> dict[str, Report]:
    """Grade several submissions of assignment ``slug`` in one pytest session.

    ``sandboxed=False`` runs them without isolation (trusted code only); otherwise
    :class:`~autograder.sandbox.SandboxUnavailable` is raised, before anything runs, where
    the sandbox cannot be set up.
    """
    if slug not in assignments():
        raise ValueError(f"unknown assignment {slug!r}; known: {', '.join(assignments())}")
    if not public_only and not has_hidden_tests(slug):
        raise ValueError(KIT_ONLY.format(slug=slug))
    require_isolation(sandboxed)
    entries = {key: _Entry(slug, path, limits or Limits(), sandboxed) for key, path in paths.items()}
    try:
        results = run_suite(slug, entries, public_only=public_only)
    finally:
        for entry in entries.values():
            entry.close()
    reports = {}
    for key, entry in entries.items():
        report = entry.report
        report.tests = attribute_to_callees(mark_unimplemented(results[key]), entry.calls)
        report.score = sum(t.score for t in report.tests)
        report.max_score = sum(t.max_score for t in report.tests)
        reports[key] = report
    return reports


def grade(slug: str, path: Path | str, limits: Limits | None = None, public_only: bool = False,
          sandboxed: bool = True) -> Report:
    """Grade the submission at ``path`` against assignment ``slug``."""
    return grade_many(slug, {"submission": path}, limits, public_only, sandboxed)["submission"]
