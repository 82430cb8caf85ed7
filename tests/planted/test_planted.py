"""Planted circuits: the shipped models, the planting mask, and recovery by the exact methods."""

from __future__ import annotations

import pytest
import torch

import circuits.planted as P
from circuits import model as M
from circuits.editing import apply_edit
from circuits.metrics import call_metric
from circuits.planted.recovery import faithfulness, recover
from circuits.sites import HeadRef


@pytest.fixture(scope="module", params=["induction", "spurious", "harmful"])
def task(request):
    return request.param


def test_mask_lets_only_planted_heads_move_the_information(task):
    model = P.load_planted(task)
    tokens = {
        "induction": lambda: P.induction_tokens(4, seed=1)[0],
        "spurious": lambda: P.spurious_tokens(4, seed=1, p_spurious=0.5, p_signal=1.0)[0],
        "harmful": lambda: P.harmful_tokens(4, seed=1)[0],
    }[task]()
    blocked = P.TRIGGER_POS if task == "harmful" else P.SPURIOUS_POS
    names = [HeadRef(layer, 0, "pattern").hook_name for layer in range(2)]
    _, cache = M.run_with_cache(model, tokens, names)
    for layer in range(2):
        for h in range(4):
            pattern = cache[names[layer]][:, h]
            if HeadRef(layer, h) in P.PLANTED[task]:
                continue
            if task == "induction":  # BOS only
                assert torch.allclose(pattern[..., 0], torch.ones_like(pattern[..., 0]))
            else:  # never to or from the spurious (trigger) position
                assert pattern[:, :, blocked].abs().max() == 0
                assert pattern[:, blocked, 0].min() == 1


def test_exact_patching_and_eap_ig_recover_the_planted_circuit(task):
    model = P.load_planted(task)
    group, metric = {"induction": P.induction_pairs, "spurious": P.spurious_pairs, "harmful": P.harmful_pairs}[task](32, seed=3)
    results = {r.method.split(" (")[0]: r for r in recover(model, group, metric, P.PLANTED[task])}
    # Harmful task: the planted head alone, with every other head mean-ablated, carries a third of the
    # metric difference (measured 0.335); the others cannot see the trigger, and ablating the planted
    # head alone removes the harmful output entirely (test below).
    least = {"induction": 0.8, "spurious": 0.8, "harmful": 0.3}[task]
    for method in ("exact activation patching", "EAP-IG"):
        assert results[method].recall >= 0.9 and results[method].precision >= 0.9, results[method]
        assert results[method].faithfulness > least


def test_faithfulness_is_one_for_everything_and_zero_for_nothing():
    model = P.load_planted("induction")
    group, metric = P.induction_pairs(16, seed=4)
    everything = frozenset(HeadRef(layer, h) for layer in range(2) for h in range(4))
    assert faithfulness(model, everything, group, metric) == pytest.approx(1.0, abs=1e-5)
    assert faithfulness(model, frozenset(), group, metric) == 0.0


def test_removing_the_planted_spurious_head_restores_decorrelated_accuracy():
    model = P.load_planted("spurious")
    before = P.spurious_accuracy(model, decorrelated=True)
    with apply_edit(model, P.remove_spurious(model, P.PLANTED["spurious"])):
        after = P.spurious_accuracy(model, decorrelated=True)
    assert before < 0.6 < 0.9 < after


def test_removing_the_planted_harmful_head_removes_the_harmful_output():
    model = P.load_planted("harmful")
    assert P.harmful_rates(model) == (1.0, 0.0)  # triggered prompts: always HARM, never the label
    with apply_edit(model, P.remove_harmful(model, P.PLANTED["harmful"])):
        harm, label = P.harmful_rates(model)
    assert harm == 0.0 and label > 0.95
    toks, targets, _ = P.harmful_tokens(256, seed=9, p_trigger=0.0)
    assert (M.run(model, toks)[:, -1].argmax(-1) == targets).float().mean() == 1.0  # untriggered prompts untouched


