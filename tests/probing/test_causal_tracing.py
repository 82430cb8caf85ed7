"""Causal tracing on a planted toy whose information flow is known by construction."""

import pytest
import torch

from circuits.model import tiny_model
from circuits.probing.causal_tracing import trace_grid, trace_tokens

SUBJECT, LAST = 1, 5


@pytest.fixture(scope="module")
def planted():
    """3 attention-only layers, no norms. Only layer 1 writes to the residual stream (layers 0 and 2
    have W_O = 0), and it attends uniformly (W_Q = W_K = 0): the subject's information reaches the last
    token in layer 1 and nowhere else."""
    m = tiny_model(n_layers=3, n_heads=2, d_head=16, attn_only=True, normalization=None, seed=11)
    with torch.no_grad():
        for name, p in m.core.named_parameters():
            layer = name.split(".")[1] if name.startswith("layers.") else None
            if layer in ("0", "2") and ".o." in name:
                p.zero_()
            if layer == "1" and (".q." in name or ".k." in name):
                p.zero_()
            if name.startswith("head."):
                p.mul_(30.0)  # a peaked output distribution, so the corruption visibly hurts
    return m


def trace(model, **kw):
    tokens = torch.tensor([[3, 17, 8, 22, 41, 9]])
    target = int(model(tokens)[0, -1].argmax())
    return trace_tokens(model, tokens, target, [SUBJECT], noise_std=5.0, n_samples=4, progress=False, **kw)


def test_resid_restoration_peaks_exactly_where_the_planted_flow_runs(planted):
    r = trace(planted)
    clean, corr = float(r.clean_metric[0]), float(r.corrupted_metric[0])
    assert clean - corr > 0.05  # the noise hurts
    full = torch.full((3, 6), corr)
    full[0, SUBJECT] = clean  # before layer 1 moves it, the subject state carries everything
    full[1:, LAST] = clean  # after layer 1, the last token carries everything
    assert torch.allclose(trace_grid(r), full, atol=1e-5), trace_grid(r)


def test_attention_window_restores_only_through_layer_1(planted):
    r = trace(planted, kind="attn", window=1)
    # Only layer 1's attention output at the last token carries the subject; others restore nothing.
    expected = torch.full((3, 6), float(r.corrupted_metric[0]))
    expected[1, LAST] = float(r.clean_metric[0])
    assert torch.allclose(trace_grid(r), expected, atol=1e-5)


@pytest.mark.parametrize("kind, window, sever", [("resid", 1, False), ("mlp", 2, False), ("attn", 3, False), ("resid", 1, True)])
def test_batched_equals_one_forward_per_cell(tiny, kind, window, sever):
    tokens = torch.tensor([[3, 17, 8, 22, 41]])
    a = trace_tokens(tiny, tokens, 4, [1, 2], kind=kind, window=window, sever_mlp=sever, n_samples=3, progress=False)
    b = trace_tokens(tiny, tokens, 4, [1, 2], kind=kind, window=window, sever_mlp=sever, n_samples=3, batched=False, progress=False)
    assert torch.allclose(trace_grid(a), trace_grid(b), atol=1e-6)
    assert trace_grid(a, restored=False).shape == (2, 5)


def test_severing_mlps_changes_the_grid_and_same_seed_repeats(tiny):
    tokens = torch.tensor([[3, 17, 8, 22, 41]])
    a = trace_tokens(tiny, tokens, 4, [1], n_samples=3, progress=False)
    b = trace_tokens(tiny, tokens, 4, [1], n_samples=3, progress=False)
    c = trace_tokens(tiny, tokens, 4, [1], n_samples=3, sever_mlp=True, progress=False)
    assert torch.equal(trace_grid(a), trace_grid(b))
    assert not torch.equal(trace_grid(a)[0], trace_grid(c)[0])


def test_bad_arguments_raise(tiny):
    tokens = torch.tensor([[3, 17, 8]])
    with pytest.raises(ValueError, match="subject"):
        trace_tokens(tiny, tokens, 4, [7])
    with pytest.raises(ValueError, match="window"):
        trace_tokens(tiny, tokens, 4, [1], window=3)
    with pytest.raises((ValueError, TypeError), match="one prompt|1 pos|dimension"):  # jaxtyping checks "1 pos" first at test time
        trace_tokens(tiny, tokens.repeat(2, 1), 4, [1])
