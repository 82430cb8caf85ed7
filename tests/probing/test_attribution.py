"""Attribution patching / EAP-IG against exact patching, TransformerLens, and a hand computation."""

import pytest
import torch
from transformer_lens.tools.analysis.attribution_patching import attribution_patch

from circuits.model import tiny_model
from circuits.probing.attribution import attribution_patching, gradient_sensitivity
from circuits.probing.patching import PairError, TokenGroup, patch_groups
from circuits.sites import AttnRef, HeadRef, MlpRef, NeuronRef, ResidRef, all_heads


def metric(logits):
    return logits[:, -1, 3] - logits[:, -1, 7]


@pytest.fixture(scope="module")
def linear_model():
    """No norms, no MLPs: the logits are an affine function of the last layer's head outputs."""
    return tiny_model(n_layers=2, n_heads=4, n_kv_heads=2, normalization=None, attn_only=True, seed=5)


def groups(token_pairs):
    clean, corrupted = token_pairs
    return [TokenGroup(indices=[0, 1, 2], clean=clean, corrupted=corrupted)]


LAST_LAYER = [
    *[HeadRef(1, h) for h in range(4)],
    *[HeadRef(1, h, pos=p) for h in range(4) for p in range(6)],
    AttnRef(1),
    ResidRef(1, 5, "resid_post"),
]


@pytest.mark.parametrize("ig_steps", [1, 4])
def test_attribution_equals_exact_where_the_metric_is_linear_in_the_activation(linear_model, token_pairs, ig_steps):
    g = groups(token_pairs)
    exact = patch_groups(linear_model, g, metric, LAST_LAYER, progress=False)
    approx = attribution_patching(linear_model, g, metric, LAST_LAYER, ig_steps=ig_steps, progress=False)
    # Compare m(patched) - m(corrupted) in metric units (this random model's clean-corrupted gap is
    # tiny, so normalised values would magnify float noise).
    denom = float(exact.clean_metric.mean() - exact.corrupted_metric.mean())
    assert torch.allclose(approx.effects * denom, exact.effects * denom, atol=1e-4)
    assert approx.method.name == ("attribution_patching" if ig_steps == 1 else "eap_ig") and approx.unit == "normalised"


def test_plain_attribution_matches_transformer_lens_attribution_patch(tiny, token_pairs):
    clean, corrupted = token_pairs
    ours = attribution_patching(tiny, groups(token_pairs), metric, all_heads(2, 4), progress=False)
    tl = attribution_patch(tiny.bridge, clean, corrupted, lambda logits: metric(logits).sum())
    denom = float(ours.clean_metric.mean() - ours.corrupted_metric.mean())
    for i, head in enumerate(all_heads(2, 4)):
        per_pos = [v for node, v in tl.node_scores.items() if node.kind == "attn_head_out" and node.layer == head.layer and node.head == head.head]
        assert per_pos, "TL returned no score for " + str(head)
        assert float(ours.mean_effects[i]) == pytest.approx(float(sum(per_pos)) / denom, abs=1e-4)


def test_eap_ig_is_closer_to_exact_than_plain_attribution_on_a_nonlinear_model(tiny, token_pairs):
    comps = [*all_heads(2, 4), MlpRef(0), MlpRef(1)]
    g = groups(token_pairs)
    exact = patch_groups(tiny, g, metric, comps, progress=False).mean_effects
    plain = attribution_patching(tiny, g, metric, comps, progress=False).mean_effects
    ig = attribution_patching(tiny, g, metric, comps, ig_steps=16, progress=False).mean_effects
    assert (ig - exact).abs().sum() < (plain - exact).abs().sum()


def test_gradient_sensitivity_is_the_hand_computed_gradient_norm(linear_model, token_pairs):
    # d metric / d z[L1, last pos, h] = (W_U[:, 3] - W_U[:, 7]) @ W_O_h^T ; zero at other positions.
    sd = linear_model.core.state_dict()
    w_o = next(v for k, v in sd.items() if k.startswith("layers.1") and ".o." in k and k.endswith("weight"))  # [d_model, n_heads*d_head]
    w_u = next(v for k, v in sd.items() if k.startswith("head.") and k.endswith("weight"))  # [d_vocab, d_model]
    direction = w_u[3] - w_u[7]  # [d_model]
    per_head = (direction @ w_o).view(4, 8)  # [head, d_head]
    result = gradient_sensitivity(linear_model, groups(token_pairs), metric, [HeadRef(1, h) for h in range(4)], progress=False)
    expected = per_head.norm(dim=-1)
    assert torch.allclose(result.effects, expected[:, None].expand(4, 3), atol=1e-5)


def test_neuron_granularity_and_errors(tiny, token_pairs):
    r = attribution_patching(tiny, groups(token_pairs), metric, [NeuronRef(0, i) for i in range(64)], progress=False)
    mlp = attribution_patching(tiny, groups(token_pairs), metric, [NeuronRef(0, 0)], progress=False)
    assert r.effects.shape == (64, 3) and torch.equal(r.effects[0], mlp.effects[0])
    with pytest.raises(ValueError, match="ig_steps"):
        attribution_patching(tiny, groups(token_pairs), metric, [MlpRef(0)], ig_steps=0)
    with pytest.raises(PairError):
        attribution_patching(tiny, [], metric, [MlpRef(0)])


def test_exact_patching_of_last_layer_heads_equals_the_hand_computed_effect(linear_model, token_pairs):
    # Attention-only, norm-free: patching head h of the last layer changes the metric by
    # (W_U[3] - W_U[7]) . W_O_h (z_clean - z_corrupted) at the last position, by hand.
    clean, corrupted = token_pairs
    _, c_cache = linear_model.bridge.run_with_cache(clean)
    _, k_cache = linear_model.bridge.run_with_cache(corrupted)
    sd = linear_model.core.state_dict()
    w_o = next(v for k, v in sd.items() if k.startswith("layers.1") and ".o." in k and k.endswith("weight")).view(32, 4, 8)
    w_u = next(v for k, v in sd.items() if k.startswith("head.") and k.endswith("weight"))
    dz = (c_cache["blocks.1.attn.hook_z"] - k_cache["blocks.1.attn.hook_z"])[:, -1]  # [batch, head, d_head]
    by_hand = torch.einsum("d,dhe,bhe->hb", w_u[3] - w_u[7], w_o, dz)  # [head, batch]
    exact = patch_groups(linear_model, groups(token_pairs), metric, [HeadRef(1, h) for h in range(4)], progress=False)
    raw = exact.effects * float(exact.clean_metric.mean() - exact.corrupted_metric.mean())
    assert torch.allclose(raw, by_hand, atol=1e-5)


def test_attribution_works_when_the_caller_disabled_autograd(tiny, token_pairs):
    with torch.no_grad():
        r = attribution_patching(tiny, groups(token_pairs), metric, [MlpRef(0)], progress=False)
    assert r.effects.abs().sum() > 0
