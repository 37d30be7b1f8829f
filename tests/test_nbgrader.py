"""nbgrader integration: the release hides solutions, and autograde agrees with grade-all."""

import re

import nbformat
import pytest
from nbgrader.api import Gradebook

from autograder import notebooks as nbgen
from autograder.identify import released
from autograder.release import nbgrader, release, source_notebook

from students import fill as fill_notebook

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
              for c in nb.cells if nbgen.nbgrader_meta(c).get("grade") and c.cell_type == "code"}
    assert graded == {f"check_{name}": p for name, p in points.items()}


CHAPTERS = released()          # every assignment whose chapter exists


@pytest.fixture(scope="module")
def every_release(tmp_path_factory):
    course = tmp_path_factory.mktemp("every")
    release(CHAPTERS, course=course)
    return course


@pytest.mark.parametrize("slug", CHAPTERS)
def test_no_release_holds_a_thinking_solution(every_release, slug):
    """Each thinking exercise's model answer stays in the source, as a manually graded answer
    cell with points; the student's release has that cell empty ("YOUR ANSWER HERE")."""
    source = nbformat.read(every_release / "source" / slug / f"{slug}.ipynb", as_version=4)
    released = nbformat.read(every_release / "release" / slug / f"{slug}.ipynb", as_version=4)
    answers = [c for c in source.cells if nbgen.nbgrader_meta(c).get("grade_id", "").startswith("answer_")]
    chapter = (ROOT / "chapters" / f"{slug}.md").read_text()
    assert len(answers) == chapter.count("{solution}") > 0
    text = "\n".join(c.source for c in released.cells)
    assert "{solution}" not in text
    for cell in answers:
        meta = nbgen.nbgrader_meta(cell)
        assert meta["grade"] and meta["solution"] and meta["points"] > 0
        for line in cell.source.splitlines()[1:-1]:
            if len(line.strip()) >= 30 and chapter.count(line) == 1:  # a line of the model answer only
                assert line not in text, f"{meta['grade_id']}: {line}"
    empty = [c for c in released.cells if nbgen.nbgrader_meta(c).get("grade_id", "").startswith("answer_")]
    assert len(empty) == len(answers) and all(c.source == "YOUR ANSWER HERE" for c in empty)


def fill(release_nb, replacements=None, drop=()):
    return fill_notebook(release_nb, SLUG, replacements, drop)


BUGS = {
    "correct": {},
    "eps_outside": {"std = np.sqrt(var + eps)": "std = np.sqrt(var) + eps"},
    "reversed": {"new_mean = (1.0 - momentum) * running_mean.astype(np.float64) + momentum * batch_mean":
                 "new_mean = momentum * running_mean.astype(np.float64) + (1.0 - momentum) * batch_mean"},
}


# A notebook that changes how it is graded: under nbgrader's autograde the graded cells call
# autograder.inline.grade in the student's kernel, so it replaces that function (and check, so
# that its unfinished exercises do not show).
TAMPER = ("import autograder.inline as _inline\n"
          "from autograder.runner import suite_points as _points\n"
          "_inline.grade = lambda slug, exercise, *args, **kwargs: _points(slug)[exercise]   # full marks\n"
          "_inline.check = lambda *args, **kwargs: print('all public checks passed.')")


