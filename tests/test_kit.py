"""The student kit: installed in a fresh environment that holds only the kit and the course's
runtime dependencies, every released notebook runs top to bottom and ``check`` works; the kit
holds no line of a solution and no hidden test.

The environment is a new virtual environment (``venv --without-pip``) into which the tests
link, file by file, the installed distributions the kit's wheel requires (its
``Requires-Dist``, recursively) and what runs a notebook (``ipykernel``, ``nbclient``); then
pip installs the wheel into it with ``--no-deps --no-index``. Nothing of the project is on
its path: the notebooks run in a copy of their release folder.
"""

import email.parser
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from autograder import kit as student_kit
from autograder import notebooks as nbgen
from autograder.identify import SUITES, released
from autograder.release import release
from autograder.submission import chapter_cells
from students import complete

ROOT = nbgen.ROOT
SLUGS = released()
NOTEBOOK_RUNNER = ("ipykernel", "nbclient")  # what the student's Jupyter provides
# Lines a solution shares with the course library, each for a reason a reader can check.
SHARED_WITH_LIBRARY = {
    "self.num_batches_tracked.add_(1)": "bnlab.models.FunctionBatchNorm2d counts batches as nn.BatchNorm2d does",
}
MIN_LINE = 25  # shorter lines ("N, C, H, W = x.shape") are not a solution of anything


# ------------------------------------------------------------------------------- what it holds

def solution_lines(slug: str) -> set[str]:
    """The lines of the reference bodies of ``slug``'s exercises that its chapter does not show."""
    chapter = (ROOT / "chapters" / f"{slug}.md").read_text()
    lines = set()
    for definition in nbgen.load_definitions(slug).values():
        for line in definition.solution_text.splitlines():
            line = line.strip()
            if len(line) >= MIN_LINE and not line.startswith("#") and line not in chapter:
                lines.add(line)
    return lines


def hidden_lines(slug: str) -> set[str]:
    """The lines of ``slug``'s hidden tests that its public tests do not also hold."""
    public = (SUITES / slug / "test_public.py").read_text() + (SUITES / "conftest.py").read_text()
    lines = set()
    for line in (SUITES / slug / "test_hidden.py").read_text().splitlines():
        line = line.strip()
        if len(line) >= MIN_LINE and not line.startswith("#") and line not in public:
            lines.add(line)
    return lines


def leaks(files: dict[str, str]) -> list[str]:
    """What of the solutions and hidden tests ``{path: text}`` holds, one line per finding."""
    found = [f"{path}: a file of the instructor's" for path in files
             if Path(path).name == "test_hidden.py" or path.startswith(("solutions/", "autograder/mistakes/"))]
    for slug in SLUGS:
        for kind, lines in (("solution", solution_lines(slug)), ("hidden test", hidden_lines(slug))):
            for line in sorted(lines - set(SHARED_WITH_LIBRARY)):
                found += [f"{path}: {kind} line of {slug}: {line}" for path, text in files.items() if line in text]
    return found


def wheel_files(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(name).decode("utf-8", errors="replace") for name in archive.namelist()}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """``make release`` into a temporary course: the kit, then every chapter's release."""
    course = tmp_path_factory.mktemp("course")
    release(SLUGS, course=course)
    return course


@pytest.fixture(scope="module")
def wheel(course):
    (path,) = (course / "kit").glob("*.whl")
    return path


def test_the_kit_holds_no_solution_and_no_hidden_test(wheel):
    files = wheel_files(wheel)
    assert leaks(files) == []
    names = set(files)
    for slug in SLUGS:
        assert f"autograder/suites/{slug}/test_public.py" in names
        assert f"autograder/suites/{slug}/chapter_cells.json" in names
    assert not any(name.startswith(("solutions/", "chapters/", "autograder/mistakes/")) for name in names)
    assert not any(Path(name).stem in student_kit.INSTRUCTOR_ONLY for name in names if name.startswith("autograder/"))


def test_a_leak_is_found():
    """The scan finds a reference module, a copied solution body and a hidden test."""
    slug = "ch02_bn_forward"
    reference = (ROOT / "solutions" / f"{slug}.py").read_text()
    body = next(iter(nbgen.load_definitions(slug).values())).solution_text
    hidden = (SUITES / slug / "test_hidden.py").read_text()
    assert leaks({"solutions/ch02_bn_forward.py": reference})
    assert any("solution line" in f for f in leaks({"bnlab/helpers.py": body}))
    assert any("hidden test line" in f for f in leaks({"autograder/suites/ch02_bn_forward/extra.py": hidden}))
    assert not leaks({"bnlab/ok.py": "import numpy as np\n"})


def test_every_grader_module_is_placed_in_or_out_of_the_kit():
    """A new module of the grader is a decision: the kit's allow-list or the instructor's."""
    package = ROOT / "autograder"
    present = {p.stem for p in package.glob("*.py")} | {p.name for p in package.iterdir()
                                                         if p.is_dir() and (p / "__init__.py").is_file()}
    placed = set(student_kit.GRADER_MODULES) | set(student_kit.GRADER_PACKAGES) | set(student_kit.INSTRUCTOR_ONLY)
    assert present == placed


def test_each_release_carries_the_kit_and_says_how_to_install_it(course, wheel):
    for slug in SLUGS:
        folder = course / "release" / slug
        assert sorted(p.name for p in folder.glob("*.whl")) == [wheel.name]
        nb = nbformat.read(folder / f"{slug}.ipynb", as_version=4)
        assert f"pip install {wheel.name}" in nb.cells[1].source
        assert f"python -m autograder check {slug}.ipynb" in nb.cells[1].source


