"""Shared by every assignment's suite: settings and helpers for generating inputs.

Inputs are drawn from generators seeded per test, so every student of a class is graded
on the same cases (and ``grade-all`` agrees with nbgrader's autograde).
"""

import re
import zlib

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A NumPy generator seeded by the test's name: same cases for every submission.

    The name is taken without the submission's parameter, so that every student of a
    class, and nbgrader's in-notebook run, draws the same cases.
    """
    name = re.sub(r"\[SUBMISSION\d+\]|-SUBMISSION\d+(?=[-\]])|(?<=\[)SUBMISSION\d+-", "", request.node.name)
    return np.random.default_rng(zlib.crc32(name.encode()))


def shape_text(*arrays) -> str:
    return ", ".join(f"{np.shape(a)} {np.asarray(a).dtype}" for a in arrays)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is much faster. The thread count and the random state are
    restored afterwards (the checks also run inside students' notebooks)."""
    import torch

    threads, state = torch.get_num_threads(), torch.get_rng_state()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_rng_state(state)


@pytest.fixture(scope="module")
def truth():
    """Results of the reference and of the known mistakes: the same for every submission."""
    return {}


@pytest.fixture(scope="module")
def cache(student, truth):
    """Results of sandbox calls shared by the tests of one submission (a fresh dict per
    submission), and under "truth" those shared by all submissions."""
    return {"truth": truth}
