"""grade-all as an instructor runs it: every student gets a row, nothing is dropped silently,
and one student can be regraded in place."""

import csv
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder.classlist import ClassError, find_class, read_roster

ROOT = Path(__file__).resolve().parents[1]
SLUG = "ch02_bn_forward"
REFERENCE = (ROOT / "solutions" / f"{SLUG}.py").read_text()
BUGGY = REFERENCE.replace("std = np.sqrt(var + eps)", "std = np.sqrt(var) + eps")


def notebook(source: str) -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    return nbformat.writes(nb)


@pytest.fixture
def course(tmp_path):
    """An nbgrader course: a notebook, a .py, an empty folder, a student of another assignment,
    a stray file; and a roster with one more student."""
    submitted = tmp_path / "course" / "submitted"
    for student, name, text in (("alice", f"{SLUG}.ipynb", notebook(REFERENCE)), ("bob", "answers.py", REFERENCE)):
        (submitted / student / SLUG).mkdir(parents=True)
        (submitted / student / SLUG / name).write_text(text)
    (submitted / "carol" / SLUG).mkdir(parents=True)
    (submitted / "dave" / "ch03_bn_backward").mkdir(parents=True)
    (submitted / "notes.txt").write_text("remember to grade")
    roster = tmp_path / "roster.csv"
    roster.write_text("name,student\nAlice A,alice\nBob B,bob\nCarol C,carol\nDave D,dave\nErin E,erin\n")
    return tmp_path / "course", roster


def grade_all(*args):
    return subprocess.run([sys.executable, "-m", "autograder", "grade-all", "--assignment", SLUG, *map(str, args),
                           "--jobs", "1"], capture_output=True, text=True, cwd=ROOT)


def rows(out: Path) -> dict:
    return {row["student"]: row for row in csv.DictReader(open(out / "grades.csv"))}


def test_every_student_gets_a_row_and_every_skip_is_said(course, tmp_path):
    folder, roster = course
    result = grade_all(folder, "--out", tmp_path / "out", "--roster", roster)
    assert result.returncode == 0, result.stderr
    grades = rows(tmp_path / "out")
    assert sorted(grades) == ["alice", "bob", "carol", "dave", "erin"]
    assert grades["alice"]["score"] == grades["alice"]["max_score"] == grades["bob"]["score"] == "73"
    assert grades["alice"]["reason"] == grades["bob"]["reason"] == ""
    for student, phrase in (("carol", "holds no .ipynb or .py file"), ("dave", f"no submission of {SLUG}"),
                            ("erin", "on the roster, no submission found")):
        assert grades[student]["score"] == "0" and grades[student]["max_score"] == "73", grades[student]
        assert phrase in grades[student]["reason"], grades[student]
        assert (tmp_path / "out" / student / "feedback.txt").is_file()
    assert f"skipped ({SLUG}): notes.txt: not a submission" in result.stderr
    assert "3 student(s) without one" in result.stdout


