"""Make the nbgrader course: source notebooks from the chapters, then the student release.

    python -m autograder.release [SLUG ...]

For each chapter (default: every chapter that has a grader suite): writes the instructor
variant to ``course/source/SLUG/SLUG.ipynb`` (full solutions between nbgrader markers,
hidden tests in the graded cells, points from the grader's suite) and runs ``nbgrader
generate_assignment SLUG``, which writes ``course/release/SLUG/SLUG.ipynb`` with stubs and
public checks only, and an empty answer cell for each thinking exercise (graded by hand).
Beside each released notebook goes the student kit (:mod:`autograder.kit`), the wheel that
students install to run the notebook and its public checks; the notebook says how.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from . import kit as student_kit
from . import notebooks as nbgen
from .identify import released
from .runner import suite_points

ROOT = nbgen.ROOT
COURSE = ROOT / "course"


# Points of a thinking exercise's answer, graded by hand in nbgrader's formgrader.
THINKING_POINTS = 2
_LABEL = re.compile(r"\{solution\}\s*(\S+)")


def answer_cells(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Each thinking exercise's ``{solution}`` block in a markdown cell of its own, an nbgrader
    manually graded answer cell (``answer_<label>``, :data:`THINKING_POINTS` points): the
    source keeps the model answer for the graders, and ``generate_assignment`` replaces it by
    "YOUR ANSWER HERE" in the release, where the student writes."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "markdown" or not nbgen.SOLUTION_BLOCK.search(cell.source):
            cells.append(cell)
            continue
        start = 0
        for match in nbgen.SOLUTION_BLOCK.finditer(cell.source):
            before = cell.source[start:match.start()].strip("\n")
            if before.strip():
                cells.append(nbformat.v4.new_markdown_cell(before))
            label = _LABEL.search(match.group(0))
            grade_id = "answer_" + re.sub(r"[^A-Za-z0-9_-]", "_", label.group(1) if label else f"{len(cells)}")
            answer = nbformat.v4.new_markdown_cell(match.group(0).strip("\n"))
            answer.metadata["nbgrader"] = {"grade": True, "solution": True, "locked": False, "task": False,
                                           "points": THINKING_POINTS, "grade_id": grade_id, "schema_version": 3}
            cells.append(answer)
            start = match.end()
        after = cell.source[start:].strip("\n")
        if after.strip():
            cells.append(nbformat.v4.new_markdown_cell(after))
    nb.cells = cells
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index}"
    return nb


SETUP_NOTE = """\
**Before you start.** This folder holds the course kit, `{wheel}`: the public checks that the
graded cells run, and `bnlab`, the course library this notebook imports. Install it once into
the Python environment of your Jupyter kernel, in a terminal (`pip install {wheel}`) or in a
cell of its own (`%pip install {wheel}`), then run the notebook from the top. To run every
public check of this notebook at once: `python -m autograder check {slug}.ipynb`."""


def source_notebook(slug: str, kit: str | None = None) -> nbformat.NotebookNode:
    """The nbgrader source notebook of ``slug``: graded cells carry the suite's points, and
    thinking exercises have answer cells (:func:`answer_cells`); after the title, how to
    install the student kit named ``kit``."""
    nb = nbgen.generate(ROOT / "chapters" / f"{slug}.md", "instructor")
    if kit:
        nb.cells.insert(1, nbformat.v4.new_markdown_cell(SETUP_NOTE.format(wheel=kit, slug=slug)))
    points = suite_points(slug)
    for cell in nb.cells:
        meta = nbgen.nbgrader_meta(cell)
        if meta.get("grade"):
            name = meta["grade_id"].removeprefix("check_")
            if name not in points:
                raise nbgen.SourceError(f"{slug}: graded cell {meta['grade_id']} has no tests in the suite")
            meta["points"] = points[name]
    return answer_cells(nb)


def nbgrader(*args: str, course: Path = COURSE, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run an nbgrader command on the course directory ``course`` (the project's
    nbgrader_config.py puts the project on the kernels' PYTHONPATH)."""
    bin_dir = str(Path(sys.executable).parent)  # nbgrader calls `alembic` from PATH
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    env.pop("PYTHONPATH", None)
    overrides = []
    if Path(course).resolve() != COURSE.resolve():
        overrides = [f"--CourseDirectory.root={course}", f"--CourseDirectory.db_url=sqlite:///{course}/gradebook.db",
                     f"--CsvExportPlugin.to={course}/grades.csv"]
    return subprocess.run([sys.executable, "-m", "nbgrader", *args, *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True)


COURSE_CONFIG = (
    "# Written by `make release`: the course's nbgrader settings live in the project's\n"
    "# nbgrader_config.py, so that nbgrader commands run from this folder use them too.\n"
    "c = get_config()  # noqa: F821\n"
    "load_subconfig({path!r})  # noqa: F821\n"
)


def release(slugs: list[str], course: Path = COURSE) -> list[Path]:
    course.mkdir(parents=True, exist_ok=True)
    if Path(course).resolve() == COURSE.resolve():
        (course / "nbgrader_config.py").write_text(COURSE_CONFIG.format(path=str(ROOT / "nbgrader_config.py")))
    released = []
    kit = student_kit.build(course / "kit")
    for slug in slugs:
        target = course / "source" / slug / f"{slug}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        for old in target.parent.glob(f"{student_kit.WHEEL_PREFIX}*.whl"):
            old.unlink()
        shutil.copy2(kit, target.parent / kit.name)  # generate_assignment copies it into the release
        nbformat.write(source_notebook(slug, kit.name), target)
        result = nbgrader("generate_assignment", slug, "--force", course=course)
        if result.returncode != 0:
            raise RuntimeError(f"nbgrader generate_assignment {slug} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        released.append(course / "release" / slug / f"{slug}.ipynb")
    return released


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.release", description=__doc__.split("\n")[0])
    parser.add_argument("slugs", nargs="*", help="chapters to release (default: all with a grader suite)")
    args = parser.parse_args(argv)
    available = released()
    slugs = args.slugs or available
    unknown = [s for s in slugs if s not in available]
    if unknown:
        print(f"error: no chapter with a grader suite named {', '.join(unknown)}; known: {', '.join(available)}",
              file=sys.stderr)
        return 2
    try:
        for path in release(slugs):
            print(f"released {path.relative_to(ROOT)}")
    except (RuntimeError, nbgen.SourceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
