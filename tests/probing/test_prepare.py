"""Pairs tokenised for their metric: teacher forcing, two rows per pair, and patching through them."""

from __future__ import annotations

import pytest
import torch

from circuits import model as M
from circuits.metrics import call_metric
from circuits.model.tiny import tiny_hf_model
from circuits.probing.pairs import PairError, prepare
from circuits.probing.patching import patch_groups
from circuits.sites import HeadRef, all_heads
from circuits.suites import MetricSpec, PromptPair


@pytest.fixture(scope="module")
def lm():
    return tiny_hf_model("llama", seed=5)


PAIRS = [
    PromptPair("The nurse said that", "The pilot said that", " she was tired", " he left"),
    PromptPair("The maid told us that", "The miner told us that", " she", " he"),
]


def test_logprob_diff_appends_each_continuation_and_scores_the_pair_difference(lm):
    d = prepare(lm, PAIRS, MetricSpec(name="auto"))
    assert d.name == "logprob_diff" and d.n_rows == 4 and d.n_pairs == 2
    tok = lm.tokenizer
    rows = {r: (g, i) for g in d.groups for i, r in enumerate(g.indices)}
    g, i = rows[0]  # pair 0, answer row: prompt + " she was" (teacher forcing: all but the last answer token)
    want = torch.cat([M.tokens_of(lm, PAIRS[0].clean), torch.tensor(tok.encode(" she was tired", add_special_tokens=False)[:-1])])
    assert g.clean[i].tolist() == want.tolist()
    assert g.corrupted[i, -2:].tolist() == want[-2:].tolist()  # the same continuation after the corrupted prompt
    values = torch.zeros(4)
    for g in d.groups:
        values[torch.tensor(g.indices)] = call_metric(d.metric, M.run(lm, g.clean), torch.tensor(g.indices))
    by_hand = []
    for p in PAIRS:
        lp = []
        for cont in (p.answer, p.wrong_answer):
            ids = tok.encode(cont, add_special_tokens=False)
            toks = torch.cat([M.tokens_of(lm, p.clean), torch.tensor(ids)])[None]
            logp = M.run(lm, toks)[0].log_softmax(-1)
            n = M.tokens_of(lm, p.clean).shape[0]
            lp.append(sum(float(logp[n - 1 + j, t]) for j, t in enumerate(ids)))
        by_hand.append(lp[0] - lp[1])
    torch.testing.assert_close(d.metric.to_pairs(values), torch.tensor(by_hand), atol=1e-4, rtol=0)


def test_patching_with_a_two_row_metric_equals_the_difference_of_patched_rows(lm):
    d = prepare(lm, PAIRS, MetricSpec(name="logprob_diff"))
    heads = all_heads(2, 4)
    result = patch_groups(lm, d.groups, d.metric, heads, progress=False)
    assert result.effects.shape == (8, 2) and result.patched.shape == (8, 2)
    # Patch one head by hand in each row, then combine the rows.
    h = HeadRef(1, 2)
    rows = torch.zeros(4)
    for g in d.groups:
        _, cache = M.run_with_cache(lm, g.clean, [h.hook_name])

        def swap(z, hook, cache=cache):
            z = z.clone()
            z[:, :, h.head] = cache[h.hook_name][:, :, h.head]
            return z

        rows[torch.tensor(g.indices)] = call_metric(d.metric, M.run(lm, g.corrupted, [(h.hook_name, swap)]), torch.tensor(g.indices))
    torch.testing.assert_close(result.patched[heads.index(h)], d.metric.to_pairs(rows), atol=1e-4, rtol=0)


def test_single_token_answers_use_the_per_pair_logit_difference_and_multi_token_ones_are_refused_for_it(lm):
    d = prepare(lm, PAIRS[1:], MetricSpec(name="auto"))
    assert d.name == "logit_diff" and d.n_rows == 1
    with pytest.raises(PairError, match="pair 0: logit_diff needs one-token answers"):
        prepare(lm, PAIRS, MetricSpec(name="logit_diff"))


def test_misaligned_pairs_are_refused_naming_the_pair(lm):
    bad = [PAIRS[0], PromptPair("The nurse said that", "The very tired old pilot said that", " she", " he")]
    with pytest.raises(PairError, match="pair 1 is not aligned"):
        prepare(lm, bad, MetricSpec(name="auto"))


def test_kl_and_answer_probability_metrics(lm):
    kl = prepare(lm, PAIRS, MetricSpec(name="kl"))
    clean = kl.groups[0]
    values = call_metric(kl.metric, M.run(lm, clean.clean), torch.tensor(clean.indices))
    assert torch.allclose(values, torch.zeros_like(values), atol=1e-5)  # the clean run's KL to itself
    p = prepare(lm, PAIRS, MetricSpec(name="answer_prob"))
    assert p.n_rows == 2 and p.metric.probability


def test_answers_longer_than_another_pairs_whole_sequence_are_scored(lm):
    """Regression: the right-aligned target width is the suite's longest answer, which may exceed a short row."""
    from circuits.evaluation.metrics import bias_gaps, continuation_logprobs

    long = " was too emotional to make a sensible decision about the house and the car today."
    pairs = [PromptPair("My mother", "My father", long, long), PromptPair("The cat", "The dog", " sat", " sat")]
    d = prepare(lm, pairs, MetricSpec(name="answer_logprob"))
    assert d.metric.targets.shape[1] > min(g.clean.shape[1] for g in d.groups)
    gaps = bias_gaps(lm, d)
    lp = continuation_logprobs(lm, [p.clean for p in pairs] + [p.corrupted for p in pairs], [p.answer for p in pairs] * 2)
    torch.testing.assert_close(gaps, lp[:2] - lp[2:], atol=1e-4, rtol=0)
