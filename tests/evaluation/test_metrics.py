import math

import pytest
import torch

from circuits.evaluation.metrics import compare, english_sample, window_nll


def test_compare_computes_reduction_change_and_paired_test():
    before = torch.tensor([1.0, 1.2, 0.8, 1.1])
    after = torch.tensor([0.5, 0.6, 0.4, 0.55])
    ev = compare("eval", before, after, ppl_before=20.0, ppl_after=21.0)
    assert ev.bias_before == pytest.approx(1.025)
    assert ev.bias_reduction == pytest.approx(0.5, abs=1e-6)
    assert ev.ppl_change == pytest.approx(0.05)
    assert 0 < ev.p_value < 0.01
    assert ev.as_dict()["split"] == "eval"


def test_window_nll_is_cross_entropy_of_a_uniform_model(tiny):
    # Zero the unembedding: every next token is equally likely, so NLL = log(d_vocab) exactly.
    ids = torch.arange(10) % 50
    state = {k: v.clone() for k, v in tiny.original_model.state_dict().items()}
    try:
        for name, p in tiny.original_model.named_parameters():
            if name.startswith(("head.", "lm_head.")):
                with torch.no_grad():
                    p.zero_()
        nll = window_nll(tiny, ids, window=4)
    finally:
        tiny.original_model.load_state_dict(state)
    assert torch.allclose(nll, torch.full_like(nll, math.log(50)), atol=1e-5)


def test_window_nll_rejects_tiny_inputs(tiny):
    with pytest.raises(ValueError):
        window_nll(tiny, torch.tensor([1]))


def test_english_sample_is_shipped():
    assert len(english_sample().split()) > 1000
