"""Shared editing fixtures: a tiny GQA model, token ids, and a planted-bias training set."""

from __future__ import annotations

import pytest
import torch

from circuits import model as M
from circuits.editing.train import TrainingData
from circuits.metrics import LogitDiff
from circuits.probing.patching import TokenGroup


@pytest.fixture(scope="module")
def model():
    return M.tiny_model(n_layers=2, n_heads=4, n_kv_heads=2, seed=3)


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(1))


def planted_pairs(seed: int, n: int) -> TokenGroup:
    """A planted bias: the corrupted prompt differs in one token, which moves the logit difference."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, 50, (n, 6), generator=g)
    corr = clean.clone()
    corr[:, 2] = (clean[:, 2] + 11) % 50
    return TokenGroup(indices=list(range(n)), clean=clean, corrupted=corr)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(9)
    return TrainingData(
        train=[planted_pairs(1, 12)],
        val=[planted_pairs(2, 6)],
        neutral_train=[torch.randint(0, 50, (16,), generator=g) for _ in range(4)],
        neutral_val=[torch.randint(0, 50, (16,), generator=g) for _ in range(2)],
        metric=LogitDiff(positive=3, negative=4),
        sha256="0" * 64,
        suite={"name": "synthetic", "split": "build"},
    )
