"""Our batched activation patching against TransformerLens 4.3's reference implementation."""

import pytest
import torch
from transformer_lens import patching

from circuits.probing.patching import PairError, normalise, patch_tokens
from circuits.sites import AttnRef, HeadRef, MlpRef, ResidRef, all_heads, all_mlps


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
    _, cache = tiny.bridge.run_with_cache(clean)
    reference = patching.get_act_patch_attn_head_out_all_pos(tiny.bridge, corrupted, cache, _tl_normalised(c, k))
    assert torch.allclose(ours, reference, atol=1e-4), (ours - reference).abs().max()


def test_mlp_out_all_pos_matches_transformer_lens_generic_patch(tiny, token_pairs):
    clean, corrupted = token_pairs
    p, c, k = patch_tokens(tiny, clean, corrupted, metric, all_mlps(2))
    ours = normalise(p, c, k).mean(1)
    _, cache = tiny.bridge.run_with_cache(clean)
    reference = patching.generic_activation_patch(
        tiny.bridge, corrupted, cache, _tl_normalised(c, k),
        patch_setter=lambda corrupted_act, index, clean_act: clean_act.clone(),
        activation_name="mlp_out", index_axis_names=["layer"],
    )
    assert torch.allclose(ours, reference, atol=1e-4)


def test_resid_pre_per_position_matches_transformer_lens(tiny, token_pairs):
    clean, corrupted = token_pairs
    sites = [ResidRef(layer, pos) for layer in range(2) for pos in range(clean.shape[1])]
    p, c, k = patch_tokens(tiny, clean, corrupted, metric, sites)
    ours = normalise(p, c, k).mean(1).view(2, clean.shape[1])
    _, cache = tiny.bridge.run_with_cache(clean)
    reference = patching.get_act_patch_resid_pre(tiny.bridge, corrupted, cache, _tl_normalised(c, k))
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
    with pytest.raises((PairError, TypeError), match="must match|pos"):  # jaxtyping checks the shapes first at test time
        patch_tokens(tiny, clean, corrupted[:, :-1], metric, all_mlps(2))


def test_equal_runs_cannot_be_normalised():
    with pytest.raises(ValueError, match="same mean metric"):
        normalise(torch.zeros(2, 3), torch.ones(3), torch.ones(3))


def _ours(tiny, token_pairs, components):
    clean, corrupted = token_pairs
    p, c, k = patch_tokens(tiny, clean, corrupted, metric, components)
    return normalise(p, c, k).mean(1), _tl_normalised(c, k)


POS = 6
LAYERS, HEADS, KV = 2, 4, 2


@pytest.mark.parametrize(
    "tl_fn, make, shape",
    [
        ("get_act_patch_resid_mid", lambda l, p: ResidRef(l, p, "resid_mid"), (LAYERS, POS)),
        ("get_act_patch_attn_out", lambda l, p: AttnRef(l, p), (LAYERS, POS)),
        ("get_act_patch_mlp_out", lambda l, p: MlpRef(l, p), (LAYERS, POS)),
    ],
)
def test_layer_by_position_sites_match_transformer_lens(tiny, token_pairs, tl_fn, make, shape):
    comps = [make(l, p) for l in range(shape[0]) for p in range(shape[1])]
    ours, tl_metric = _ours(tiny, token_pairs, comps)
    _, cache = tiny.bridge.run_with_cache(token_pairs[0])
    reference = getattr(patching, tl_fn)(tiny.bridge, token_pairs[1], cache, tl_metric)
    assert torch.allclose(ours.view(shape), reference, atol=1e-4)


@pytest.mark.parametrize("act, n", [("z", HEADS), ("q", HEADS), ("pattern", HEADS)])
def test_head_by_position_sites_match_transformer_lens(tiny, token_pairs, act, n):
    comps = [HeadRef(l, h, act, p) for l in range(LAYERS) for p in range(POS) for h in range(n)]
    ours, tl_metric = _ours(tiny, token_pairs, comps)
    _, cache = tiny.bridge.run_with_cache(token_pairs[0])
    name = {"z": "out", "q": "q", "pattern": "pattern"}[act]
    reference = getattr(patching, f"get_act_patch_attn_head_{name}_by_pos")(tiny.bridge, token_pairs[1], cache, tl_metric)
    if act == "pattern":  # TL orders this sweep (layer, head, dest_pos)
        reference = reference.permute(0, 2, 1)
    assert torch.allclose(ours.view(LAYERS, POS, n), reference, atol=1e-4)


@pytest.mark.parametrize("act", ["q", "k", "v", "pattern"])
def test_head_all_position_sites_match_transformer_lens(tiny, token_pairs, act):
    # Under GQA TL iterates k/v over key/value heads; query head h patches kv head h // 2 here.
    n = KV if act in ("k", "v") else HEADS
    heads = [0, 2] if act in ("k", "v") else range(HEADS)  # the first query head of each kv group
    comps = [HeadRef(l, h, act) for l in range(LAYERS) for h in heads]
    ours, tl_metric = _ours(tiny, token_pairs, comps)
    _, cache = tiny.bridge.run_with_cache(token_pairs[0])
    reference = getattr(patching, f"get_act_patch_attn_head_{act}_all_pos")(tiny.bridge, token_pairs[1], cache, tl_metric)
    assert torch.allclose(ours.view(LAYERS, n), reference, atol=1e-4)


def test_gqa_query_heads_of_one_group_patch_the_same_key_value_head(tiny, token_pairs):
    # 4 query heads share 2 kv heads: heads 0,1 read kv head 0; heads 2,3 read kv head 1.
    comps = [HeadRef(1, h, "k") for h in range(HEADS)]
    ours, _ = _ours(tiny, token_pairs, comps)
    assert torch.equal(ours[0], ours[1]) and torch.equal(ours[2], ours[3])
    assert not torch.equal(ours[0], ours[2])
    # ...while z (per query head) differs within a group.
    z, _ = _ours(tiny, token_pairs, [HeadRef(1, 0), HeadRef(1, 1)])
    assert not torch.equal(z[0], z[1])


def test_neurons_sum_to_the_whole_mlp_when_patched_together(tiny, token_pairs):
    # Patching every neuron of a layer's hook_post at once equals patching the whole MLP output.
    from circuits.sites import NeuronRef

    clean, corrupted = token_pairs
    p_mlp, c, k = patch_tokens(tiny, clean, corrupted, metric, [MlpRef(0)])
    _, cache = tiny.bridge.run_with_cache(clean)

    def all_neurons(act, hook):
        return cache["blocks.0.mlp.hook_post"]

    patched = metric(tiny.bridge.run_with_hooks(corrupted, fwd_hooks=[(NeuronRef(0, 0).hook_name, all_neurons)]))
    assert torch.allclose(patched, p_mlp[0], atol=1e-5)


def test_unembedding_only_the_positions_a_metric_reads_changes_nothing(tiny, token_pairs):
    from circuits.metrics import LogitDiff

    clean, corrupted = token_pairs
    comps = [*all_heads(2, 4), *all_mlps(2)]
    full = patch_tokens(tiny, clean, corrupted, metric, comps)[0]  # plain callable: all positions
    last_only = patch_tokens(tiny, clean, corrupted, LogitDiff(3, 7), comps)[0]  # declares positions=1
    assert torch.allclose(full, last_only, atol=1e-6)
