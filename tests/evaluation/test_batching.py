"""Batched, padded and chunked measuring equals measuring one item at a time (tiny models, to 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circuits import model as M
from circuits.evaluation import metrics as E
from circuits.model.tiny import tiny_hf_model


@pytest.fixture(scope="module")
def lm():
    return tiny_hf_model("llama", seed=4)


PROMPTS = ["The cat sat on the", "Question: What colour is the sky?\nAnswer:", "", "A", "Once upon a time, in a land far away, there"]
CONTS = [" mat.", " blue", "A short sentence of several tokens.", " b c d e f", " lived a dragon"]


def test_continuation_logprobs_in_batches_equal_one_at_a_time(lm):
    together = E.continuation_logprobs(lm, PROMPTS, CONTS, batch_size=8)
    alone = torch.stack([E.continuation_logprobs(lm, [p], [c])[0] for p, c in zip(PROMPTS, CONTS)])
    assert torch.allclose(together, alone, atol=1e-5, rtol=0) and (together < 0).all()
    # By hand: log-softmax of the full forward at the positions before each continuation token.
    ids = M.tokens_of(lm, PROMPTS[0]).tolist()
    cont = M.tokenizer_of(lm).encode(CONTS[0], add_special_tokens=False)
    logp = M.run(lm, torch.tensor([ids + cont]))[0].float().log_softmax(-1)
    by_hand = sum(logp[len(ids) - 1 + k, t] for k, t in enumerate(cont))
    assert together[0].item() == pytest.approx(by_hand.item(), abs=1e-5)


def test_label_logits_and_window_scores_in_batches_equal_one_at_a_time(lm):
    ids = [5, 17, 300]
    together = E.label_logits(lm, PROMPTS[:2] + PROMPTS[3:], ids, batch_size=3)
    alone = torch.cat([E.label_logits(lm, [p], ids) for p in PROMPTS[:2] + PROMPTS[3:]])
    assert torch.allclose(together, alone, atol=1e-5, rtol=0)
    windows = torch.randint(0, 1000, (5, 12), generator=torch.Generator().manual_seed(1))
    nll, acc = E.window_scores(lm, windows, batch_size=4)
    for i in range(5):
        n1, a1 = E.window_scores(lm, windows[i : i + 1])
        assert nll[i].item() == pytest.approx(n1.item(), abs=1e-5) and acc[i].item() == a1.item()


def test_chunked_unembedding_gives_the_same_numbers(lm, monkeypatch):
    """With room for only 3 positions' logits at a time, every measure is unchanged and no larger logits are made."""
    windows = torch.randint(0, 1000, (3, 10), generator=torch.Generator().manual_seed(2))
    full = (E.continuation_logprobs(lm, PROMPTS, CONTS), E.label_logits(lm, PROMPTS[:2], [5, 6]), E.window_scores(lm, windows))
    real, seen = M.unembed, []

    def spy(model, h, vocab=None):
        seen.append(h.reshape(-1, h.shape[-1]).shape[0])
        return real(model, h, vocab)

    monkeypatch.setattr(E, "LOGIT_BYTES", 3 * 4 * lm.shape.d_vocab)
    monkeypatch.setattr(M, "unembed", spy)
    small = (E.continuation_logprobs(lm, PROMPTS, CONTS), E.label_logits(lm, PROMPTS[:2], [5, 6]), E.window_scores(lm, windows))
    assert max(seen) <= 3
    assert torch.allclose(full[0], small[0], atol=1e-5) and torch.allclose(full[1], small[1], atol=1e-5)
    assert torch.allclose(full[2][0], small[2][0], atol=1e-5) and torch.equal(full[2][1], small[2][1])


def test_bias_gaps_equal_the_metric_on_full_logits(lm):
    from circuits.metrics import call_metric
    from circuits.probing.pairs import prepare
    from circuits.suites import load_suite

    for name in ("gender-occupation", "identity-harm"):
        suite = load_suite(name, model=lm)
        data = prepare(lm, suite.pairs("eval", max_pairs=2), suite.metric)
        gaps = E.bias_gaps(lm, data)
        by_hand = torch.zeros(data.n_rows)
        for g in data.groups:
            idx = torch.tensor(g.indices)
            by_hand[idx] = call_metric(data.metric, M.run(lm, g.clean), idx) - call_metric(data.metric, M.run(lm, g.corrupted), idx)
        assert torch.allclose(gaps, data.metric.to_pairs(by_hand), atol=1e-5), name


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_batched_greedy_answers_equal_each_answer_generated_alone(family):
    from circuits import data as D

    model = tiny_hf_model(family, seed=3)
    task = D.factual_qa()
    prompts = [task.prompt(q) for q in task.items[:24]]
    batched = E.greedy_continuations(model, prompts, max_new_tokens=6, batch_size=8)
    alone = [M.tokenizer_of(model).decode(M.generate_ids(model, M.tokens_of(model, p)[None], max_new_tokens=6)[0, len(M.tokens_of(model, p)):].tolist(),
                                          skip_special_tokens=True) for p in prompts]
    assert batched == alone
    assert len({len(M.tokens_of(model, p)) for p in prompts}) > 1  # the batches really were padded


