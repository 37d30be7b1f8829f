"""Gradescope: the ``autograder.zip`` of an assignment, and what runs inside it.

    python -m autograder gradescope --assignment SLUG [--out DIR]      # make gradescope ASSIGNMENT=SLUG

Gradescope unpacks the zip into ``/autograder/source``, runs ``setup.sh`` once when it builds
the image, and ``run_autograder`` for every submission: the student's files are in
``/autograder/submission``, the result goes to ``/autograder/results/results.json``. The zip
holds the grader (``autograder/``), the reference modules the suite imports, the chapter
(to recognise its own cells in a submitted notebook) and the grader's pinned requirements.
``run_autograder`` grades with :func:`run` the same way ``python -m autograder grade`` does, so
the scores are the same. ``AUTOGRADER_ROOT`` and ``AUTOGRADER_PYTHON`` let a test run it
under another root.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What the grader imports, pinned as in constraints.txt.
GRADER_PACKAGES = ("numpy", "torch", "pytest", "hypothesis", "jupytext", "nbformat", "matplotlib", "tqdm")
_SOLUTION_IMPORT = re.compile(r"^\s*(?:from\s+solutions\s+import\s+(\w+)|from\s+solutions\.(\w+)\s+import)", re.M)

SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, when it builds the image.
set -euo pipefail
apt-get update -qq
apt-get install -y -qq python3 python3-venv bubblewrap
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --quiet -r /autograder/source/requirements.txt
"""

RUN = """#!/usr/bin/env bash
# Gradescope runs this for every submission.
set -euo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}}"
cd "$ROOT/source"
exec "$PYTHON" -m autograder.gradescope run {slug} "$ROOT"
"""


def solution_modules(slug: str) -> list[str]:
    """The reference modules the suite of ``slug`` imports, and the chapter's own."""
    names = {slug}
    for path in (ROOT / "autograder" / "suites" / slug).glob("*.py"):
        for match in _SOLUTION_IMPORT.finditer(path.read_text()):
            names.add(match.group(1) or match.group(2))
    chapter = ROOT / "chapters" / f"{slug}.md"
    if chapter.is_file():
        for match in _SOLUTION_IMPORT.finditer(chapter.read_text()):
            names.add(match.group(1) or match.group(2))
    return sorted(n for n in names if (ROOT / "solutions" / f"{n}.py").is_file())


def pinned_requirements(packages=GRADER_PACKAGES) -> str:
    """``packages`` pinned to the versions of constraints.txt, one per line."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.strip().partition("==")
        if name.lower() in packages and version:
            pins[name.lower()] = f"{name}=={version}"
    missing = [p for p in packages if p not in pins]
    if missing:
        raise RuntimeError(f"constraints.txt pins no version of {', '.join(missing)}")
    return "\n".join(pins[p] for p in packages) + "\n"


def build(slug: str, out: Path) -> Path:
    """``out/autograder.zip`` for assignment ``slug``."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / "autograder.zip"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        def add(path: Path, name: str, mode: int = 0o644):
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes() if isinstance(path, Path) else path)

        package = ROOT / "autograder"
        for path in sorted(package.rglob("*")):
            relative = path.relative_to(package)
            if path.is_dir() or ignore(str(path.parent), [path.name]):
                continue
            if relative.parts[0] == "suites" and len(relative.parts) > 2 and relative.parts[1] != slug:
                continue  # other assignments' suites
            add(path, f"autograder/{relative}")
        add(ROOT / "solutions" / "__init__.py", "solutions/__init__.py")
        for module in solution_modules(slug):
            add(ROOT / "solutions" / f"{module}.py", f"solutions/{module}.py")
        chapter = ROOT / "chapters" / f"{slug}.md"
        if chapter.is_file():
            add(chapter, f"chapters/{slug}.md")
        add(pinned_requirements().encode(), "requirements.txt")
        add(SETUP.encode(), "setup.sh", 0o755)
        add(RUN.format(slug=slug).encode(), "run_autograder", 0o755)
    return target


def find_submission(folder: Path, slug: str) -> Path | None:
    """The file to grade among what the student uploaded (a notebook first, the slug's name first)."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix in (".ipynb", ".py")
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    files.sort(key=lambda p: (p.suffix != ".ipynb", p.stem != slug, len(p.parts), p.name))
    return files[0] if files else None


def run(slug: str, root: Path) -> dict:
    """Grade ``root/submission`` into ``root/results/results.json`` (Gradescope's format)."""
    from .runner import Report, grade
    from .sandbox import unavailable_reason

    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = find_submission(root / "submission", slug)
    if path is None:
        data = Report(assignment=slug, submission="", messages=[
            "no .ipynb or .py file in the submission: upload your notebook"]).to_json()
    else:
        reason = unavailable_reason()
        report = grade(slug, path, sandboxed=not reason)
        if reason:  # Gradescope's container is then the only boundary around the student's code
            report.messages.append(f"note: graded without the sandbox ({reason})")
        data = report.to_json()
    (results / "results.json").write_text(json.dumps(data, indent=2))
    return data


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "run":
        run(argv[1], Path(argv[2]))
        return 0
    print("usage: python -m autograder.gradescope run SLUG ROOT  (run_autograder calls it)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
