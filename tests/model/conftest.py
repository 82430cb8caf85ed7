"""Tiny random Hugging Face models of every family in the architecture table, saved and loaded from disk."""

from __future__ import annotations

import pytest

from circuits import model as M
from circuits.model.tiny import FAMILIES, save_tiny_hf


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    """``{family: directory}``: each family built from its config and saved with ``save_pretrained``."""
    root = tmp_path_factory.mktemp("families")
    return {f: save_tiny_hf(f, root / f, seed=0) for f in FAMILIES}


@pytest.fixture(scope="session")
def family_models(family_dirs):
    """``{family: HookedLM}`` loaded from the saved directories (the ``--model DIR`` path)."""
    return {f: M.load_model(d) for f, d in family_dirs.items()}
