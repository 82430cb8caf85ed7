"""Interventional ACE (CARE's localisation, seed 003): the formula by hand, against an independent full
forward with a hand-written do() hook, exact zeros where a neuron cannot act, and a planted neuron."""

from __future__ import annotations

import pytest
import torch

from circuits import model as M
from circuits.metrics import LogitDiff
from circuits.probing.ace import ace_from_interventions, average_causal_effect, neuron_values, rank_by_ace
from circuits.probing.pairs import TokenGroup
from circuits.sites import NeuronRef

TRIG, NEUT, A, B, PLANTED = 40, 41, 10, 11, NeuronRef(1, 7)


def test_ace_formula_by_hand():
    # y = [3, 1]; under do(α1) = [1, 1], do(α2) = [2, 0] → baseline [1.5, 0.5] → ACE [1.5, 0.5]
    got = ace_from_interventions(torch.tensor([3.0, 1.0]), torch.tensor([[1.0, 1.0], [2.0, 0.0]]))
    assert torch.allclose(got, torch.tensor([1.5, 0.5]))


def planted_neuron_model():
    """A tiny model where neuron L1N7 reads "the last token is TRIG" and writes logit(A) − logit(B)."""
    m = M.tiny_model(n_layers=2, n_heads=4, seed=3)
    e, u = M.read_weight(m, "embed.weight"), M.read_weight(m, "unembed.weight")
    d = (e[TRIG] - e[NEUT]) / (e[TRIG] - e[NEUT]).norm()
    o = (u[A] - u[B]) / (u[A] - u[B]).norm()
    for name, row in (("blocks.1.mlp.gate.weight", 4 * d), ("blocks.1.mlp.in.weight", 4 * d)):
        w = M.read_weight(m, name).clone()
        w[PLANTED.index] = row
        M.replace_weight(m, name, w)
    w = M.read_weight(m, "blocks.1.mlp.out.weight").clone()
    w[:, PLANTED.index] = 2 * o
    M.replace_weight(m, "blocks.1.mlp.out.weight", w)
    return m


def trigger_pairs(n: int = 16, seed: int = 0) -> TokenGroup:
    clean = torch.randint(0, 30, (n, 6), generator=torch.Generator().manual_seed(seed))
    clean[:, -1] = TRIG
    corr = clean.clone()
    corr[:, -1] = NEUT
    return TokenGroup(list(range(n)), clean, corr)


@pytest.fixture(scope="module")
def planted():
    return planted_neuron_model()


def test_ace_equals_a_full_forward_with_a_hand_written_do_hook(planted):
    group, metric, n = trigger_pairs(6), LogitDiff(A, B), NeuronRef(0, 3)
    eff = average_causal_effect(planted, [group], metric, [n], n_values=3, progress=False)
    lo, hi = torch.quantile(neuron_values(planted, [group], [n])[n], torch.tensor([0.05, 0.95])).tolist()

    def gap(hooks):
        return metric(M.run(planted, group.clean, hooks)) - metric(M.run(planted, group.corrupted, hooks))

    def do(a):
        def hook(act, hook):
            act = act.clone()
            act[..., n.index] = a
            return act

        return [(n.hook_name, hook)]

    baseline = torch.stack([gap(do(a)) for a in (lo, (lo + hi) / 2, hi)]).mean(0)
    assert torch.allclose(eff.effects[0], gap([]) - baseline, atol=1e-4)
    assert eff.method.name == "average_causal_effect" and eff.unit == "logits"  # the metric's own unit (a logit difference)


def test_a_neuron_without_output_weights_has_ace_zero(planted):
    w = M.read_weight(planted, "blocks.0.mlp.out.weight").clone()
    w[:, 9] = 0
    restore = M.replace_weight(planted, "blocks.0.mlp.out.weight", w)
    try:
        eff = average_causal_effect(planted, [trigger_pairs(6)], LogitDiff(A, B), [NeuronRef(0, 9)], progress=False)
    finally:
        restore()
    assert torch.allclose(eff.effects, torch.zeros_like(eff.effects), atol=1e-5)


@pytest.mark.slow  # an end-to-end pipeline (> 10 s): make test runs it, make test-fast does not
def test_ace_ranks_the_planted_neuron_first(planted):
    neurons = [NeuronRef(layer, i) for layer in range(2) for i in range(planted.shape.d_mlp)]
    eff = average_causal_effect(planted, [trigger_pairs()], LogitDiff(A, B), neurons, progress=False)
    assert rank_by_ace(eff, 1) == [PLANTED]
    top = eff.mean_effects.abs().sort(descending=True).values
    assert top[0] > 5 * top[1]
