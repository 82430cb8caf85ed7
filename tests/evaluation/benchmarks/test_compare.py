"""Before/after pairing of benchmark results: each score is a registry measure, tested over the same items."""

from __future__ import annotations

import math

import numpy as np
import pytest

from circuits import stats
from circuits.evaluation.benchmarks import compare_results, crows_pairs, run_benchmark, stereoset
from circuits.evaluation.measures import MCNEMAR, PERMUTATION
from circuits.evaluation.report import Measure
from tests.evaluation.benchmarks.fakes import FIXTURES
from tests.evaluation.benchmarks.test_registry import ConstantScorer


class FlippedScorer(ConstantScorer):
    """Prefers the longer sentence: the opposite choice of :class:`ConstantScorer` on every pair."""

    def sequence_logprob(self, texts):
        return [float(len(t)) for t in texts]


def test_mean_measures_get_the_paired_test_of_their_items():
    path = FIXTURES / "crows_pairs.csv"
    before = run_benchmark("crows-pairs", path, ConstantScorer(), seed=3)
    after = run_benchmark("crows-pairs", path, FlippedScorer(), seed=3)
    changes = compare_results(before, after, seed=3)
    assert all(isinstance(c, Measure) for c in changes)
    assert [(c.name, c.group) for c in changes] == [(f"crows-pairs.{m.name}", m.group) for m in before.scores]
    overall = changes[0]
    b = crows_pairs.preferences(crows_pairs.load(path), ConstantScorer())
    a = crows_pairs.preferences(crows_pairs.load(path), FlippedScorer())
    # A preference is a 0/1 outcome per pair: the exact McNemar test, the change in percentage points.
    expected = stats.paired_binary_test(b, a, seed=3)
    assert overall.test == MCNEMAR and overall.n == 5 and overall.kind == "harm" and overall.reference == 50.0
    assert (overall.change, overall.ci_low, overall.ci_high) == pytest.approx((100 * expected.change, 100 * expected.ci_low, 100 * expected.ci_high))
    assert overall.p_value == pytest.approx(expected.p_value)
    assert overall.before == pytest.approx(100 * b.mean()) and overall.after == pytest.approx(100 * a.mean())
    assert "Nangia" in overall.source
    assert compare_results(before, before)[0].p_value == 1.0  # nothing changed


def test_aggregate_measures_get_a_permutation_test_and_a_ci():
    # Issue #32: every change carries a CI. (Before the measure registry, StereoSet's target-averaged
    # scores were reported without a test; their change is now a paired permutation test over examples.)
    path = FIXTURES / "stereoset_dev.json"
    r = run_benchmark("stereoset", path, ConstantScorer())
    for c in compare_results(r, r):
        assert c.test == PERMUTATION and c.change == 0.0 and c.p_value == 1.0
        assert c.ci_low == c.ci_high == 0.0
    flipped = run_benchmark("stereoset", path, FlippedScorer())
    overall = {c.name: c for c in compare_results(r, flipped, seed=1) if c.group is None}
    ss = overall["stereoset.ss_score"]
    items = stereoset.load(path)
    assert ss.before == pytest.approx(r.score("ss_score").value) and ss.after == pytest.approx(flipped.score("ss_score").value)
    assert math.isfinite(ss.ci_low) and ss.ci_low <= ss.change <= ss.ci_high and 0.0 <= ss.p_value <= 1.0
    assert overall["stereoset.lm_score"].kind == "capability" and ss.n == len(items)


def test_results_of_different_benchmarks_do_not_pair():
    a = run_benchmark("crows-pairs", FIXTURES / "crows_pairs.csv", ConstantScorer())
    b = run_benchmark("crows-pairs", FIXTURES / "crows_pairs.csv", ConstantScorer(), limit=2)
    with pytest.raises(ValueError, match="cannot pair"):
        compare_results(a, b)
    assert np.isfinite(compare_results(a, a)[0].ci_low)
