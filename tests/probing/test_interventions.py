"""Each intervention against a hand-written hook, plus determinism and checkpoint resume."""

import pytest
import torch

from circuits.interventions import Add, GaussianNoise, MeanOf, Resample, Scale, Zero, rome_noise_std
from circuits.probing.patching import TokenGroup, mean_activations, patch_groups, patch_tokens
from circuits.sites import HeadRef, MlpRef, NeuronRef, all_heads, all_mlps

Z = "blocks.1.attn.hook_z"


def metric(logits):
    return logits[:, -1, 3] - logits[:, -1, 7]


def reference(tiny, tokens, name, fn):
    """The metric after a hand-written hook (independent of the engine)."""
    return metric(tiny.bridge.run_with_hooks(tokens, fwd_hooks=[(name, fn)]))


def set_head(value_fn):
    def hook(z, hook):
        z = z.clone()
        z[:, :, 2] = value_fn(z[:, :, 2])
        return z

    return hook


def test_zero_ablation_matches_hand_hook(tiny, token_pairs):
    clean, corrupted = token_pairs
    p, _, _ = patch_tokens(tiny, clean, corrupted, metric, [HeadRef(1, 2)], direction="noising", intervention=Zero())
    assert torch.allclose(p[0], reference(tiny, clean, Z, set_head(torch.zeros_like)), atol=1e-6)


def test_scale_by_alpha_matches_hand_hook_and_limits(tiny, token_pairs):
    clean, corrupted = token_pairs
    p, c, _ = patch_tokens(tiny, clean, corrupted, metric, [HeadRef(1, 2)], direction="noising", intervention=Scale(0.5))
    assert torch.allclose(p[0], reference(tiny, clean, Z, set_head(lambda z: 0.5 * z)), atol=1e-6)
    p1, c, _ = patch_tokens(tiny, clean, corrupted, metric, [HeadRef(1, 2)], direction="noising", intervention=Scale(1.0))
    assert torch.allclose(p1[0], c, atol=1e-6)  # alpha = 1 is a no-op


def test_mean_ablation_matches_hand_hook(tiny, token_pairs):
    clean, corrupted = token_pairs
    reference_tokens = torch.cat([clean, corrupted])
    means = mean_activations(tiny, reference_tokens, [Z])
    p, _, _ = patch_tokens(tiny, clean, corrupted, metric, [HeadRef(1, 2)], direction="noising", intervention=MeanOf(means))
    expected = reference(tiny, clean, Z, set_head(lambda z: means[Z][:, 2].expand_as(z)))
    assert torch.allclose(p[0], expected, atol=1e-6)


def test_add_steering_matches_hand_hook(tiny, token_pairs):
    clean, corrupted = token_pairs
    v = torch.linspace(-1, 1, 32)
    p, _, _ = patch_tokens(tiny, clean, corrupted, metric, [MlpRef(0)], direction="noising", intervention=Add(v, 2.0))
    expected = reference(tiny, clean, "blocks.0.hook_mlp_out", lambda a, hook: a + 2.0 * v)
    assert torch.allclose(p[0], expected, atol=1e-5)
    with pytest.raises(ValueError, match="width"):
        patch_tokens(tiny, clean, corrupted, metric, [HeadRef(0, 0)], intervention=Add(v))


def test_resample_is_a_seeded_derangement():
    base = torch.arange(6.0)[:, None].repeat(1, 3)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    out = Resample()(base, base, g(0))
    assert sorted(out[:, 0].tolist()) == base[:, 0].tolist()  # a permutation of the prompts
    assert (out[:, 0] != base[:, 0]).all()  # nobody keeps its own activation
    assert torch.equal(out, Resample()(base, base, g(0)))


def test_noise_is_seeded_and_has_the_requested_scale():
    base = torch.zeros(4000, 8)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a, b, c = (GaussianNoise(3.0)(base, base, g(s)) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.std().item() == pytest.approx(3.0, rel=0.03)
    assert rome_noise_std(torch.ones(10, 4) * torch.arange(4.0)) == pytest.approx(3 * torch.arange(4.0).repeat(10).std().item())


def _groups(token_pairs):
    clean, corrupted = token_pairs
    return [TokenGroup(indices=[0, 1, 2], clean=clean, corrupted=corrupted)]


def test_same_seed_same_numbers_and_packing_does_not_matter(tiny, token_pairs):
    comps = [*all_heads(2, 4), NeuronRef(0, 5)]
    runs = [patch_groups(tiny, _groups(token_pairs), metric, comps, intervention=GaussianNoise(0.5), seed=s, max_rows=m, progress=False)
            for s, m in [(7, 3), (7, 1000), (8, 1000)]]
    assert torch.equal(runs[0].effects, runs[1].effects)
    assert not torch.equal(runs[0].effects, runs[2].effects)


def test_interrupted_scan_resumes_from_checkpoints_with_identical_numbers(tiny, token_pairs, tmp_path, monkeypatch):
    comps = [*all_heads(2, 4), *all_mlps(2)]
    full = patch_groups(tiny, _groups(token_pairs), metric, comps, intervention=GaussianNoise(0.3), seed=1, progress=False)

    import circuits.probing.executor as X

    real = X.patch_from_source
    calls = {"n": 0}

    def crash_in_second_layer(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real(*args, **kwargs)

    monkeypatch.setattr(X, "patch_from_source", crash_in_second_layer)
    with pytest.raises(KeyboardInterrupt):
        patch_groups(tiny, _groups(token_pairs), metric, comps, intervention=GaussianNoise(0.3), seed=1, checkpoint_dir=tmp_path, progress=False)
    saved = list(tmp_path.rglob("layer_*.safetensors"))
    assert [p.name for p in saved] == ["layer_0.safetensors"]

    calls["n"] = -100  # no more crashes; count what the resumed run computes
    resumed = patch_groups(tiny, _groups(token_pairs), metric, comps, intervention=GaussianNoise(0.3), seed=1, checkpoint_dir=tmp_path, progress=False)
    assert calls["n"] == -99  # only layer 1 was recomputed (one group)
    assert torch.equal(resumed.effects, full.effects)
