"""Our batched activation patching against TransformerLens 4.3's reference implementation."""

import pytest
import torch
from transformer_lens import patching

from circuits.probing.patching import PairError, normalise, patch_tokens
from circuits.sites import MlpRef, ResidRef, all_heads, all_mlps


def metric(logits):
    return logits[:, -1, 3] - logits[:, -1, 7]


def _tl_normalised(c, k):
    cm, km = c.mean(), k.mean()
    return lambda logits: (metric(logits).mean() - km) / (cm - km)


@pytest.mark.parametrize("max_rows", [3, 7, 1000])  # 1 intervention per forward, several, all packed
def test_head_out_all_pos_matches_transformer_lens(tiny, token_pairs, max_rows):
    clean, corrupted = token_pairs
    heads = all_heads(2, 4)
    p, c, k = patch_tokens(tiny, clean, corrupted, metric, heads, max_rows=max_rows)
    ours = normalise(p, c, k).mean(1).view(2, 4)
    _, cache = tiny.run_with_cache(clean)
    reference = patching.get_act_patch_attn_head_out_all_pos(tiny, corrupted, cache, _tl_normalised(c, k))
    assert torch.allclose(ours, reference, atol=1e-4), (ours - reference).abs().max()


def test_mlp_out_all_pos_matches_transformer_lens_generic_patch(tiny, token_pairs):
    clean, corrupted = token_pairs
    p, c, k = patch_tokens(tiny, clean, corrupted, metric, all_mlps(2))
    ours = normalise(p, c, k).mean(1)
    _, cache = tiny.run_with_cache(clean)
    reference = patching.generic_activation_patch(
        tiny, corrupted, cache, _tl_normalised(c, k),
        patch_setter=lambda corrupted_act, index, clean_act: clean_act.clone(),
        activation_name="mlp_out", index_axis_names=["layer"],
    )
    assert torch.allclose(ours, reference, atol=1e-4)


def test_resid_pre_per_position_matches_transformer_lens(tiny, token_pairs):
    clean, corrupted = token_pairs
    sites = [ResidRef(layer, pos) for layer in range(2) for pos in range(clean.shape[1])]
    p, c, k = patch_tokens(tiny, clean, corrupted, metric, sites)
    ours = normalise(p, c, k).mean(1).view(2, clean.shape[1])
    _, cache = tiny.run_with_cache(clean)
    reference = patching.get_act_patch_resid_pre(tiny, corrupted, cache, _tl_normalised(c, k))
    assert torch.allclose(ours, reference, atol=1e-4)


def test_resid_at_first_layer_all_positions_recovers_clean(tiny, token_pairs):
    # Patching the whole residual stream at the corrupted position recovers the clean run exactly.
    clean, corrupted = token_pairs
    p, c, k = patch_tokens(tiny, clean, corrupted, metric, [ResidRef(0, 2)])
    assert torch.allclose(p[0], c, atol=1e-5)


def test_noising_the_corrupted_position_reproduces_the_corrupted_run(tiny, token_pairs):
    clean, corrupted = token_pairs
    p, c, k = patch_tokens(tiny, clean, corrupted, metric, [ResidRef(0, 2)], direction="noising")
    assert torch.allclose(p[0], k, atol=1e-5)
    assert torch.allclose(normalise(p, c, k)[0], torch.zeros(3), atol=1e-4)


def test_misaligned_tokens_raise_one_clear_error(tiny, token_pairs):
    clean, corrupted = token_pairs
    with pytest.raises(PairError, match="must match"):
        patch_tokens(tiny, clean, corrupted[:, :-1], metric, all_mlps(2))


def test_equal_runs_cannot_be_normalised():
    with pytest.raises(ValueError, match="same mean metric"):
        normalise(torch.zeros(2, 3), torch.ones(3), torch.ones(3))
