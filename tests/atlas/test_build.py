"""The scan and the edit builders on a tiny random Llama with the real tokenizer (fast; no real model).

Covers the spurious branch of the scan (SSS from the label-distribution KL, IDS, R, S_w, the flip rate),
its per-layer checkpoints and resumption, and every builder from token groups.
"""

from __future__ import annotations

import pytest
import torch

from circuits import model as M
from circuits.atlas.build import scan
from circuits.editing import apply_edit
from circuits.editing.build import ablation_edit, direction_edit, mean_difference, scaling_edit, steering_edit
from circuits.model.tiny import tiny_hf_model
from circuits.probing.patching import tokenize_pairs
from circuits.sites import HeadRef, NeuronRef, ResidRef
from circuits.suites import load_suite


@pytest.fixture(scope="module")
def llama():
    return tiny_hf_model("llama", seed=4)


def test_the_spurious_scan_records_its_scores_and_resumes_from_per_layer_checkpoints(llama, tmp_path):
    suite = load_suite("name-sentiment")
    atlas = scan(llama, suite, max_pairs=1, checkpoint_dir=tmp_path, attribution=False, progress=False)
    b = atlas.behaviours[0]
    assert b.kind == "spurious" and b.methods[0].name == "spurious_sensitivity" and b.methods[0].normalisation == "none"
    assert {"SSS", "IDS", "R", "S_w", "CE[swap,logit_diff]", "CE[mean,logit_diff]"} <= set(b.components[0].scores)
    # The behaviour's own label metric on each side (nothing faked: the KL scale is in the summary)
    from circuits.probing.pairs import metric_for_suite

    metric, groups = metric_for_suite(llama, suite), tokenize_pairs(llama, suite.pairs("build", max_pairs=1))
    clean = torch.cat([metric(M.run(llama, g.clean)) for g in groups]).mean()
    corrupted = torch.cat([metric(M.run(llama, g.corrupted)) for g in groups]).mean()
    assert b.clean_metric_mean == pytest.approx(float(clean), abs=1e-5) and b.corrupted_metric_mean == pytest.approx(float(corrupted), abs=1e-5)
    assert {"flip_rate", "mean_abs_gap", "total_kl"} <= set(b.summary) and b.summary["total_kl"] > 0
    sss = torch.tensor([c.scores["SSS"] for c in b.components])
    means = torch.tensor([c.effect.mean for c in b.components])
    torch.testing.assert_close(sss, means.double().float(), atol=1e-6, rtol=0)  # SSS is the mean of the per-prompt KL sum
    terms = torch.tensor([c.scores["SSS[zero]"] + c.scores["SSS[swap]"] for c in b.components])
    torch.testing.assert_close(sss, terms, atol=1e-5, rtol=1e-5)  # both terms of seed 000's SSS
    saved = sorted(p.name for p in tmp_path.rglob("*.safetensors"))
    assert len(saved) == 4 * llama.shape.n_layers  # SSS zero and swap terms, counterfactual noising, mean ablation: per layer
    again = scan(llama, suite, max_pairs=1, checkpoint_dir=tmp_path, attribution=False, progress=False)
    assert again.behaviours == atlas.behaviours


def test_builders_take_token_groups(llama):
    suite = load_suite("gender-occupation")
    groups = tokenize_pairs(llama, suite.pairs("build", max_pairs=1))
    tokens = groups[0].clean
    original = M.run(llama, tokens)
    heads, neurons = (HeadRef(1, 0), HeadRef(0, 3)), (NeuronRef(1, 7),)
    edits = [
        ablation_edit(llama, heads + neurons, groups, mode="mean"),
        ablation_edit(llama, heads, groups, mode="zero", form="weights"),
        ablation_edit(llama, heads, groups, mode="resample", bank_size=5),
        scaling_edit(llama, heads, alpha=0.5),
        steering_edit(llama, groups, layer=1, coefficient=-2.0),
        direction_edit(llama, groups, layer=1),
    ]
    for e in edits:
        assert e.model_fingerprint == M.fingerprint(llama) and e.model_source["architecture"] == "LlamaForCausalLM"
        with apply_edit(llama, e):
            assert not torch.allclose(M.run(llama, tokens), original, atol=1e-5), e
    mean = edits[0].tensors[str(heads[0])]
    assert mean.shape == (llama.shape.d_head,)
    assert edits[2].tensors[str(heads[0])].shape == (5, llama.shape.d_head)
    v = mean_difference(llama, groups, 1)
    torch.testing.assert_close(edits[4].tensors["vector"], v)
    torch.testing.assert_close(edits[5].tensors["direction"], v / v.norm())
    assert edits[5].components == (ResidRef(1, None),)
    with pytest.raises(ValueError, match="out of range"):
        mean_difference(llama, groups, 9)


def test_the_flag_rule_controls_the_false_discovery_rate():
    """Planted: 2 strong components, 1 weakly positive one (its 95% CI above 0, raw one-sided p ≈ 0.01)
    and 57 null ones. Without FDR control the weak one is flagged; with Benjamini–Hochberg over 60 it is not."""
    import numpy as np

    from circuits.atlas.build import FDR, behaviour_from_patching
    from circuits.probing.effects import Effects, Method
    from circuits.sites import all_heads
    from circuits.stats import fdr_q_values

    rng = np.random.default_rng(0)
    n = 30
    rows = [1.0 + 0.1 * rng.standard_normal(n), 0.8 + 0.1 * rng.standard_normal(n)]
    weak = rng.standard_normal(n)
    weak = (weak - weak.mean()) / weak.std(ddof=1) + 0.5  # mean 0.5, std 1: t = 0.5 * sqrt(30) ≈ 2.74
    rows.append(weak)
    rows += [rng.standard_normal(n) * 0.3 for _ in range(57)]
    values = torch.tensor(np.stack(rows))
    heads = all_heads(6, 10)
    effects = Effects(tuple(heads), values, "normalised", Method("activation_patching", "swap", "denoising", "logit_diff (logits)"),
                      clean_metric=torch.ones(n), corrupted_metric=torch.zeros(n))
    b = behaviour_from_patching(effects, suite=load_suite("gender-occupation"), split="build", metric="logit_diff", threshold=0.3, seed=0)
    entry = {c.id: c for c in b.components}
    weak_entry = entry[str(heads[2])]
    assert weak_entry.effect.mean >= 0.3 and weak_entry.effect.above_zero  # the old rule flags it
    assert weak_entry.effect.p_value / 2 < 0.05 and weak_entry.q_value >= FDR and not weak_entry.flagged
    assert [c.id for c in b.flagged()] == [str(heads[0]), str(heads[1])]
    stats = [c.effect for c in b.components]
    assert np.allclose([c.q_value for c in b.components], fdr_q_values(np.array([s.p_value for s in stats]), np.array([s.mean for s in stats])))
    assert "Benjamini-Hochberg q < 0.05 over 60 components" in b.flag_rule


def test_committed_atlases_are_flagged_by_the_current_rule():
    """Every committed atlas records the flag rule's q-values and flags (re-flag with scripts/reflag_fdr.py after a rule change)."""
    from pathlib import Path

    from circuits.atlas.build import apply_flag_rule
    from circuits.atlas.schema import Atlas

    root = Path(__file__).resolve().parents[2]
    paths = sorted((root / "atlas").rglob("*.atlas.json"))
    assert paths
    for path in paths:
        for b in Atlas.load(path).behaviours:
            assert apply_flag_rule(b) == b, f"{path.relative_to(root)}: {b.name} is not flagged by the current rule"
            assert all(c.q_value is not None for c in b.components)
