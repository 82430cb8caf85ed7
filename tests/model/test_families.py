"""The architecture matrix: every family of the table, against TransformerLens and plain transformers.

For each family (GPT-2, GPT-NeoX, GPT-J, Llama, Mistral, Qwen 2, Qwen 3, Gemma 2, Gemma 3, Phi-3,
OLMo 2: learned vs rotary positions, LayerNorm vs RMSNorm, parallel vs sequential blocks, tied vs
untied embeddings, GQA vs MHA, post-sublayer norms), on a tiny random model saved to disk:
head / MLP / residual patching equals TransformerLens 4.3's own patching functions on the same bridge;
the partial forward equals the full forward; every edit kind's hook form equals its baked form where
the family has one (and is refused clearly where it has none); removal restores the weights bit for
bit; and the exported Hugging Face directory reloads in plain ``transformers`` with the edited logits.
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens import patching
from transformers import AutoModelForCausalLM

from circuits import model as M
from circuits.editing import KINDS, EditError, apply_edit
from circuits.model.tiny import FAMILIES
from circuits.sites import ResidRef, all_heads, all_mlps, hook_name
from tests.kinds import all_kinds
from tests.model.tl_reference import assert_patching_matches, mlp_sweep

pytestmark = pytest.mark.equivalence  # also run by `make latest` on the newest allowed versions
PROMPTS = ["The nurse said that she was very", "The pilot said that he was very"]


def _tokens(lm):
    return M.to_tokens(lm, PROMPTS)


def _metric(logits):
    return logits[:, -1, 264] - logits[:, -1, 314]


@pytest.mark.parametrize("family", FAMILIES)
def test_patching_equals_transformer_lens(family_models, family):
    lm = family_models[family]
    clean = _tokens(lm)
    corrupted = clean.clone()
    corrupted[:, 2] = torch.tensor([1000, 2000])  # the occupation word replaced
    s = lm.shape
    cache = lm.bridge.run_with_cache(clean)[1]
    sweeps = [
        (all_heads(s.n_layers, s.n_heads), lambda m: patching.get_act_patch_attn_head_out_all_pos(lm.bridge, corrupted, cache, m)),
        ([ResidRef(layer, pos) for layer in range(s.n_layers) for pos in range(clean.shape[1])],
         lambda m: patching.get_act_patch_resid_pre(lm.bridge, corrupted, cache, m)),
        (all_mlps(s.n_layers), mlp_sweep(lm, corrupted, cache)),
    ]
    assert_patching_matches(lm, clean, corrupted, _metric, sweeps, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_partial_forward_equals_full_forward(family_models, family):
    lm = family_models[family]
    tokens = _tokens(lm)
    names = [hook_name("resid_pre", layer) for layer in range(lm.shape.n_layers)]
    full, cache = M.run_with_cache(lm, tokens, names)
    torch.testing.assert_close(M.embed(lm, tokens), cache[names[0]], atol=0, rtol=0)
    for layer, name in enumerate(names):
        with torch.no_grad():
            torch.testing.assert_close(M.run_from_layer(lm, cache[name], layer), full, atol=1e-5, rtol=0)
            part = M.run_from_layer(lm, cache[name], layer, last=1, vocab=[264, 314])
        torch.testing.assert_close(part[..., [264, 314]], full[:, -1:, [264, 314]], atol=1e-5, rtol=0)


def _refused_bake(lm, kind: str) -> bool:
    """Kinds whose weight form this family cannot hold (sublayer outputs normalised before the residual)."""
    return kind in ("steering", "directional_ablation", "orthogonalization") and not lm.arch.residual_writes_foldable()


@pytest.mark.parametrize("family", FAMILIES)
def test_every_edit_kind_bakes_exactly_and_removes_bit_for_bit(family_models, family):
    lm = family_models[family]
    tokens = _tokens(lm)
    original, fp = lm(tokens).detach().clone(), M.fingerprint(lm)
    for kind, edit in all_kinds(lm).items():
        if kind == "orthogonalization" and _refused_bake(lm, kind):
            with pytest.raises(EditError, match="no weight form"):
                apply_edit(lm, edit)
            continue
        with apply_edit(lm, edit):
            hooked = lm(tokens).detach().clone()
        assert not torch.allclose(hooked, original, atol=1e-5), kind
        if _refused_bake(lm, kind):
            with pytest.raises(EditError, match="no weight form"):
                apply_edit(lm, edit, form="weights")
        else:
            with apply_edit(lm, edit, form="weights"):
                torch.testing.assert_close(lm(tokens).detach(), hooked, atol=1e-4, rtol=1e-4, msg=kind)
        assert torch.equal(lm(tokens), original) and M.fingerprint(lm) == fp, kind


@pytest.mark.parametrize("family", FAMILIES)
def test_export_reloads_in_plain_transformers_with_the_edited_logits(family_models, family, tmp_path):
    lm = family_models[family]
    tokens = _tokens(lm)
    for kind, edit in all_kinds(lm).items():
        if _refused_bake(lm, kind):
            continue
        with apply_edit(lm, edit, form="weights"):
            edited = lm(tokens).detach().clone()
            try:
                out = M.save_hf_pretrained(lm, tmp_path / kind)
            except M.ExportError as e:  # a bias the family has no place for: refused, not dropped
                assert "no place for" in str(e) and kind in ("ablation", "pruning", "offset", "steering", "aifs"), (kind, e)  # aifs: its shift b
                continue
        plain = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
        with torch.no_grad():
            torch.testing.assert_close(plain(tokens).logits, edited, atol=1e-4, rtol=1e-4, msg=kind)


def test_every_edit_kind_is_in_the_matrix(family_models):
    assert {e.kind for e in all_kinds(family_models["llama"]).values()} == set(KINDS)


def test_fingerprint_is_stable_across_loads_and_sources(family_dirs):
    a, b = M.load_model(family_dirs["qwen2"]), M.load_model(str(family_dirs["qwen2"]))
    assert M.fingerprint(a) == M.fingerprint(b)
    assert a.provenance.kind == "directory" and a.provenance.architecture == "Qwen2ForCausalLM"
    assert a.provenance.file_sha256 == b.provenance.file_sha256 and len(a.provenance.file_sha256) == 64
    plain = AutoModelForCausalLM.from_pretrained(family_dirs["qwen2"])
    c = M.load_model(plain, tokenizer=a.tokenizer)  # in memory, same weights
    assert M.fingerprint(c) == M.fingerprint(a) and c.provenance.kind == "in_memory" and c.recipe is None