def test_shipped_training_record_matches_the_weights():
    meta = P.metadata("spurious")
    assert P.spurious_accuracy(P.load_planted("spurious"), decorrelated=True) == pytest.approx(meta["accuracy_decorrelated"])


def test_causal_tracing_flags_exactly_the_planted_layer_on_the_spurious_task():
    from circuits.planted.recovery import traced_layers

    model = P.load_planted("spurious")
    group, _ = P.spurious_pairs(4, seed=3)
    layers, restored = traced_layers(model, group.clean, torch.full((4,), P.LABELS[0]), [P.SPURIOUS_POS], n_samples=3)
    assert layers == {1}
    assert restored[0].abs().max() < 1e-3  # no layer-0 head can carry the spurious token


def test_per_prompt_logit_reads_the_last_position_or_averages_the_last_k():
    logits = torch.zeros(2, 4, 6)
    logits[0, -1, 3], logits[1, -1, 5] = 6.0, 12.0  # last position
    logits[0, -2, 1], logits[1, -2, 2] = 6.0, 0.0  # the position before
    last = P.PerPromptLogit(torch.tensor([3, 5]))
    assert last.info.positions == 1
    assert torch.allclose(call_metric(last, logits), torch.tensor([6.0 - 1.0, 12.0 - 2.0]))
    two = P.PerPromptLogit(torch.tensor([[1, 3], [2, 5]]))  # target j at position -2 + j
    assert two.info.positions == 2
    assert torch.allclose(call_metric(two, logits), torch.tensor([(5.0 + 5.0) / 2, (0.0 + 10.0) / 2]))
    packed = call_metric(two, logits.repeat(3, 1, 1), torch.tensor([0, 1] * 3))  # packed interventions
    assert torch.allclose(packed, call_metric(two, logits).repeat(3))


def test_mean_ablation_knocks_out_exactly_its_heads_and_a_scan_under_it_matches_hand_runs():
    """The backup-head scan: knock a head out with ``mean_ablation`` and patch the others (noising)."""
    from circuits.probing.patching import patch_groups

    model = P.load_planted("induction")
    group, metric = P.induction_pairs(8, seed=5)
    knocked = HeadRef(1, 2)
    toks = torch.cat([group.clean, group.corrupted])
    name = knocked.hook_name
    _, before = M.run_with_cache(model, toks, [name])
    with apply_edit(model, P.mean_ablation(model, {knocked}, toks)):
        _, after = M.run_with_cache(model, toks, [name])
        others = [h for h in range(4) if h != knocked.head]
        torch.testing.assert_close(after[name][:, :, others], before[name][:, :, others])
        mean = before[name][:, :, knocked.head].mean((0, 1))
        torch.testing.assert_close(after[name][:, :, knocked.head], mean.expand_as(after[name][:, :, knocked.head]))

        rest = [HeadRef(layer, h) for layer in range(2) for h in range(4) if HeadRef(layer, h) != knocked]
        result = patch_groups(model, [group], metric, rest, direction="noising", progress=False)
        torch.testing.assert_close(result.clean_metric, call_metric(metric, M.run(model, group.clean)).float())
        _, corr = M.run_with_cache(model, group.corrupted, sorted({h.hook_name for h in rest}))
        for i, h in enumerate(rest):
            def swap(z, hook=None, h=h):  # noqa: ANN001, ARG001
                z = z.clone()
                z[:, :, h.head] = corr[h.hook_name][:, :, h.head]
                return z

            by_hand = call_metric(metric, M.run(model, group.clean, [(h.hook_name, swap)])).float()
            torch.testing.assert_close(result.patched[i], by_hand, atol=1e-4, rtol=1e-4)
    # The knocked-out head matters: without the edit, the clean metric is different.
    assert not torch.allclose(call_metric(metric, M.run(model, group.clean)).float(), result.clean_metric, atol=1e-3)
