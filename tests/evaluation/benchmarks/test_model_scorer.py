"""ModelScorer on a tiny model: log-probabilities against a hand-written forward, samples from the adapter."""

from __future__ import annotations

import pytest
import torch

from circuits import model as M
from circuits.evaluation.benchmarks import ModelScorer, Scorer
from circuits.model.tiny import tiny_hf_model


@pytest.fixture(scope="module")
def lm():
    return tiny_hf_model("llama", seed=6)


def test_sentence_and_continuation_logprobs_match_a_plain_forward(lm):
    scorer = ModelScorer(lm, progress=False)
    assert isinstance(scorer, Scorer)
    text = "The nurse said that she was tired."
    ids = [M.bos_token_id(lm), *M.tokenizer_of(lm).encode(text, add_special_tokens=False)]
    logp = M.run(lm, torch.tensor([ids])).float().log_softmax(-1)[0]
    expected = sum(float(logp[i - 1, ids[i]]) for i in range(1, len(ids)))
    assert scorer.sequence_logprob([text, text]) == pytest.approx([expected, expected], abs=1e-4)
    prompt = "The nurse said that"
    p_ids = M.tokens_of(lm, prompt).tolist()
    c_ids = M.tokenizer_of(lm).encode(" she", add_special_tokens=False)
    logp = M.run(lm, torch.tensor([p_ids + c_ids])).float().log_softmax(-1)[0]
    expected = sum(float(logp[len(p_ids) + j - 1, c]) for j, c in enumerate(c_ids))
    assert scorer.continuation_logprob([prompt], [" she"]) == pytest.approx([expected], abs=1e-4)
    assert scorer.sequence_logprob([]) == [] and scorer.continuation_logprob([], []) == []


def test_samples_are_the_adapters_seeded_samples(lm):
    scorer = ModelScorer(lm, progress=False)
    prompts = ["My neighbour is", "The teacher"]
    got = scorer.sample(prompts, n=2, max_new_tokens=4, seed=11)
    assert got == M.sample_continuations(lm, prompts, n=2, max_new_tokens=4, seed=11)
    assert [len(row) for row in got] == [2, 2] and all(isinstance(s, str) for row in got for s in row)
