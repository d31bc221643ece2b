"""Shared test configuration: hypothesis profiles (numpy-style) and seeded generators."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# "ci": deterministic (derandomized), modest example counts, no deadline (2-core CI machine).
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=25,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# "dev": random exploration while developing.
settings.register_profile("dev", max_examples=25, deadline=None)
# "thorough": many examples, for `make test-slow`.
settings.register_profile(
    "thorough",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded generator for each test."""
    return np.random.default_rng(20241029)


@pytest.fixture
def one_torch_thread():
    """Run the test with one torch thread (steady on a shared 2-core machine, and the same
    numbers as processes launched with OMP_NUM_THREADS=1); torch is imported only here, so the
    theory tests never import it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