def test_the_reason_of_a_zero_says_what_happened_in_one_line(tmp_path):
    """A submission whose code stops the worker: grades.csv says how, not only "error while running"."""
    folder = tmp_path / "course" / "submitted" / "frank" / SLUG
    folder.mkdir(parents=True)
    (folder / f"{SLUG}.py").write_text("raise SystemExit\n")
    result = grade_all(tmp_path / "course" / "submitted", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    reason = rows(tmp_path / "out")["frank"]["reason"]
    assert reason.startswith("error while running your code: ") and "sys.exit(None)" in reason, reason
    assert "\n" not in reason


def test_one_student_is_regraded_in_place(course, tmp_path):
    folder, _ = course
    out = tmp_path / "out"
    assert grade_all(folder, "--out", out).returncode == 0
    before = rows(out)
    (folder / "submitted" / "bob" / SLUG / "answers.py").write_text(BUGGY)
    result = grade_all(folder, "--out", out, "--student", "bob")
    assert result.returncode == 0, result.stderr
    after = rows(out)
    assert sorted(after) == sorted(before)
    assert float(after["bob"]["score"]) < 73
    assert {k: v for k, v in after.items() if k != "bob"} == {k: v for k, v in before.items() if k != "bob"}
    assert {row["student"] for row in csv.DictReader(open(out / "mistakes.csv"))} == {"bob"}
    unknown = grade_all(folder, "--out", out, "--student", "zoe")
    assert unknown.returncode == 2 and "no student 'zoe'" in unknown.stderr


def test_flat_files_and_a_student_with_both_kinds(tmp_path):
    (tmp_path / "ann.py").write_text(REFERENCE)
    (tmp_path / "ben.ipynb").write_text(notebook(REFERENCE))
    (tmp_path / "ben.py").write_text(BUGGY)
    (tmp_path / ".DS_Store").write_text("")
    found = find_class(tmp_path, SLUG)
    assert found.submissions == {"ann": tmp_path / "ann.py", "ben": tmp_path / "ben.ipynb"}
    assert any(line.startswith("./ben.py: another file of the same student") for line in found.skipped)
    assert ".DS_Store: hidden" in found.skipped


@pytest.mark.parametrize("text, phrase", [
    ("", "is empty"),
    ("student\nann\nann\n", "more than once"),
])
def test_a_bad_roster_is_refused_in_one_line(tmp_path, text, phrase):
    roster = tmp_path / "roster.csv"
    roster.write_text(text)
    with pytest.raises(ClassError, match=phrase):
        read_roster(roster)
    (tmp_path / "ann.py").write_text(REFERENCE)
    result = grade_all(tmp_path, "--out", tmp_path / "out", "--roster", roster)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and phrase in result.stderr


def test_a_roster_without_a_known_column_uses_its_first(tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("login_name,section\nann,A\nben,B\n")
    assert read_roster(roster) == ["ann", "ben"]
    roster.write_text("Section,Student\nA,ann\nB,ben\n")
    assert read_roster(roster) == ["ann", "ben"]


SLUGS = ("ch01_normalization", "ch02_bn_forward")


@pytest.fixture
def two_assignments(tmp_path):
    """Five students, two assignments, in nbgrader's layout (one student lacks chapter 1)."""
    submitted = tmp_path / "course" / "submitted"
    for i, student in enumerate(("ann", "ben", "cat", "dan", "eve")):
        for slug in SLUGS:
            if slug == "ch01_normalization" and student == "eve":
                continue
            source = (ROOT / "solutions" / f"{slug}.py").read_text()
            if i % 2:
                source = source.replace("std = np.sqrt(var + eps)", "std = np.sqrt(var) + eps")
            (submitted / student / slug).mkdir(parents=True, exist_ok=True)
            (submitted / student / slug / f"{slug}.py").write_text(source)
    return tmp_path / "course"


def test_several_assignments_in_one_run_and_shards_merge_to_the_same(two_assignments, tmp_path):
    whole = grade_all_of(two_assignments, ",".join(SLUGS), tmp_path / "whole")
    for slug in SLUGS:
        assert sorted(rows(whole / slug)) == ["ann", "ben", "cat", "dan", "eve"]
    assert rows(whole / "ch01_normalization")["eve"]["reason"].startswith("no submission of ch01_normalization")
    parts = [grade_all_of(two_assignments, ",".join(SLUGS), tmp_path / f"part{k}", "--shard", f"{k}/2")
             for k in (1, 2)]
    for slug in SLUGS:
        a, b = set(rows(parts[0] / slug)), set(rows(parts[1] / slug))
        assert not a & b and a | b == set(rows(whole / slug))
    merged = subprocess.run([sys.executable, "-m", "autograder", "merge", *map(str, parts), "--out",
                             str(tmp_path / "merged")], capture_output=True, text=True, cwd=ROOT)
    assert merged.returncode == 0, merged.stderr
    for slug in SLUGS:
        assert rows(tmp_path / "merged" / slug) == rows(whole / slug)
        assert (tmp_path / "merged" / slug / "mistakes.csv").read_text() == (whole / slug / "mistakes.csv").read_text()
        assert (tmp_path / "merged" / slug / "ben" / "feedback.txt").is_file()


def grade_all_of(course, assignment, out, *extra):
    result = subprocess.run([sys.executable, "-m", "autograder", "grade-all", "--assignment", assignment, str(course),
                             "--out", str(out), "--jobs", "2", *extra], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("args, phrase", [
    (["--shard", "3/2"], "expected K/N"),
    (["--shard", "1/2", "--student", "ann"], "exclude each other"),
])
def test_bad_shard_options_are_usage_errors(two_assignments, tmp_path, args, phrase):
    result = grade_all(two_assignments, "--out", tmp_path / "out", *args)
    assert result.returncode == 2 and phrase in result.stderr


def test_several_assignments_need_the_nbgrader_layout(tmp_path):
    (tmp_path / "ann.py").write_text(REFERENCE)
    result = subprocess.run([sys.executable, "-m", "autograder", "grade-all", "--assignment", ",".join(SLUGS),
                             str(tmp_path), "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "nbgrader's layout" in result.stderr


def test_a_shard_without_students_merges_as_nothing(tmp_path):
    """A small class can leave a shard empty (its grades.csv has a header only)."""
    from autograder.cli import merge

    header = "student,assignment,score,max_score,batchnorm_forward,reason\n"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "grades.csv").write_text(header)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "grades.csv").write_text(header + f"ann,{SLUG},29,29,29,\n")
    (tmp_path / "full" / "mistakes.csv").write_text("student,exercise,test,mistake\n")
    assert merge([tmp_path / "empty", tmp_path / "full"], tmp_path / "out") == [SLUG]
    assert sorted(rows(tmp_path / "out")) == ["ann"] and not (tmp_path / "out" / "empty").exists()
