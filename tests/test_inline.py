"""The checks students run inside their notebook (``autograder.inline``): what they print,
that a looping function costs seconds, and that nbgrader's partial credit comes out right."""

import time
from pathlib import Path

import numpy as np
import pytest

from autograder import inline
from autograder.runner import NOT_IMPLEMENTED

SLUG = "ch02_bn_forward"
ROOT = Path(__file__).resolve().parents[1]


def namespace(source: str) -> dict:
    space = {"np": np}
    exec(source, space)
    return space


def test_an_unfilled_exercise_says_not_implemented_once(capsys):
    space = namespace("def batchnorm_forward(x, gamma, beta, eps=1e-5):\n    raise NotImplementedError\n")
    with pytest.raises(AssertionError) as err:
        inline.check(SLUG, "batchnorm_forward", space)
    assert str(err.value).count("not implemented yet") == 1, str(err.value)
    assert NOT_IMPLEMENTED in str(err.value)


def test_a_looping_function_costs_one_time_limit_not_one_per_check(monkeypatch, capsys):
    """Every public check of the exercise calls it; after the first timeout it is not called again."""
    monkeypatch.setattr(inline, "LIMITS", inline.Limits(timeout_s=0.5))
    space = namespace("def batchnorm_forward(x, gamma, beta, eps=1e-5):\n"
                      "    while True:\n        try:\n            pass\n        except Exception:\n            pass\n")
    start = time.monotonic()
    with pytest.raises(AssertionError) as err:
        inline.check(SLUG, "batchnorm_forward", space)
    assert time.monotonic() - start < 10
    assert "no answer within 0.5 s in batchnorm_forward" in str(err.value)


def test_graded_cells_under_nbgrader_have_the_time_limit_too(monkeypatch, capsys):
    monkeypatch.setattr(inline, "LIMITS", inline.Limits(timeout_s=0.5))
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    space = namespace("def batchnorm_inference(*args, **kwargs):\n    while True:\n        pass\n")
    start = time.monotonic()
    assert inline.grade(SLUG, "batchnorm_inference", space) == 0.0
    assert time.monotonic() - start < 10
    assert "no answer within 0.5 s" in capsys.readouterr().out


def test_the_same_failure_in_several_checks_is_printed_once_with_their_names(capsys):
    source = (ROOT / "solutions" / f"{SLUG}.py").read_text().replace(
        "batch_var = x.var(axis=0, ddof=1, dtype=np.float64)", "batch_var = x.var(axis=0, dtype=np.float64)")
    space = namespace(source)
    with pytest.raises(AssertionError) as err:
        inline.check(SLUG, "update_running_stats", space)
    text = str(err.value)
    assert text.count("biased batch variance") == 1, text
    assert "3 checks:" in text
