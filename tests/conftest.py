"""Shared fixtures: tiny random Llama-style models (no hub) and, for end-to-end tests, the real model."""

from __future__ import annotations

import pytest
import torch

from circuits.model import tiny_model


@pytest.fixture(scope="session")
def tiny():
    """A 2-layer GQA model: 4 query heads sharing 2 key/value heads."""
    return tiny_model(n_layers=2, n_heads=4, n_kv_heads=2, seed=1)


@pytest.fixture(scope="session")
def token_pairs():
    """Clean/corrupted token ids differing at position 2 (batch 3, pos 6)."""
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 50, (3, 6), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2] = (clean[:, 2] + 7) % 50
    return clean, corrupted


@pytest.fixture(scope="session")
def real_model():
    """SmolLM2-135M-Instruct (loads from the safetensors cache after the first time)."""
    from circuits.model import load_model

    return load_model("smollm2-135m")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs two workers on two cores), one torch thread per worker.

    Also in the processes a worker starts (the notebooks' Jupyter kernels, CLI subprocesses): they
    inherit ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, read when torch starts. Without it each kernel ran
    torch's default two threads beside the other worker's, oversubscribing the two cores (notebook 04
    timed out under ``make test``).
    """
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that takes the ``real_model`` fixture is marked ``real_model`` (``make test-fast`` leaves them out)."""
    for item in items:
        if "real_model" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_model)
