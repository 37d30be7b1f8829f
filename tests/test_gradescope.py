"""Gradescope's autograder.zip, run in a simulated /autograder layout under a temporary root."""

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SLUG = "ch02_bn_forward"
BUGGY = (ROOT / "solutions" / f"{SLUG}.py").read_text().replace("std = np.sqrt(var + eps)", "std = np.sqrt(var) + eps")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    out = tmp_path_factory.mktemp("gradescope")
    result = subprocess.run([sys.executable, "-m", "autograder", "gradescope", "--assignment", SLUG, "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return out / "autograder.zip"


def unpack(package: Path, root: Path) -> Path:
    """The zip as Gradescope lays it out: /autograder/source, with the scripts executable."""
    source = root / "source"
    with zipfile.ZipFile(package) as zf:
        zf.extractall(source)
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if mode & stat.S_IXUSR:
                os.chmod(source / info.filename, 0o755)
    (root / "submission").mkdir()
    return source


def run_autograder(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the zip must be self-contained
    env.update(AUTOGRADER_ROOT=str(root), AUTOGRADER_PYTHON=sys.executable)
    result = subprocess.run([str(root / "source" / "run_autograder")], capture_output=True, text=True, env=env,
                            cwd="/")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads((root / "results" / "results.json").read_text())


def test_the_zip_holds_the_scripts_this_assignment_and_pinned_requirements(package):
    with zipfile.ZipFile(package) as zf:
        names = set(zf.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
        requirements = zf.read("requirements.txt").decode()
    assert {"setup.sh", "run_autograder", "requirements.txt", f"solutions/{SLUG}.py",
            f"autograder/suites/{SLUG}/test_hidden.py", f"chapters/{SLUG}.md"} <= names
    assert modes["run_autograder"] & stat.S_IXUSR and modes["setup.sh"] & stat.S_IXUSR
    assert not any(n.startswith("autograder/suites/ch0") and f"/{SLUG}/" not in n for n in names)
    assert "solutions/ch06_beyond.py" not in names and not any("__pycache__" in n for n in names)
    assert all("==" in line for line in requirements.splitlines()) and "torch==" in requirements


def test_run_autograder_gives_the_scores_of_grade(package, tmp_path):
    root = tmp_path / "autograder"
    unpack(package, root)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(BUGGY)]
    nbformat.write(nb, root / "submission" / "my work.ipynb")
    results = run_autograder(root)
    local = subprocess.run([sys.executable, "-m", "autograder", "grade", "--assignment", SLUG,
                            str(root / "submission" / "my work.ipynb"), "--format", "json"],
                           capture_output=True, text=True, cwd=ROOT)
    expected = json.loads(local.stdout)
    assert 0 < results["score"] == expected["score"] < results["max_score"]
    assert [(t["name"], t["score"], t["status"]) for t in results["tests"]] == \
        [(t["name"], t["score"], t["status"]) for t in expected["tests"]]
    assert {t["visibility"] for t in results["tests"]} == {"visible", "after_published"}


def test_an_empty_upload_gets_a_message_and_zero(package, tmp_path):
    root = tmp_path / "autograder"
    unpack(package, root)
    results = run_autograder(root)
    assert results["score"] == 0 and "no .ipynb or .py file" in results["output"]
