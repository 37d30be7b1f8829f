"""Checks that run inside a notebook, on the code of that notebook.

A chapter's graded cell reads::

    from autograder.inline import check
    check("ch02_bn_forward", "batchnorm_forward")
    ### BEGIN HIDDEN TESTS
    from autograder.inline import grade
    grade("ch02_bn_forward", "batchnorm_forward")
    ### END HIDDEN TESTS

``check`` runs the exercise's public checks (the same tests as ``python -m autograder
check``) on the functions defined in the notebook and prints the same feedback; it raises
when one fails, so the cell turns red. Under nbgrader's autograde it only prints, and the
hidden part, ``grade``, returns the points earned by the exercise in the full suite (public
and hidden tests, as ``grade-all`` counts them): nbgrader takes that number as the cell's
partial credit. Each call of the student's code has the grader's time limit (:data:`LIMITS`):
a looping function costs seconds, once, since one that timed out is not called again.
"""

from __future__ import annotations

import os
import sys

from .runner import LocalStudent, TestResult, grouped, mark_unimplemented, run_suite
from .sandbox import Limits


# Each call of the student's code in the notebook has the grader's time limit per call.
LIMITS = Limits()


class _Entry:
    def __init__(self, namespace):
        self.student = LocalStudent(namespace, LIMITS)

    def open(self):
        return self.student

    def close(self):
        pass


def _run(slug: str, exercise: str, namespace: dict, public_only: bool) -> list[TestResult]:
    return mark_unimplemented(
        run_suite(slug, {"notebook": _Entry(namespace)}, public_only=public_only, exercise=exercise)["notebook"])


def _caller_namespace() -> dict:
    return sys._getframe(2).f_globals


def check(slug: str, exercise: str, namespace: dict | None = None) -> bool:
    """Run the public checks of ``exercise`` on this notebook's code and print the feedback."""
    results = _run(slug, exercise, namespace if namespace is not None else _caller_namespace(), public_only=True)
    failed = [r for r in results if r.status == "failed"]
    if not failed:
        print(f"{exercise}: all {len(results)} public checks passed.")
        return True
    lines = [f"{exercise}: {len(failed)} of {len(results)} public checks failed."]
    for group in grouped(failed):
        cases = f" ({len(group)} checks: {', '.join(r.name for r in group)})" if len(group) > 1 else ""
        lines.append(f"- {group[0].output}{cases}")
    message = "\n".join(lines)
    if os.environ.get("NBGRADER_EXECUTION") == "autograde":
        print(message)
        return False
    raise AssertionError(message)


def grade(slug: str, exercise: str, namespace: dict | None = None) -> float:
    """Points earned by ``exercise`` in the full suite (nbgrader's partial credit)."""
    results = _run(slug, exercise, namespace if namespace is not None else _caller_namespace(), public_only=False)
    for group in grouped([r for r in results if r.status == "failed"]):
        first = group[0].output.splitlines()[0] if group[0].output else "failed"
        print(f"- {', '.join(r.name for r in group)}: {first}")
    return float(sum(r.score for r in results))
