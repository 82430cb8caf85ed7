"""Before/after pairing of benchmark results: paired tests over items where a measure is a mean over items."""

from __future__ import annotations

import math

import numpy as np
import pytest

from circuits import stats
from circuits.evaluation.benchmarks import compare_results, crows_pairs, run_benchmark
from circuits.evaluation.benchmarks.compare import NO_TEST, PAIRED
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
    assert [(c.name, c.group) for c in changes] == [(m.name, m.group) for m in before.measures]
    overall = changes[0]
    b = crows_pairs.preferences(crows_pairs.load(path), ConstantScorer()) * 100
    a = crows_pairs.preferences(crows_pairs.load(path), FlippedScorer()) * 100
    expected = stats.paired_test(b, a, seed=3)
    assert overall.test == PAIRED and overall.n == 5
    assert (overall.change, overall.ci_low, overall.ci_high, overall.p_value) == pytest.approx(
        (expected.change, expected.ci_low, expected.ci_high, expected.p_value))
    assert overall.before == pytest.approx(b.mean()) and overall.after == pytest.approx(a.mean())
    assert compare_results(before, before)[0].p_value == 1.0  # nothing changed


def test_aggregate_measures_are_reported_without_a_test():
    path = FIXTURES / "stereoset_dev.json"
    r = run_benchmark("stereoset", path, ConstantScorer())
    for c in compare_results(r, r):
        assert c.test == NO_TEST and c.change == 0.0 and math.isnan(c.p_value)
        assert c.as_dict()["p_value"] == "nan"


def test_results_of_different_benchmarks_do_not_pair():
    a = run_benchmark("crows-pairs", FIXTURES / "crows_pairs.csv", ConstantScorer())
    b = run_benchmark("crows-pairs", FIXTURES / "crows_pairs.csv", ConstantScorer(), limit=2)
    with pytest.raises(ValueError, match="cannot pair"):
        compare_results(a, b)
    assert np.isfinite(compare_results(a, a)[0].ci_low)