@pytest.fixture(scope="module")
def class_graded(course, tmp_path_factory):
    """A small class (correct, partly correct, broken, tampering) through ``autograde``:
    nbgrader's autograde, grade-all in the sandbox, the sandboxed scores into the grade book."""
    from autograder.gradebook import autograde

    release_nb = nbformat.read(course / "release" / SLUG / f"{SLUG}.ipynb", as_version=4)
    students = {name: fill(release_nb, bug) for name, bug in BUGS.items()}
    broken = fill(release_nb, drop=("update_running_stats", "batchnorm_inference", "spatial_batchnorm_forward"))
    broken.cells.insert(3, nbformat.v4.new_code_cell("def oops(:\n    pass"))  # a syntax error
    students["broken"] = broken
    tamper = fill(release_nb, drop=("batchnorm_inference", "spatial_batchnorm_forward"))
    tamper.cells.insert(1, nbformat.v4.new_code_cell(TAMPER))
    students["tamper"] = tamper
    # a forgery nbgrader itself refuses (more points than the cell has): it drops the notebook
    overflow = fill(release_nb)
    overflow.cells.insert(1, nbformat.v4.new_code_cell(
        "import autograder.inline as _inline\n_inline.grade = lambda *args, **kwargs: 1000.0"))
    students["overflow"] = overflow
    for name, nb in students.items():
        target = course / "submitted" / name / SLUG / f"{SLUG}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
    out = tmp_path_factory.mktemp("grades")
    ours, differences, problems = autograde(SLUG, course, out, jobs=2, timeout=10)
    assert any("overflow" in line for line in problems), problems                 # nbgrader's own errors
    assert not any(f"/{name}/" in line for line in problems for name in students if name != "overflow")
    book = {}
    with Gradebook(f"sqlite:///{course}/gradebook.db") as gb:
        for name in students:
            submission = gb.find_submission_notebook(SLUG, SLUG, name)
            book[name] = {g.name.removeprefix("check_"): g.score for g in submission.grades if g.name.startswith("check_")}
    return book, ours, differences, out


def sandboxed(report):
    return {exercise: earned for exercise, (earned, _) in report.by_exercise().items()}


def test_grade_book_holds_the_sandboxed_scores(class_graded):
    book, ours, _, _ = class_graded
    for name, scores in book.items():
        assert scores == pytest.approx(sandboxed(ours[name])), f"{name}: grade book {scores} vs grade-all {sandboxed(ours[name])}"


def test_honest_notebooks_score_the_same_in_the_kernel_and_in_the_sandbox(class_graded):
    """nbgrader's own in-kernel run agrees with grade-all on every honest notebook."""
    _, _, differences, _ = class_graded
    assert {d.student for d in differences} == {"tamper", "overflow"}, differences


def test_a_notebook_nbgrader_cannot_process_is_in_the_grade_book_all_the_same(class_graded):
    """nbgrader drops a notebook whose graded cell claims more points than it has; the grade
    book gets it back, with the sandboxed scores, and the report says so."""
    book, ours, differences, _ = class_graded
    assert book["overflow"] == pytest.approx(sandboxed(ours["overflow"]))
    assert ours["overflow"].score == ours["overflow"].max_score          # its code is the reference
    notes = [d.note for d in differences if d.student == "overflow"]
    assert notes and all(note.startswith("nbgrader recorded no score") for note in notes), notes


def test_a_submission_missing_from_the_grade_book_is_added(course, class_graded):
    """A student graded in the sandbox whom nbgrader never recorded gets a submission in the
    grade book, with the sandboxed scores: no student is dropped."""
    from autograder.gradebook import course_db_url, record_scores

    _, ours, _, _ = class_graded
    try:
        differences = record_scores(course_db_url(course), SLUG, {"late": ours["eps_outside"]})
        assert [d.student for d in differences] == ["late"] and "added to the grade book" in differences[0].note
        with Gradebook(course_db_url(course)) as gb:
            grades = gb.find_submission_notebook(SLUG, SLUG, "late").grades
            recorded = {g.name.removeprefix("check_"): g.score for g in grades if g.name.startswith("check_")}
        assert recorded == pytest.approx(sandboxed(ours["eps_outside"]))
    finally:                        # the class of the other tests stays as it was
        with Gradebook(course_db_url(course)) as gb:
            gb.remove_submission(SLUG, "late")
            gb.remove_student("late")


def test_a_tampering_notebook_scores_what_its_code_earns_and_is_reported(class_graded):
    book, ours, differences, out = class_graded
    forged = {d.cell: d for d in differences if d.student == "tamper"}
    assert set(forged) == {"check_batchnorm_inference", "check_spatial_batchnorm_forward"}
    full = ours["correct"].by_exercise()
    for cell, d in forged.items():
        assert d.in_kernel == full[cell.removeprefix("check_")][1] and d.sandboxed == 0   # forged in the kernel
    assert book["tamper"]["batchnorm_inference"] == 0 and book["tamper"]["spatial_batchnorm_forward"] == 0
    assert book["tamper"]["batchnorm_forward"] == full["batchnorm_forward"][0]
    assert "tamper,check_batchnorm_inference," in (out / "differences.csv").read_text()


