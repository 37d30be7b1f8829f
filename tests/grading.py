"""What the tests of the grader (tests/test_grader_*.py) share: building submissions,
grading them, and the checks made on their reports.

Each test file keeps its own submissions (correct ones, planted mistakes, a missing
exercise). This module writes them to files, grades them all in ONE session of the grader
(``autograder.runner.grade_many``: one pytest session, one sandbox zygote) and checks that

- a correct submission gets full marks (:func:`assert_full_marks`),
- a mistake costs points on its own exercise only and is named there (:func:`assert_mistake_named`),
- a missing exercise scores 0 there and nothing else changes (:func:`assert_only_missing`).

:class:`GraderTests` holds these tests for a test file to subclass with its own cases
(:class:`GraderSessionTests` adds a check that sharing a session changes no report).

Imported as ``from grading import ...``: under pytest's default (prepend) import mode the
folder of the test files, ``tests``, is on ``sys.path``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import nbformat
import pytest

from autograder.runner import Report, TestResult, grade, grade_many

ROOT = Path(__file__).resolve().parents[1]

# Every exercise of a chapter is worth this many points, at least and at most.
POINTS = (10, 25)

# A test cell of a released notebook, which fails when run: the grader must skip it.
RELEASED_TEST_CELL = "assert False, 'a test cell of the released notebook'"


# --------------------------------------------------------------------------- building submissions


def reference(slug: str) -> str:
    """The source of the reference solution of chapter ``slug``."""
    return (ROOT / "solutions" / f"{slug}.py").read_text()


def patch_once(old: str, new: str, source: str) -> str:
    """``source`` with ``old`` replaced by ``new`` (``old`` must occur exactly once)."""
    assert source.count(old) == 1, f"not found exactly once: {old!r}"
    return source.replace(old, new)


def without(source: str, name: str) -> str:
    """``source`` without the top-level function or class ``name`` (up to the next top-level
    ``def`` or ``class``, or the end)."""
    start = source.index(f"def {name}(") if f"def {name}(" in source else source.index(f"class {name}(")
    ends = [i for i in (source.find("\ndef ", start + 1), source.find("\nclass ", start + 1)) if i >= 0]
    return source[:start] + (source[min(ends):] if ends else "")


def notebook(cells, graded: str | None = None) -> nbformat.NotebookNode:
    """A notebook of ``cells``: code as strings, or ``(kind, source)`` pairs with kind "markdown"
    or "code". ``graded`` is the source of a locked nbgrader test cell appended last (released
    notebooks have such cells; the grader must skip them)."""
    nb = nbformat.v4.new_notebook()
    for cell in cells:
        kind, source = ("code", cell) if isinstance(cell, str) else cell
        new_cell = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(new_cell(source))
    if graded is not None:
        cell = nbformat.v4.new_code_cell(graded)
        cell.metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "check", "points": 1,
                                     "locked": True, "schema_version": 3}
        nb.cells.append(cell)
    return nb


def blocks_notebook(title: str, source: str, magic: str = "%matplotlib inline") -> nbformat.NotebookNode:
    """``source`` as a notebook: a markdown ``title``, the first block of ``source`` (its imports)
    after ``magic``, one cell per further block (blocks are separated by two blank lines), and a
    graded test cell of the released notebook (to skip)."""
    head, *blocks = source.split("\n\n\n")
    return notebook([("markdown", title), f"{magic}\n{head}", *(block.strip() for block in blocks)],
                    graded=RELEASED_TEST_CELL)


def combine(source: str, changes) -> str:
    """``source`` with several planted mistakes: each change is a dict with ``"patch"``, a list of
    ``(old, new)`` replacements (each ``old`` exactly once), and/or ``"append"``, code appended
    after the source (a later definition replaces an earlier one)."""
    appended = []
    for how in changes:
        for old, new in how.get("patch", []):
            source = patch_once(old, new, source)
        if "append" in how:
            appended.append(how["append"])
    return "\n\n".join([source, *appended])


class Mistake(NamedTuple):
    """A planted mistake: the submission that holds it, the exercise that must lose points, a
    phrase its feedback must contain, and the other exercises that may lose points in that
    submission (they hold mistakes of their own, or call a faulty exercise)."""
    submission: str
    exercise: str
    phrase: str
    may_lose: frozenset = frozenset()


def one_per_submission(buggy: dict) -> tuple[dict[str, str], dict[str, Mistake]]:
    """Each mistake in a submission of its own, ``<name>.py``; ``buggy``: name -> (source,
    exercise, phrase). Returns the submissions (file name -> source) and the mistakes."""
    sources = {f"{name}.py": source for name, (source, _, _) in buggy.items()}
    mistakes = {name: Mistake(f"{name}.py", exercise, phrase) for name, (_, exercise, phrase) in buggy.items()}
    return sources, mistakes


def bug_groups(exercise_of: dict[str, str], delay: dict[str, int] | None = None) -> list[tuple[str, ...]]:
    """Mistakes put together into submissions, one mistake per exercise at most: the i-th
    submission holds the i-th mistake of every exercise (``exercise_of``: mistake -> exercise,
    in order). ``delay[exercise] = k`` starts that exercise's mistakes at the k-th submission.

    Fewer submissions, fewer sandboxes; the exercises without a mistake in a submission must
    keep full marks all the same."""
    by_exercise: dict[str, list[str | None]] = {}
    for name, exercise in exercise_of.items():
        by_exercise.setdefault(exercise, []).append(name)
    for exercise, k in (delay or {}).items():
        by_exercise[exercise] = [None] * k + by_exercise[exercise]
    width = max(len(v) for v in by_exercise.values())
    return [tuple(v[i] for v in by_exercise.values() if i < len(v) and v[i]) for i in range(width)]


def grouped(source: str, bugs: dict, groups, depends: dict[str, str] | None = None
            ) -> tuple[dict[str, str], dict[str, Mistake]]:
    """The mistakes of each group planted together into ``source``, in a submission named
    ``<name>+<name>....py``; ``bugs``: name -> (exercise, change as for :func:`combine`, phrase);
    ``depends``: exercise -> the exercise it calls (it may lose points with it). Returns the
    submissions (file name -> source) and the mistakes."""
    sources, mistakes = {}, {}
    for group in groups:
        submission = "+".join(group) + ".py"
        sources[submission] = combine(source, [bugs[name][1] for name in group])
        buggy = {bugs[name][0] for name in group}
        buggy |= {user for user, used in (depends or {}).items() if used in buggy}
        for name in group:
            exercise, _, phrase = bugs[name]
            mistakes[name] = Mistake(submission, exercise, phrase, frozenset(buggy - {exercise}))
    return sources, {name: mistakes[name] for name in bugs}


# --------------------------------------------------------------------------- grading


def write_submission(folder: Path, name: str, source) -> Path:
    """Write one submission into ``folder``: ``source`` is the text of a file, or an nbformat
    notebook. ``name`` is the file's name; without a .py or .ipynb ending, the ending is added
    (.ipynb for a notebook, .py for text)."""
    if Path(name).suffix not in (".py", ".ipynb"):
        name += ".py" if isinstance(source, str) else ".ipynb"
    path = Path(folder) / name
    if isinstance(source, str):
        path.write_text(source, encoding="utf-8")
    else:
        nbformat.write(source, str(path))
    return path


def grade_sources(slug: str, sources: dict, folder: Path, public_only: bool = False) -> dict[str, Report]:
    """Write every submission of ``sources`` (name -> text or notebook, see
    :func:`write_submission`) into ``folder`` and grade them all in one session of the grader
    (its public checks only with ``public_only``). The reports are keyed as ``sources``."""
    paths = {name: write_submission(folder, name, source) for name, source in sources.items()}
    return grade_many(slug, paths, public_only=public_only)


def assert_graded_alone_alike(slug: str, reports: dict[str, Report], names) -> None:
    """Each submission of ``names``, graded alone (``grade``: a session of its own), gets the
    same tests, scores and feedback as in the session that graded ``reports`` together."""
    for name in names:
        alone = [(t.name, t.score, t.output) for t in grade(slug, reports[name].submission).tests]
        assert [(t.name, t.score, t.output) for t in reports[name].tests] == alone, name


# --------------------------------------------------------------------------- checking reports


def failed_tests(report: Report, exercise: str | None = None) -> list[TestResult]:
    """The failed tests of ``report`` (of one ``exercise`` when given)."""
    return [t for t in report.tests if t.status == "failed" and (exercise is None or t.exercise == exercise)]


def failures(report: Report, exercise: str) -> str:
    """The feedback of the failed tests of ``exercise``, one after the other."""
    return "\n".join(t.output for t in failed_tests(report, exercise))


def assert_full_marks(report: Report, exercises, points: tuple[int, int] = POINTS) -> None:
    """Every test passed, the report has exactly ``exercises``, each worth ``points`` (min, max)."""
    failed = [(t.name, t.output) for t in report.tests if t.status != "passed"]
    assert report.max_score > 0
    assert report.score == report.max_score and not failed, failed
    totals = report.by_exercise()
    assert set(totals) == set(exercises)
    assert points[0] <= min(total for _, total in totals.values())
    assert max(total for _, total in totals.values()) <= points[1]


def assert_mistake_named(report: Report, exercise: str, phrase: str, may_lose=()) -> None:
    """The mistake costs points on ``exercise``, its feedback there contains ``phrase``, and
    every other exercise keeps full marks (but those of ``may_lose``)."""
    scores = report.by_exercise()
    assert report.score < report.max_score
    assert scores[exercise][0] < scores[exercise][1]
    for other, (score, total) in scores.items():
        if other != exercise and other not in may_lose:
            assert score == total, (other, failures(report, other))
    text = failures(report, exercise)
    assert phrase in text, text


def assert_only_missing(report: Report, exercise: str) -> None:
    """``exercise`` is missing from the submission: it scores 0, the feedback says it is not
    defined, and every other exercise keeps full marks."""
    for other, (score, total) in report.by_exercise().items():
        assert score == (0 if other == exercise else total), other
    assert f"does not define {exercise!r}" in failures(report, exercise)


# --------------------------------------------------------------------------- the tests


class GraderTests:
    """The tests of a chapter's grader. A test file subclasses it (as ``TestGrader``) and sets

    - ``slug``, ``exercises``: the chapter, and the exercises its grader reports;
    - ``correct``: file name -> source of a correct submission (text, or a notebook);
    - ``sources``, ``mistakes``: the submissions with planted mistakes (file name -> source),
      and the mistakes (name -> :class:`Mistake`), from :func:`one_per_submission` or :func:`grouped`;
    - ``missing``: file name -> (the exercise it lacks, its source);
    - ``not_public``: mistake -> why the public checks cannot name it from public information
      (every other mistake must be named by the public checks too).

    All the submissions are graded once per class, in one session of the grader.
    """

    slug: str
    exercises: list[str]
    correct: dict
    sources: dict[str, str]
    mistakes: dict[str, Mistake]
    missing: dict[str, tuple[str, str]]
    not_public: dict[str, str] = {}

    def pytest_generate_tests(self, metafunc):
        public = [m for m in self.mistakes if m not in self.not_public]
        for arg, cases in (("submission", self.correct), ("mistake", self.mistakes), ("missing", self.missing),
                           ("public_mistake", public)):
            if arg in metafunc.fixturenames:
                metafunc.parametrize(arg, list(cases))

    @pytest.fixture(scope="class")
    @classmethod
    def reports(cls, tmp_path_factory):
        missing = {name: source for name, (_, source) in cls.missing.items()}
        sources = {**cls.correct, **cls.sources, **missing}
        return grade_sources(cls.slug, sources, tmp_path_factory.mktemp("submissions"))

    def test_correct_submissions_get_full_marks(self, reports, submission):
        assert_full_marks(reports[submission], self.exercises)

    def test_each_mistake_is_caught_and_named(self, reports, mistake):
        submission, exercise, phrase, may_lose = self.mistakes[mistake]
        assert_mistake_named(reports[submission], exercise, phrase, may_lose)

    @pytest.fixture(scope="class")
    @classmethod
    def public_reports(cls, tmp_path_factory):
        return grade_sources(cls.slug, cls.sources, tmp_path_factory.mktemp("public"), public_only=True)

    def test_public_checks_name_what_the_grader_names(self, public_reports, public_mistake):
        """What the grader can name from public information, the checks students run name too."""
        submission, exercise, phrase, _ = self.mistakes[public_mistake]
        failed = failed_tests(public_reports[submission], exercise)
        assert failed and any(phrase in t.output for t in failed), [t.output for t in failed]
        named = [t for t in failed if phrase in t.output]
        assert named[0].mistake not in ("wrong_value", "exception", ""), named[0].mistake

    def test_what_the_public_checks_cannot_name_is_listed_honestly(self, public_reports):
        """``not_public`` lists only mistakes the public checks indeed do not name."""
        named = [m for m in self.not_public
                 if any(self.mistakes[m].phrase in t.output
                        for t in failed_tests(public_reports[self.mistakes[m].submission], self.mistakes[m].exercise))]
        assert named == [], f"named publicly after all: remove them from not_public: {named}"

    def test_missing_exercise_scores_zero_on_that_exercise_only(self, reports, missing):
        assert_only_missing(reports[missing], self.missing[missing][0])

    def test_public_tests_need_no_reference(self):
        """The public checks import neither the reference nor the grader's mistake fingerprints
        (which hold formulas of the exercises); the texts of autograder.messages are allowed."""
        imported = public_imports(self.slug)
        assert not any(m.split(".")[0] == "solutions" or m.startswith("autograder.mistakes") for m in imported), imported


def public_imports(slug: str) -> set[str]:
    """The modules the public checks of ``slug`` import (``from a.b import c`` counts ``a.b``)."""
    import ast

    tree = ast.parse((ROOT / "autograder" / "suites" / slug / "test_public.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


class GraderSessionTests(GraderTests):
    """:class:`GraderTests`, and a check that a session grading many submissions (as grade-all
    does) gives each the report it gets alone: for graders that keep per-submission caches."""

    def test_one_session_grades_each_submission_on_its_own(self, reports):
        """grade-all runs many submissions in one pytest session: nothing may leak between them.
        The first two submissions with mistakes and the reference are graded again, each alone."""
        first, second = list(self.sources)[:2]
        assert_graded_alone_alike(self.slug, reports, [first, "reference.py", second])


def grade_release(slug: str, tmp_path_factory, students: dict) -> dict[str, Report]:
    """The chapter's own release (``make release``), filled in as students would and graded in one
    session. ``students`` maps a name to ``(replacements, drop)`` for :func:`students.fill`: text
    replacements planting mistakes in the reference, and exercises left as their stubs."""
    from autograder.release import release
    from students import fill

    course = tmp_path_factory.mktemp(f"{slug}_course")
    release([slug], course=course)
    released = nbformat.read(course / "release" / slug / f"{slug}.ipynb", as_version=4)
    sources = {name: fill(released, slug, replacements, drop) for name, (replacements, drop) in students.items()}
    return grade_sources(slug, sources, tmp_path_factory.mktemp(f"{slug}_released"))
