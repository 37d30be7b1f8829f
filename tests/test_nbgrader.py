"""nbgrader integration: the release hides solutions, and autograde agrees with grade-all."""

import copy
import re

import nbformat
import pytest
from nbgrader.api import Gradebook

from autograder import notebooks as nbgen
from autograder.cli import grade_all
from autograder.release import nbgrader, release, source_notebook

SLUG = "ch02_bn_forward"
ROOT = nbgen.ROOT


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    release([SLUG], course=course)
    return course


def test_release_has_stubs_and_public_checks_but_no_solutions(course):
    nb = nbformat.read(course / "release" / SLUG / f"{SLUG}.ipynb", as_version=4)
    text = "\n".join(cell.source for cell in nb.cells)
    assert "### BEGIN SOLUTION" not in text and "### BEGIN HIDDEN TESTS" not in text
    assert "grade(" not in text, "hidden tests leaked into the release"
    for name, definition in nbgen.load_definitions(SLUG).items():
        assert f"def {name}(" in text
        for line in definition.solution_text.splitlines():
            line = line.strip()
            if len(line) >= 25 and not line.startswith("#") and line not in (ROOT / "chapters" / f"{SLUG}.md").read_text():
                assert line not in text, f"solution line of {name} in the release: {line}"
        assert f'check("{SLUG}", "{name}")' in text
    assert text.count("raise NotImplementedError()") == len(nbgen.load_definitions(SLUG))


def test_source_points_come_from_the_suite():
    from autograder.runner import suite_points

    points = suite_points(SLUG)
    nb = source_notebook(SLUG)
    graded = {nbgen.nbgrader_meta(c)["grade_id"]: nbgen.nbgrader_meta(c)["points"]
              for c in nb.cells if nbgen.nbgrader_meta(c).get("grade")}
    assert graded == {f"check_{name}": p for name, p in points.items()}


def fill(release_nb, replacements=None, drop=()):
    """A student's notebook: the stubs replaced by the reference, with optional bugs."""
    nb = copy.deepcopy(release_nb)
    definitions = nbgen.load_definitions(SLUG)
    for cell in nb.cells:
        meta = nbgen.nbgrader_meta(cell)
        if meta.get("solution") and meta["grade_id"] in definitions and meta["grade_id"] not in drop:
            source = definitions[meta["grade_id"]].render("instructor")
            for old, new in (replacements or {}).items():
                if old in source:
                    source = source.replace(old, new)
            cell.source = source
    return nb


BUGS = {
    "correct": {},
    "eps_outside": {"std = np.sqrt(var + eps)": "std = np.sqrt(var) + eps"},
    "reversed": {"new_mean = (1.0 - momentum) * running_mean.astype(np.float64) + momentum * batch_mean":
                 "new_mean = momentum * running_mean.astype(np.float64) + (1.0 - momentum) * batch_mean"},
}


@pytest.fixture(scope="module")
def class_graded(course, tmp_path_factory):
    """A small class (correct, partly correct, broken) graded by nbgrader and by grade-all."""
    release_nb = nbformat.read(course / "release" / SLUG / f"{SLUG}.ipynb", as_version=4)
    students = {name: fill(release_nb, bug) for name, bug in BUGS.items()}
    broken = fill(release_nb, drop=("update_running_stats", "batchnorm_inference", "spatial_batchnorm_forward"))
    broken.cells.insert(3, nbformat.v4.new_code_cell("def oops(:\n    pass"))  # a syntax error
    students["broken"] = broken
    for name, nb in students.items():
        target = course / "submitted" / name / SLUG / f"{SLUG}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
    result = nbgrader("autograde", SLUG, "--force", course=course)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    nbgrader_scores = {}
    with Gradebook(f"sqlite:///{course}/gradebook.db") as gb:
        for name in students:
            submission = gb.find_submission_notebook(SLUG, SLUG, name)
            nbgrader_scores[name] = {g.name.removeprefix("check_"): g.score for g in submission.grades if g.name.startswith("check_")}
    out = tmp_path_factory.mktemp("grades")
    ours = dict(grade_all(SLUG, course, out, jobs=2, timeout=10))
    return nbgrader_scores, ours, out


def test_autograde_and_grade_all_give_the_same_scores(class_graded):
    nbgrader_scores, ours, _ = class_graded
    for name, scores in nbgrader_scores.items():
        per_exercise = {exercise: earned for exercise, (earned, _) in ours[name].by_exercise().items()}
        assert scores == pytest.approx(per_exercise), f"{name}: nbgrader {scores} vs grade-all {per_exercise}"


def test_the_class_is_ranked_as_expected(class_graded):
    _, ours, out = class_graded
    assert ours["correct"].score == ours["correct"].max_score
    assert ours["broken"].score < ours["eps_outside"].score < ours["correct"].score
    assert ours["reversed"].by_exercise()["update_running_stats"][0] < ours["correct"].by_exercise()["update_running_stats"][0]
    assert any("SyntaxError" in m for m in ours["broken"].messages)
    csv = (out / "grades.csv").read_text()
    assert re.search(r"^correct,ch02_bn_forward,(\d+),\1,", csv, re.M)
