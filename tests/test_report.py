"""The class report an instructor reads after grading: ranked mistakes, who needs attention."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLUG = "ch02_bn_forward"
REFERENCE = (ROOT / "solutions" / f"{SLUG}.py").read_text()
EPS_OUTSIDE = REFERENCE.replace("std = np.sqrt(var + eps)", "std = np.sqrt(var) + eps")
LOOPS = "def batchnorm_forward(x, gamma, beta, eps=1e-5):\n    while True:\n        pass\n"


def run(*args):
    return subprocess.run([sys.executable, "-m", "autograder", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("class")
    for student, source in (("ann", REFERENCE), ("ben", EPS_OUTSIDE), ("cat", EPS_OUTSIDE), ("dan", LOOPS)):
        (folder / f"{student}.py").write_text(source)
    roster = folder.parent / "roster.csv"
    roster.write_text("student\nann\nben\ncat\ndan\neve\n")
    out = folder.parent / "out"
    result = run("grade-all", "--assignment", SLUG, folder, "--out", out, "--roster", roster, "--jobs", "2",
                 "--timeout", "2")
    assert result.returncode == 0, result.stderr
    result = run("report", out)
    assert result.returncode == 0, result.stderr
    return out


def test_mistakes_are_ranked_by_students_with_an_example(graded):
    rows = list(csv.DictReader(open(graded / "report.csv")))
    first = rows[0]
    assert (first["mistake"], first["exercise"], first["students"], first["who"]) == \
        ("eps_outside", "batchnorm_forward", "2", "ben cat")
    assert "sqrt(var + eps)" in first["example"]
    named = [r["named"] == "True" for r in rows]
    assert named == sorted(named, reverse=True)  # named mistakes before the generic kinds
    assert any(r["mistake"] == "timeout" and r["who"] == "dan" for r in rows)


def test_the_page_is_offline_and_says_who_needs_attention(graded):
    page = (graded / "report.html").read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert 'src="data:image/png;base64,' in page
    attention = page.split("Students who need attention")[1]
    assert "dan" in attention and "timed out in batchnorm_forward" in attention
    assert "eve" in attention and "on the roster, no submission found" in attention
    assert "ann" not in attention


def test_a_folder_without_grades_is_a_usage_error(tmp_path):
    result = run("report", tmp_path)
    assert result.returncode == 2 and "run grade-all" in result.stderr and len(result.stderr.splitlines()) == 1
