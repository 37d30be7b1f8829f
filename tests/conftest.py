"""Test settings: hypothesis is derandomized by default so that CI is reproducible.

Run `pytest --hypothesis-profile=explore` to search with fresh random examples.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")
