"""Benchmark: grade a generated class with grade-all and with nbgrader autograde.

    python bench/grading.py [--students 100] [--jobs 2] [--nbgrader-students 10] [SLUG ...]

For each assignment, releases the notebook with nbgrader, writes a class of filled-in
notebooks (half correct; the rest with an unfinished exercise, a wrong one, or broken:
a syntax error and a missing exercise), grades the whole class with ``grade-all``, and
grades the first ``--nbgrader-students`` of it with ``nbgrader autograde`` (which runs a
Jupyter kernel per notebook, executing the whole chapter). Prints the wall times, the
time per student and the ratio; nbgrader's time for the whole class is extrapolated
from its measured per-student time, and the table says so. Last, the whole course in one
``grade-all`` run (every assignment, one pool of workers), as an instructor grades a term.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nbformat  # noqa: E402

from autograder import notebooks as nbgen  # noqa: E402
from autograder.cli import grade_all, grade_course  # noqa: E402
from autograder.release import nbgrader, release  # noqa: E402
from autograder.identify import released  # noqa: E402

KINDS = ["correct", "correct", "correct", "correct", "correct", "unfinished", "unfinished", "wrong", "wrong", "broken"]

WRONG = """

_bench_original = {name}


def {name}(*args, **kwargs):
    def nudge(value):
        if isinstance(value, tuple):
            return tuple(nudge(v) for v in value)
        try:
            return value * 1.01
        except TypeError:
            return value
    return nudge(_bench_original(*args, **kwargs))
"""


def student_notebook(release_nb, slug: str, kind: str, index: int):
    """A filled-in copy of the released notebook."""
    nb = copy.deepcopy(release_nb)
    definitions = {}
    for cell in nbgen.read_chapter(ROOT / "chapters" / f"{slug}.md").cells:
        if nbgen.is_exercise(cell):
            for module, name in nbgen.exercise_imports(cell):
                definitions[name] = nbgen.load_definitions(module)[name]
    names = [n for n in definitions if n in nbgen.load_definitions(slug)]
    target = names[index % len(names)]
    functions = [n for n in names if not definitions[n].render("student").startswith("class")]
    for cell in nb.cells:
        meta = nbgen.nbgrader_meta(cell)
        if not meta.get("solution"):
            continue
        cell_names = [n for n in definitions if f"def {n}(" in cell.source or f"class {n}(" in cell.source]
        if not cell_names:
            continue
        sources = []
        for name in cell_names:
            if kind == "unfinished" and name == target:
                sources.append(definitions[name].render("student"))
            elif kind == "broken" and name == target:
                sources.append(f"# {name}: not done")
            else:
                sources.append(definitions[name].render("instructor"))
            if kind == "wrong" and name == (functions[index % len(functions)] if functions else None):
                sources.append(WRONG.format(name=name))
        cell.source = "\n\n\n".join(sources)
    if kind == "broken":
        nb.cells.insert(1, nbformat.v4.new_code_cell("def half_written(:\n    pass"))
    return nb


def make_class(course: Path, slug: str, students: int) -> None:
    release_nb = nbformat.read(course / "release" / slug / f"{slug}.ipynb", as_version=4)
    for index in range(students):
        nb = student_notebook(release_nb, slug, KINDS[index % len(KINDS)], index)
        target = course / "submitted" / f"s{index:03d}" / slug / f"{slug}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("slugs", nargs="*")
    parser.add_argument("--students", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--nbgrader-students", type=int, default=10, choices=(0, 10),
                        help="students graded by nbgrader autograde too (0 skips it; 10 is s000-s009)")
    parser.add_argument("--nbgrader-all", action="store_true", help="nbgrader autograde the whole class")
    parser.add_argument("--keep", type=Path, help="keep the generated course in this directory")
    args = parser.parse_args(argv)
    slugs = args.slugs or released()
    course = args.keep or Path(tempfile.mkdtemp(prefix="bngrade-bench-"))
    course.mkdir(parents=True, exist_ok=True)
    rows = []
    release(slugs, course=course)
    for slug in slugs:
        make_class(course, slug, args.students)
    total_ours = 0.0
    for slug in slugs:
        start = time.perf_counter()
        results = grade_all(slug, course, course / "grades" / slug, jobs=args.jobs, timeout=10)
        ours = time.perf_counter() - start
        total_ours += ours
        mean = sum(r.score for _, r in results) / len(results)
        row = {"assignment": slug, "students": len(results), "grade_all_s": round(ours, 2),
               "grade_all_ms_per_student": round(1000 * ours / len(results), 1),
               "mean_score": round(mean, 2), "max_score": results[0][1].max_score}
        k = args.students if args.nbgrader_all else min(args.nbgrader_students, args.students)
        if k:
            pattern = "*" if k == args.students else "s00?"  # nbgrader selects students by glob
            start = time.perf_counter()
            result = nbgrader("autograde", slug, "--force", f"--student={pattern}", course=course)
            theirs = time.perf_counter() - start
            if result.returncode != 0:
                print(f"warning: nbgrader autograde {slug} exited {result.returncode}", file=sys.stderr)
            per = theirs / k
            row.update(nbgrader_students=k, nbgrader_s=round(theirs, 2), nbgrader_ms_per_student=round(1000 * per, 1),
                       ratio=round(per / (ours / len(results)), 1))
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\ngrade-all --jobs {args.jobs}: {len(slugs)} assignments x {args.students} students in {total_ours:.1f} s "
          f"(one run per assignment)")
    start = time.perf_counter()
    graded = grade_course(slugs, course, course / "grades-course", jobs=args.jobs, timeout=10)
    whole = time.perf_counter() - start
    print(json.dumps({"course": slugs, "students": args.students, "grade_all_course_s": round(whole, 2),
                      "submissions": sum(len(r) for r in graded.values())}), flush=True)
    print(f"grade-all --assignment {','.join(slugs)} --jobs {args.jobs}: the whole course in one run (one pool of "
          f"workers) in {whole:.1f} s")
    if any("ratio" in r for r in rows):
        per_student = [r["nbgrader_ms_per_student"] / 1000 for r in rows if "ratio" in r]
        extrapolated = sum(per_student) * args.students
        print(f"nbgrader autograde (measured on {rows[0].get('nbgrader_students')} students per assignment, one kernel "
              f"per notebook): {extrapolated:.0f} s extrapolated to the class, {extrapolated / total_ours:.0f}x slower")
    print(f"course kept in {course}" if args.keep else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
