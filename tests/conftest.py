"""Test settings: hypothesis is derandomized by default so that CI is reproducible.

Run `pytest --hypothesis-profile=explore` to search with fresh random examples.
"""

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


@pytest.fixture(autouse=True, scope="module")
def single_threaded_torch():
    """Tiny tensors: torch's intra-op thread pool only adds overhead (100x on a busy machine)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_sessionstart(session):
    """The grader's tests run student code in the sandbox: without it, say so once and stop."""
    from autograder.sandbox import unavailable_reason

    reason = unavailable_reason()
    if reason:
        raise pytest.UsageError(f"the grader's tests need its sandbox: {reason}")
