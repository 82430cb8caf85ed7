"""Each score on a case small enough to compute by hand."""

import math

import pytest
import torch

from circuits.atlas import scores as S
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


def test_sss_is_mean_kl_and_rejects_negative():
    assert S.spurious_sensitivity(torch.tensor([[0.0, 0.2], [0.4, 0.4]])).tolist() == pytest.approx([0.1, 0.4])
    with pytest.raises(ValueError):
        S.spurious_sensitivity(torch.tensor([[-1.0]]))


def test_ids_is_rms_deviation_across_domains():
    ids = S.invariance_deviation(torch.tensor([[1.0, 3.0], [2.0, 2.0]]))
    assert ids.tolist() == pytest.approx([1.0, 0.0])
    with pytest.raises(ValueError):
        S.invariance_deviation(torch.tensor([[1.0]]))


def test_combined_score_scales_then_mixes():
    r = S.combined_score(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([10.0, 30.0, 20.0]), beta=0.5)
    assert r.tolist() == pytest.approx([0.0, 0.75, 0.75])  # S^ = [0, .5, 1]; I^ = [0, 1, .5]
    assert S.combined_score(torch.tensor([1.0, 2.0]), torch.tensor([5.0, 5.0]), beta=1.0).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError):
        S.combined_score(torch.zeros(2), torch.zeros(2), beta=1.5)


def test_significance_needs_three_seeds_and_one_sign():
    sig = Summary(0.5, 0.1, 10, 0.4, 0.6, 1e-4)
    flip = Summary(-0.5, 0.1, 10, -0.6, -0.4, 1e-4)
    null = Summary(0.01, 0.1, 10, -0.05, 0.07, 0.6)
    assert S.significant_across_seeds([[sig, sig, null]] * 3) == [True, True, False]
    assert S.significant_across_seeds([[sig], [sig], [flip]]) == [False]
    with pytest.raises(ValueError, match="3 seeds"):
        S.significant_across_seeds([[sig], [sig]])
    assert math.isfinite(S.combined_score(torch.ones(3), torch.ones(3)).sum().item())
