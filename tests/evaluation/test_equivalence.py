"""The measure registry and the batched, memory-bounded measuring code change no number the issues did not redefine.

``fixtures/legacy_tiny_llama.json`` holds the before/after values (and every per-item measurement) of the
evaluation code before issue #31 (revision 4d86680, written by ``fixtures/legacy_values.py``) on a tiny
Llama with a head-zeroing edit. The current code must give the same values, to 1e-6 (relative for
values above 1: perplexity is ~1e5 on a random model). Redefined by #32, and so not compared: p-values
of 0/1 outcomes (exact McNemar test), reductions (against a reference), and the new measures
(``abs_bias_gap.*``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.evaluation.fixtures.legacy_values import EVALUATE, SETTINGS, tiny_and_edit

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "legacy_tiny_llama.json").read_text())


def _close(old: float, new: float) -> bool:
    return abs(new - old) <= 1e-6 * max(1.0, abs(old))


@pytest.fixture(scope="module")
def tiny_edit(tmp_path_factory):
    """The golden file was written with one thread (``OMP_NUM_THREADS=1``); so is the comparison.

    With more threads the matrix products sum in another order, which moves a logit difference by
    ~1e-6 (measured: 1.4e-6 on one gender gap with 2 threads) - float rounding, not the code.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield tiny_and_edit(tmp_path_factory.mktemp("legacy"))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow  # an end-to-end pipeline (> 10 s): make test runs it, make test-fast does not
def test_every_measure_keeps_its_before_and_after_values(tiny_edit):
    from circuits.evaluation.run import evaluate

    lm, edit = tiny_edit
    report = evaluate(lm, edit, **EVALUATE)
    for name, old in GOLDEN["measures"].items():
        m = report.get(name)
        assert _close(old["before"], m.before) and _close(old["after"], m.after), (name, old, m)
        assert m.n == old["n"]
    # Units as measured: identity-harm's metric is a log-probability difference (its old reports said "logits").
    assert report.get("bias_gap.identity-harm").unit == "nats" and GOLDEN["measures"]["bias_gap.identity-harm"]["unit"] == "logits"
    assert report.get("bias_gap.gender-occupation").unit == "logits"


def test_every_per_item_measurement_is_unchanged(tiny_edit):
    from circuits.editing import apply_edit
    from circuits.evaluation.run import measure, shipped_suites

    lm, edit = tiny_edit
    suites = shipped_suites(lm)
    for state in ("before", "after"):
        if state == "after":
            with apply_edit(lm, edit):
                m = measure(lm, suites=suites, **SETTINGS)
        else:
            m = measure(lm, suites=suites, **SETTINGS)
        for key, old in GOLDEN["items"][state].items():
            new = m.gaps[key.removeprefix("gaps/")] if key.startswith("gaps/") else getattr(m, key)
            old = np.asarray(old, dtype=np.float64)
            assert new.shape == old.shape, key
            assert np.all(np.abs(new - old) <= 1e-6 * np.maximum(1.0, np.abs(old))), (state, key, float(np.abs(new - old).max()))
    assert not math.isnan(float(m.nll.mean()))
