"""Each score on a case small enough to compute by hand."""

import math

import pytest
import torch

from circuits.probing import scores as S
from circuits.stats import Summary


def test_causal_effect_is_clean_minus_intervened():
    ce = S.causal_effect(torch.tensor([2.0, 4.0]), torch.tensor([[1.0, 1.0], [2.0, 5.0]]))
    assert ce.tolist() == [[1.0, 3.0], [0.0, -1.0]]
    assert ce.mean(-1).tolist() == [2.0, -0.5]  # CE(h) = E[m(x) - m(x | do h)]
    with pytest.raises((ValueError, TypeError)):  # TypeError: jaxtyping checks the shapes first at test time
        S.causal_effect(torch.zeros(3), torch.zeros(2, 2))


def test_weighted_spuriousness_weights_by_reliability():
    # Setting A: CE = 1 exactly on every prompt (SE 0 -> weight 1/eps); setting B: noisy around 3.
    a = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 5.0, 1.0, 5.0]])  # mean 3, var 16/3, SE^2 = 4/3
    s = S.weighted_spuriousness(torch.stack([a, b]), eps=1e-2)
    wa, wb = 1 / 1e-2, 1 / (4 / 3 + 1e-2)
    assert s.item() == pytest.approx((wa * 1 + wb * 3) / (wa + wb))


def test_sss_adds_the_zero_and_swap_kl_terms_then_averages():
    # Seed 000: SSS = E[KL(p||p_do(h=0)) + KL(p'||p'_do(h<->x'))]; component 0: (0.1+0.3, 0.2+0.0) -> 0.3
    zero = torch.tensor([[0.1, 0.2], [0.0, 0.0]])
    swap = torch.tensor([[0.3, 0.0], [0.4, 0.6]])
    assert S.spurious_sensitivity(zero, swap).tolist() == pytest.approx([0.3, 0.5])
    with pytest.raises(ValueError):
        S.spurious_sensitivity(torch.tensor([[-1.0]]), torch.tensor([[0.0]]))


def test_ids_is_the_domain_balanced_mean_l2():
    # prompts 0,1 in domain "a" (mean 2), prompt 2 in domain "b" (6): IDS = (2 + 6) / 2 = 4, not (1+3+6)/3
    l2 = torch.tensor([[1.0, 3.0, 6.0]])
    assert S.invariance_disruption(l2, ["a", "a", "b"]).tolist() == pytest.approx([4.0])
    assert S.invariance_disruption(l2).tolist() == pytest.approx([10 / 3])
    with pytest.raises(ValueError):
        S.invariance_disruption(l2, ["a"])


def test_combined_score_is_raw_as_written_or_minmax_scaled():
    sss, ids = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([10.0, 30.0, 20.0])
    assert S.combined_score(sss, ids).tolist() == pytest.approx([5.0, 15.5, 11.0])  # 0.5 S + 0.5 I, seed's beta
    r = S.combined_score(sss, ids, beta=0.5, scale="minmax")
    assert r.tolist() == pytest.approx([0.0, 0.75, 0.75])  # S^ = [0, .5, 1]; I^ = [0, 1, .5]
    assert S.combined_score(torch.tensor([1.0, 2.0]), torch.tensor([5.0, 5.0]), beta=1.0, scale="minmax").tolist() == [0.0, 1.0]
    with pytest.raises(ValueError):
        S.combined_score(torch.zeros(2), torch.zeros(2), beta=1.5)


def test_pruning_rates_are_percentages_of_the_components():
    r = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.0, 0.4, 0.6, 0.8])
    assert S.top_rate(r, 0.10) == [1]
    assert S.top_rate(r, 0.30) == [1, 9, 4]
    assert len(S.top_rate(r, 0.50)) == 5 and S.PRUNING_RATES == (0.1, 0.3, 0.5)
    with pytest.raises(ValueError):
        S.top_rate(r, 30.0)  # a percentage given as a number, not a fraction


def test_reliability_score_averages_weighted_abs_ce_over_the_grid():
    # 3 interventions x 2 metrics x 2 data sets, 1 component; |CE| = 1 everywhere except masking/metric 0 = -4
    ce = torch.ones(3, 2, 2, 1)
    ce[0, 0] = -4.0
    assert S.reliability_score(ce).item() == pytest.approx((4 * 2 + 10) / 12)
    w = S.reliability_score(ce, w_intervention=[2.0, 1.0, 1.0], w_metric=[1.0, 0.5])
    # masking: 2*(1*4*2 + .5*1*2) = 18; scaling and swapping: 1*(2) + .5*(2) = 3 each -> 24 / 12
    assert w.item() == pytest.approx(24 / 12)
    assert S.above_threshold(torch.tensor([0.2, 1.5, 0.9, 2.0]), 0.8) == [3, 1, 2]
    with pytest.raises(ValueError):
        S.reliability_score(ce, w_metric=[1.0])


def test_significance_needs_three_seeds_and_one_sign():
    sig = Summary(0.5, 0.1, 10, 0.4, 0.6, 1e-4)
    flip = Summary(-0.5, 0.1, 10, -0.6, -0.4, 1e-4)
    null = Summary(0.01, 0.1, 10, -0.05, 0.07, 0.6)
    assert S.significant_across_seeds([[sig, sig, null]] * 3) == [True, True, False]
    assert S.significant_across_seeds([[sig], [sig], [flip]]) == [False]
    with pytest.raises(ValueError, match="3 seeds"):
        S.significant_across_seeds([[sig], [sig]])
    assert math.isfinite(S.combined_score(torch.ones(3), torch.ones(3), scale="minmax").sum().item())
