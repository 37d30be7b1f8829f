"""The class report: what an instructor reads before the next lecture.

    python -m autograder report OUTDIR

Reads what ``grade-all`` wrote into ``OUTDIR`` (``grades.csv``, ``mistakes.csv`` and each
student's ``results.json``) and writes, next to them, ``report.html`` (one offline page: no
script, no link outside it, the plots inlined) and ``report.csv`` (the mistakes ranked). A
pipeline of small steps: :func:`read_class`, :func:`rank_mistakes`, :func:`needs_attention`,
:func:`score_plots`, :func:`render_html`.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .identify import assignments

# Tags that say how a test failed rather than which mistake was made.
GENERIC = {"wrong_value", "wrong_shape", "wrong_type", "not_finite", "exception", "crash", "timeout", "protocol",
           "missing", "load", "unreadable_output", "failed", "known_mistake", "calls_failing_exercise",
           "not_implemented"}


class ReportError(Exception):
    """The folder holds no graded class; the message says what is missing."""


@dataclass
class GradedClass:
    assignment: str
    exercises: list[str]
    grades: list[dict]                       # the rows of grades.csv
    results: dict[str, dict] = field(default_factory=dict)   # student -> results.json


@dataclass
class RankedMistake:
    mistake: str
    exercise: str
    students: list[str]
    tests: int
    example: str


def read_class(out: Path) -> GradedClass:
    """grades.csv and every student's results.json of a grade-all output folder."""
    path = Path(out) / "grades.csv"
    if not path.is_file():
        raise ReportError(f"{path} does not exist: run grade-all --out {out} first")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        grades = list(reader)
        columns = reader.fieldnames or []
    if not grades:
        raise ReportError(f"{path} has no student")
    exercises = [c for c in columns if c not in ("student", "assignment", "score", "max_score", "reason")]
    klass = GradedClass(grades[0]["assignment"], exercises, grades)
    for row in grades:
        results = Path(out) / row["student"] / "results.json"
        if results.is_file():
            klass.results[row["student"]] = json.loads(results.read_text())
    return klass


def _failed(klass: GradedClass):
    for student, result in sorted(klass.results.items()):
        for test in result.get("tests", []):
            if test.get("status") == "failed":
                yield student, test


def rank_mistakes(klass: GradedClass) -> list[RankedMistake]:
    """Each (mistake, exercise) with the students who made it, most students first; named
    mistakes before the generic kinds of failure."""
    students, tests, example = defaultdict(set), Counter(), {}
    for student, test in _failed(klass):
        key = (test.get("mistake") or "failed", test["exercise"])
        students[key].add(student)
        tests[key] += 1
        example.setdefault(key, test.get("output", "").split("\n")[0])
    ranked = [RankedMistake(m, e, sorted(students[(m, e)]), tests[(m, e)], example[(m, e)]) for m, e in students]
    return sorted(ranked, key=lambda r: (r.mistake in GENERIC, -len(r.students), r.exercise, r.mistake))


def needs_attention(klass: GradedClass) -> list[tuple[str, str]]:
    """``(student, why)``: a score of 0, work that could not be graded, or a time-out."""
    out = []
    for row in klass.grades:
        student, why = row["student"], []
        if row.get("reason"):
            why.append(row["reason"])
        elif float(row["score"]) == 0:
            why.append("scored 0")
        timeouts = sorted({t["exercise"] for s, t in _failed(klass) if s == student and t.get("mistake") == "timeout"})
        if timeouts:
            why.append(f"timed out in {', '.join(timeouts)}")
        if why:
            out.append((student, "; ".join(why)))
    return out


def score_plots(klass: GradedClass) -> str:
    """A PNG (base64) of the score distribution of each exercise and of the total."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    columns = [*klass.exercises, "score"]
    fig, axes = plt.subplots(1, len(columns), figsize=(2.6 * len(columns), 2.4), squeeze=False)
    for ax, column in zip(axes[0], columns):
        values = [float(row[column] or 0) for row in klass.grades]
        ax.hist(values, bins=min(10, max(3, len(set(values)))), color="#4472c4" if column != "score" else "#2e7d32")
        ax.set_title("total" if column == "score" else column, fontsize=9)
        ax.set_xlabel("points", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("students", fontsize=8)
    for ax in axes[0]:
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(klass: GradedClass, ranked: list[RankedMistake], attention: list[tuple[str, str]], plot: str) -> str:
    scores = sorted(float(row["score"]) for row in klass.grades)
    top = max(float(row["max_score"]) for row in klass.grades)
    median = scores[len(scores) // 2] if len(scores) % 2 else (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    named = [r for r in ranked if r.mistake not in GENERIC]
    generic = [r for r in ranked if r.mistake in GENERIC]

    def rows(items):
        return [[r.mistake, r.exercise, len(r.students), r.tests, r.example] for r in items]

    title = f"Class report: {klass.assignment}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
table {{ border-collapse: collapse; width: 100%; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }} img {{ max-width: 100%; }} .muted {{ color: #666; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(klass.grades)} students; median {median:g} of {top:g} points, mean {sum(scores) / len(scores):.1f};
{sum(1 for s in scores if s == top)} with full marks.</p>
<h2>Scores</h2>
<img alt="Histograms of the points per exercise and in total" src="data:image/png;base64,{plot}">
<h2>Mistakes, by how many students made them</h2>
{_table(["mistake", "exercise", "students", "tests", "an example of the feedback"], rows(named))
 if named else '<p class="muted">No named mistake.</p>'}
<h3>Other failures</h3>
<p class="muted">How tests failed where no known mistake matched (a wrong value, a crash, a time-out,
an unfinished exercise, a function that calls a failing one).</p>
{_table(["kind", "exercise", "students", "tests", "an example of the feedback"], rows(generic))
 if generic else '<p class="muted">None.</p>'}
<h2>Students who need attention</h2>
{_table(["student", "why"], [list(a) for a in attention]) if attention else '<p class="muted">Nobody.</p>'}
</body></html>
"""


def write_report(out: Path) -> tuple[Path, Path]:
    """``report.html`` and ``report.csv`` in the grade-all output folder ``out``."""
    klass = read_class(out)
    if klass.assignment not in assignments():
        raise ReportError(f"{out / 'grades.csv'} is of an unknown assignment {klass.assignment!r}")
    ranked = rank_mistakes(klass)
    page = Path(out) / "report.html"
    page.write_text(render_html(klass, ranked, needs_attention(klass), score_plots(klass)))
    table = Path(out) / "report.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["mistake", "exercise", "named", "students", "tests", "who", "example"])
        for r in ranked:
            writer.writerow([r.mistake, r.exercise, r.mistake not in GENERIC, len(r.students), r.tests,
                             " ".join(r.students), r.example])
    return page, table
