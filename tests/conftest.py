"""Shared fixtures and the hypothesis profiles.

`HYPOTHESIS_PROFILE=ci` (set by `.ci/run` through nox) runs more examples,
derandomised so a CI failure reproduces.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