def test_padded_generation_without_the_kv_cache_falls_back_to_one_length_at_a_time():
    tiny = M.tiny_model(n_layers=1, n_heads=2, d_vocab=50, seed=0)  # a native model generates without the KV cache
    toks = torch.tensor([[0, 1, 2], [0, 3, 4]])
    with pytest.raises(M.PaddingUnsupported):
        M.generate_ids(tiny, toks, max_new_tokens=2, attention_mask=torch.tensor([[0, 1, 1], [1, 1, 1]]))
    assert M.generate_ids(tiny, toks, max_new_tokens=2, attention_mask=torch.ones_like(toks)).shape == (2, 5)
    assert np.array_equal(M.generate_ids(tiny, toks, max_new_tokens=2).numpy(), M.generate_ids(tiny, toks, max_new_tokens=2).numpy())


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2", "qwen2"])
def test_answers_sharing_a_prompt_run_the_prompt_once_and_score_as_alone(family, monkeypatch):
    from circuits.editing import Edit, apply_edit
    from circuits.sites import HeadRef

    model = tiny_hf_model(family, seed=6)
    prompts = ["Question: What is the capital of France?\nAnswer:"] * 3 + ["Question: Two plus two?\nAnswer:"] * 2 + ["Q: hi\nA:"] * 2
    conts = [" Paris", " Lyon is a big city", " Rome", " four", " 4", " hello there", " x"]
    calls = []
    real = M.final_residual_with_prefix
    monkeypatch.setattr(M, "final_residual_with_prefix", lambda *a: calls.append(a[1].shape) or real(*a))
    edit = Edit("scaling", (HeadRef(1, 0),), {}, model.name, M.fingerprint(model), hyperparameters={"alpha": 0.3})
    for ctx in (edit, None):
        handle = apply_edit(model, ctx) if ctx is not None else None
        shared = E.continuation_logprobs(model, prompts, conts, share_prompts=True)
        alone = torch.stack([E.continuation_logprobs(model, [p], [c])[0] for p, c in zip(prompts, conts)])
        if handle is not None:
            handle.remove()
        assert torch.allclose(shared, alone, atol=1e-5, rtol=0), (family, ctx)
    assert calls and sum(shape[0] for shape in calls) == 2 * 3  # three prompts, each run once per state
    assert torch.allclose(E.continuation_logprobs(model, prompts, conts), alone, atol=1e-5, rtol=0)  # without sharing: the concatenated forward


def test_the_kl_from_kept_streams_equals_running_both_models(lm, monkeypatch):
    from circuits.editing import Edit
    from circuits.evaluation import run as R
    from circuits.sites import HeadRef

    edit = Edit("scaling", (HeadRef(0, 1),), {}, lm.name, M.fingerprint(lm), hyperparameters={"alpha": 0.0})
    windows = torch.randint(0, 1000, (3, 16), generator=torch.Generator().manual_seed(3))
    kl = R.neutral_kl(lm, [edit], windows)
    assert kl.shape == (3,) and (kl > 0).all()
    # By hand: KL(p ‖ q) per position of the full forwards, averaged per window.
    from circuits.editing import apply_edit

    logp = M.run(lm, windows).float().log_softmax(-1)
    with apply_edit(lm, edit):
        logq = M.run(lm, windows).float().log_softmax(-1)
    by_hand = (logp.exp() * (logp - logq)).sum(-1).mean(-1)
    assert np.allclose(kl, by_hand.numpy(), atol=1e-6)
    # An edit on the unembedding itself: each distribution is made with its own unembedding (same numbers here).
    monkeypatch.setattr(R, "_unembedding_untouched", lambda model, w: False)
    assert np.allclose(R.neutral_kl(lm, [edit], windows), kl, atol=1e-7)
