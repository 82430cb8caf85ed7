"""The tests and power calculations the measure registry uses (circuits.stats), against hand computations and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from circuits import stats


def test_exact_mcnemar_counts_only_the_discordant_items():
    # 6 items went 1 -> 0, 1 went 0 -> 1, 3 stayed: p = P(X <= 1 or X >= 6 | X ~ Bin(7, 1/2)) = 2 * 8/128.
    before = np.array([1, 1, 1, 1, 1, 1, 0, 1, 0, 0], float)
    after = np.array([0, 0, 0, 0, 0, 0, 1, 1, 0, 0], float)
    t = stats.paired_binary_test(before, after, seed=0)
    assert t.p_value == pytest.approx(2 * 8 / 128)
    assert t.change == pytest.approx(-0.5) and t.n == 10 and t.ci_low <= t.change <= t.ci_high
    # Its CI is the same bootstrap of the per-item change as the paired t-test's.
    assert (t.ci_low, t.ci_high) == stats.bootstrap_ci(after - before, seed=0)
    assert stats.paired_binary_test(before, before).p_value == 1.0
    with pytest.raises(ValueError, match="only 0 and 1"):
        stats.paired_binary_test(before, after * 0.5)


def test_t_detectable_change_solves_the_noncentral_t_power_equation():
    n, sd = 79, 0.01
    delta = stats.t_detectable_change(n, sd)
    power = sps.nct.sf(sps.t.ppf(0.95, n - 1), n - 1, delta * math.sqrt(n) / sd)
    assert power == pytest.approx(0.8, abs=1e-9)
    assert delta == pytest.approx((1.645 + 0.842) * sd / math.sqrt(n), rel=0.02)  # the normal approximation
    assert stats.t_detectable_change(n, 0.0) == 0.0 and stats.t_detectable_change(1, 1.0) == math.inf


def test_mcnemar_power_matches_a_simulation_and_the_detectable_drop_is_the_first_with_80_percent():
    rng = np.random.default_rng(0)
    n, drop, churn = 100, 0.08, 0.12
    hits = 0
    for _ in range(4000):  # each item: lost with p (churn + drop)/2, gained with p (churn - drop)/2
        u = rng.random(n)
        lost, gained = int((u < (churn + drop) / 2).sum()), int(((u >= (churn + drop) / 2) & (u < churn)).sum())
        hits += lost + gained > 0 and sps.binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue <= 0.05
    assert stats.mcnemar_power(n, drop, churn) == pytest.approx(hits / 4000, abs=0.03)
    d = stats.mcnemar_detectable_drop(n, churn)
    assert stats.mcnemar_power(n, d, churn) >= 0.8 > stats.mcnemar_power(n, d - 1 / n, churn)
    # With no churn, 40 items need 7 lost answers (17.5 points); 267 need 7 (2.6 points).
    assert stats.mcnemar_detectable_drop(40, 0.0) == pytest.approx(7 / 40)
    assert stats.mcnemar_detectable_drop(267, 0.0) == pytest.approx(7 / 267)
    assert stats.mcnemar_detectable_drop(3, 0.0) == math.inf


def test_a_permutation_over_one_item_has_nothing_to_permute():
    b, a, lo, hi, p = stats.paired_permutation(lambda rows: float(np.sum(rows)), 1)
    assert (b, a, lo, hi, p) == (0.0, 1.0, 1.0, 1.0, 1.0)


def test_fdr_q_values_are_benjamini_hochberg_on_one_sided_p_by_hand():
    # Two-sided t-test p-values and means of 4 components. One-sided p of "effect > 0": p/2 where the
    # mean is positive, 1 - p/2 where not: (0.005, 0.02, 0.015, 0.95). BH by hand: sorted
    # (0.005, 0.015, 0.02, 0.95) * 4 / rank = (0.02, 0.03, 0.02667, 0.95); running minimum from the top
    # gives (0.02, 0.02667, 0.02667, 0.95), back in the input order.
    q = stats.fdr_q_values(np.array([0.01, 0.04, 0.03, 0.1]), np.array([1.0, 0.5, 0.2, -0.3]))
    assert np.allclose(q, [0.02, 0.02666667, 0.02666667, 0.95])
    assert stats.fdr_q_values(np.zeros(0), np.zeros(0)).shape == (0,)