def test_nbgrader_export_gives_the_sandboxed_scores(course, class_graded, tmp_path):
    """What an instructor exports (nbgrader export) is what grade-all computed."""
    import csv

    _, ours, _, _ = class_graded
    result = nbgrader("export", course=course, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert not (tmp_path / "grades.csv").exists()  # not into the folder it was run from
    rows = {row["student_id"]: row for row in csv.DictReader(open(course / "grades.csv"))
            if row["assignment"] == SLUG}
    assert set(rows) == set(ours)
    for name, report in ours.items():
        assert float(rows[name]["raw_score"]) == pytest.approx(report.score), name


def test_the_class_is_ranked_as_expected(class_graded):
    _, ours, _, out = class_graded
    assert ours["correct"].score == ours["correct"].max_score
    assert ours["broken"].score < ours["eps_outside"].score < ours["correct"].score
    assert ours["reversed"].by_exercise()["update_running_stats"][0] < ours["correct"].by_exercise()["update_running_stats"][0]
    assert any("SyntaxError" in m for m in ours["broken"].messages)
    csv = (out / "grades.csv").read_text()
    assert re.search(r"^correct,ch02_bn_forward,(\d+),\1,", csv, re.M)


def test_autograde_command_refuses_a_course_without_submissions(tmp_path, capsys):
    from autograder.cli import main

    assert main(["autograde", "--assignment", SLUG, "--course", str(tmp_path)]) == 2
    assert "nbgrader collect" in capsys.readouterr().err
    assert main(["autograde", "--assignment", "ch99_nothing", "--course", str(tmp_path)]) == 2


def test_nbgrader_autograde_works_from_the_course_folder_without_pythonpath(tmp_path):
    """An instructor types `nbgrader autograde` in course/ with no variable set: correct work
    gets full marks (it got 0: the kernels could not import the grader)."""
    import os
    import subprocess
    import sys

    from autograder.release import COURSE_CONFIG
    from autograder.runner import suite_points

    course = tmp_path / "course"
    release([SLUG], course=course)
    (course / "nbgrader_config.py").write_text(
        COURSE_CONFIG.format(path=str(ROOT / "nbgrader_config.py"))
        + f"c.CourseDirectory.root = {str(course)!r}\nc.CourseDirectory.db_url = 'sqlite:///{course}/gradebook.db'\n")
    released = nbformat.read(course / "release" / SLUG / f"{SLUG}.ipynb", as_version=4)
    (course / "submitted" / "ann" / SLUG).mkdir(parents=True)
    nbformat.write(fill(released), course / "submitted" / "ann" / SLUG / f"{SLUG}.ipynb")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    result = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", SLUG, "--force"], cwd=course, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "No module named 'autograder'" not in result.stdout + result.stderr
    with Gradebook(f"sqlite:///{course}/gradebook.db") as gb:
        assert gb.find_submission(SLUG, "ann").score == pytest.approx(sum(suite_points(SLUG).values()))


def test_manual_answer_scores_add_to_the_autograded_score_in_the_export(course, class_graded, tmp_path):
    """A thinking exercise graded by hand in formgrader counts in nbgrader's export on top of
    the sandboxed score (the grade book's manual score is put back afterwards)."""
    import csv

    _, ours, _, _ = class_graded
    with Gradebook(f"sqlite:///{course}/gradebook.db") as gb:
        notebook = gb.find_submission_notebook(SLUG, SLUG, "correct")
        answers = [g for g in notebook.grades if g.name.startswith("answer_")]
        # left blank ("YOUR ANSWER HERE"), nbgrader scores them 0 itself; a grader may still award points
        assert answers and all(g.max_score > 0 and g.auto_score == 0 for g in answers)
        answers[0].manual_score = 1.5
        gb.db.commit()
    try:
        result = nbgrader("export", course=course, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        row = next(r for r in csv.DictReader(open(course / "grades.csv"))
                   if r["assignment"] == SLUG and r["student_id"] == "correct")
        assert float(row["raw_score"]) == pytest.approx(ours["correct"].score + 1.5)
    finally:
        with Gradebook(f"sqlite:///{course}/gradebook.db") as gb:
            for grade in gb.find_submission_notebook(SLUG, SLUG, "correct").grades:
                if grade.name.startswith("answer_"):
                    grade.manual_score = None
            gb.db.commit()
