"""The student kit: the public checks with their feedback and harness, and the course library.

    python -m autograder.kit [--out DIR]          # make release puts it beside each released notebook

Students install the wheel (``pip install bn_course_kit-<version>-py3-none-any.whl``); the
released notebooks then run, and ``python -m autograder check NOTEBOOK`` works, without the
instructor's repository. The kit is built from an allow-list:

- the grader modules that run public checks (:data:`GRADER_MODULES`, :data:`GRADER_PACKAGES`);
- each released assignment's ``test_public.py``, and its chapter's own code cells
  (``chapter_cells.json``, so that ``check`` recognizes them in a notebook as the grader does);
- ``bnlab``, which the chapters import, with the recorded results they plot.

Never the reference solutions, the hidden tests, the mistake fingerprints (which call the
reference) or the instructor's tools (:data:`INSTRUCTOR_ONLY`); ``tests/test_kit.py`` checks
that the wheel holds no line of a solution and no hidden test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .gradescope import ROOT, pinned_requirements
from .identify import CHAPTER_CELLS, CHAPTERS, SUITES, released
from .submission import released_chapter_cells

DIST = "bn-course-kit"
WHEEL_PREFIX = DIST.replace("-", "_") + "-"

# The modules of autograder/ the public checks need: the command line (``check``), the harness
# that runs a suite on a notebook's code (in the kernel or in the sandbox), and the feedback.
GRADER_MODULES = ("__init__", "__main__", "classlist", "cli", "feedback", "identify", "inline", "launcher",
                  "protocol", "runner", "sandbox", "submission", "suitekit", "worker", "zygote")
GRADER_PACKAGES = ("messages", "ops")
# What stays with the instructor: the fingerprints of known mistakes run the reference; the others
# release, grade and report.
INSTRUCTOR_ONLY = ("gradebook", "gradescope", "kit", "mistakes", "notebooks", "release", "report")
# What the kit imports (the chapters also need a Jupyter kernel, which the student has).
RUNTIME = ("numpy", "torch", "matplotlib", "pytest", "tqdm")
RESULTS = ROOT / "results"

PYPROJECT = """\
[build-system]
requires = ["setuptools>=70.1"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "{version}"
description = "Batch Normalization course: the public checks of the exercises and the course library"
readme = "README.md"
requires-python = ">=3.10"
dependencies = {dependencies}

[tool.setuptools]
packages = {packages}
include-package-data = false

[tool.setuptools.package-data]
autograder = ["suites/pytest.ini", "suites/conftest.py", "suites/*/test_public.py", "suites/*/{chapter_cells}"]
bnlab = ["results/*.json"]
"""

README = """\
# The Batch Normalization course kit

What a student needs beside the released notebooks: the public checks of every exercise (the
checks the notebooks' graded cells run) and `bnlab`, the course library the chapters import.

    pip install {wheel}
    python -m autograder check ch02_bn_forward.ipynb    # every public check of a notebook at once

Assignments: {slugs}.
"""


def _python_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.py"))


def stage(dest: Path, slugs: list[str]) -> dict[str, bytes]:
    """Write the kit's package files for assignments ``slugs`` under ``dest``; return
    ``{relative path: content}``."""
    files: dict[str, bytes] = {}
    package = ROOT / "autograder"
    for name in GRADER_MODULES:
        files[f"autograder/{name}.py"] = (package / f"{name}.py").read_bytes()
    for name in GRADER_PACKAGES:
        for path in _python_files(package / name):
            files[f"autograder/{name}/{path.name}"] = path.read_bytes()
    for name in ("conftest.py", "pytest.ini"):
        files[f"autograder/suites/{name}"] = (SUITES / name).read_bytes()
    for slug in slugs:
        files[f"autograder/suites/{slug}/test_public.py"] = (SUITES / slug / "test_public.py").read_bytes()
        cells = released_chapter_cells(CHAPTERS / f"{slug}.md")
        files[f"autograder/suites/{slug}/{CHAPTER_CELLS}"] = (json.dumps(cells, indent=0) + "\n").encode()
    for path in _python_files(ROOT / "bnlab"):
        files[f"bnlab/{path.name}"] = path.read_bytes()
    for path in sorted(RESULTS.glob("*.json")):
        files[f"bnlab/results/{path.name}"] = path.read_bytes()
    for relative, content in files.items():
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return files


def version(files: dict[str, bytes]) -> str:
    """``1.0+<digest>``: the same content, the same version (and a changed kit, a new one)."""
    digest = hashlib.sha256()
    for relative in sorted(files):
        digest.update(relative.encode() + b"\0" + hashlib.sha256(files[relative]).digest())
    return f"1.0+{digest.hexdigest()[:12]}"


def build(out: Path, slugs: list[str] | None = None) -> Path:
    """Build the kit's wheel into ``out`` (replacing an older kit there); return its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    slugs = released() if slugs is None else slugs
    with tempfile.TemporaryDirectory(prefix="bn-kit-") as tmp:
        staging = Path(tmp) / "kit"
        files = stage(staging, slugs)
        packages = sorted({str(Path(r).parent).replace("/", ".") for r in files if r.endswith(".py")})
        dependencies = pinned_requirements(RUNTIME).split()
        kit_version = version(files)
        wheel = f"{WHEEL_PREFIX}{kit_version}-py3-none-any.whl"
        (staging / "pyproject.toml").write_text(PYPROJECT.format(
            dist=DIST, version=kit_version, dependencies=json.dumps(dependencies), packages=json.dumps(packages),
            chapter_cells=CHAPTER_CELLS))
        (staging / "README.md").write_text(README.format(wheel=wheel, slugs=", ".join(slugs)))
        env = dict(os.environ, SOURCE_DATE_EPOCH="315532800")  # 1980-01-01: the same bytes for the same kit
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps", "--no-index",
             "--wheel-dir", tmp, str(staging)], capture_output=True, text=True, env=env, cwd=tmp)
        built = Path(tmp) / wheel
        if result.returncode != 0 or not built.is_file():
            raise RuntimeError(f"building the student kit failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        for old in out.glob(f"{WHEEL_PREFIX}*.whl"):
            old.unlink()
        return Path(shutil.copy2(built, out / wheel))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.kit", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "kit", help="where to write the wheel")
    args = parser.parse_args(argv)
    try:
        path = build(args.out)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"student kit: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