def test_the_same_kit_builds_the_same_wheel(tmp_path, wheel):
    again = student_kit.build(tmp_path)
    assert again.name == wheel.name and again.read_bytes() == wheel.read_bytes()


# ------------------------------------------------------------------------------- a fresh environment

def requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = email.parser.Parser().parsestr(archive.read(name).decode())
    return message.get_all("Requires-Dist") or []


def closure(names) -> list[metadata.Distribution]:
    """The installed distributions ``names`` need, themselves included (extras left out)."""
    seen, queue, found = set(), [Requirement(n) for n in names], []
    while queue:
        requirement = queue.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(requirement.name)
        if key in seen:
            continue
        seen.add(key)
        distribution = metadata.distribution(requirement.name)
        found.append(distribution)
        queue += [Requirement(r) for r in distribution.requires or []]
    return found


def link_distribution(distribution: metadata.Distribution, site: Path) -> None:
    """Put the files of an installed distribution into ``site`` (hard links where possible)."""
    for file in distribution.files or []:
        if str(file).startswith(".."):  # scripts and data outside site-packages
            continue
        source, target = Path(distribution.locate_file(file)), site / file
        if not source.is_file() or target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "JUPYTER"))}
    return dict(env, PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1", MPLBACKEND="Agg")


@pytest.fixture(scope="module")
def kit_python(wheel, tmp_path_factory):
    """The interpreter of a fresh environment with the kit and its dependencies alone."""
    env_dir = tmp_path_factory.mktemp("kit-env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, env=clean_env()).stdout.strip())
    dependencies = [str(Requirement(r)).split(";")[0] for r in requirements(wheel)] + list(NOTEBOOK_RUNNER)
    for distribution in closure(dependencies):
        link_distribution(distribution, site)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, env=clean_env())
    return python


def run_kit(python: Path, *args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_the_environment_holds_the_kit_and_not_the_course(kit_python, tmp_path):
    probe = ("import importlib.util, json, autograder, bnlab\n"
             "print(json.dumps({'autograder': autograder.__file__, 'bnlab': bnlab.__file__,\n"
             "    'solutions': importlib.util.find_spec('solutions') is not None,\n"
             "    'nbgrader': importlib.util.find_spec('nbgrader') is not None}))")
    found = json.loads(run_kit(kit_python, "-c", probe, cwd=tmp_path).stdout)
    prefix = str(kit_python.parent.parent)
    assert found["autograder"].startswith(prefix) and found["bnlab"].startswith(prefix)
    assert not found["solutions"] and not found["nbgrader"]
    # check recognizes the chapter's own cells in a notebook as the grader does (from the list the kit ships)
    cells = run_kit(kit_python, "-c", "import json; from autograder.submission import chapter_cells; "
                    f"print(json.dumps({{s: sorted(chapter_cells(s)) for s in {SLUGS!r}}}))", cwd=tmp_path)
    assert json.loads(cells.stdout) == {slug: sorted(chapter_cells(slug)) for slug in SLUGS}
    check = subprocess.run([sys.executable, "-m", "pip", "--python", str(kit_python), "check"],
                           capture_output=True, text=True, env=clean_env())
    assert check.returncode == 0, check.stdout + check.stderr   # the kit's requirements are all there


def released_copy(course: Path, slug: str, folder: Path, filled: bool) -> Path:
    """A copy of ``slug``'s release folder, the notebook filled in with the reference if ``filled``."""
    shutil.copytree(course / "release" / slug, folder)
    path = folder / f"{slug}.ipynb"
    if filled:
        source = nbformat.read(course / "source" / slug / f"{slug}.ipynb", as_version=4)
        nbformat.write(complete(nbformat.read(path, as_version=4), source), path)
    return path


def test_check_runs_the_public_checks_from_the_kit(kit_python, course, tmp_path):
    slug = "ch02_bn_forward"
    done = released_copy(course, slug, tmp_path / "done", filled=True)
    result = run_kit(kit_python, "-m", "autograder", "check", done.name, cwd=done.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in nbgen.load_definitions(slug):
        assert re.search(rf"^{name}\s+ok\b", result.stdout, re.M), result.stdout
    stub = released_copy(course, slug, tmp_path / "stub", filled=False)
    result = run_kit(kit_python, "-m", "autograder", "check", stub.name, cwd=stub.parent)
    assert result.returncode == 1 and "not implemented yet" in result.stdout, result.stdout + result.stderr
    result = run_kit(kit_python, "-m", "autograder", "grade", "--assignment", slug, done.name, cwd=done.parent)
    assert result.returncode == 2 and "this is the student kit" in result.stderr


EXECUTE = """\
import sys
import nbformat
from nbclient import NotebookClient

path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
nbformat.write(nb, path)
"""


@pytest.mark.parametrize("slug", SLUGS)
def test_a_completed_release_runs_top_to_bottom_on_the_kit(kit_python, course, tmp_path, slug):
    """A student who did every exercise runs the whole released notebook: the chapter's code,
    its plots and experiments, and every graded cell's public checks, which pass."""
    path = released_copy(course, slug, tmp_path / slug, filled=True)
    result = run_kit(kit_python, "-c", EXECUTE, path.name, cwd=path.parent, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    nb = nbformat.read(path, as_version=4)
    checks = [c for c in nb.cells if nbgen.nbgrader_meta(c).get("grade") and c.cell_type == "code"]
    assert checks
    for cell in checks:
        text = "".join(o.get("text", "") for o in cell.outputs)
        assert "public checks passed" in text, (nbgen.nbgrader_meta(cell)["grade_id"], text)
