"""The other shipped real models (Gemma 3 270M, Qwen2.5-Coder-0.5B-Instruct), against independent references.

Slow tier (``make test`` runs it after ``make models``): on each model, the bridge's logits equal plain
transformers reading the same GGUF file, on the same text; head (every head of three layers) and MLP activation patching equal
TransformerLens 4.3's patching functions; ``circuits generate`` equals plain ``generate`` token for token,
unedited and edited (the edited reference: plain transformers on the exported, baked edits); and the
export reloads with the edited logits.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from transformer_lens import patching
from transformers import AutoModelForCausalLM, AutoTokenizer

from circuits import model as M
from circuits.editing import EditError, apply_edit, save_edit
from circuits.editing.export import export_hf
from circuits.sites import all_heads, all_mlps
from tests.kinds import all_kinds
from tests.model.tl_reference import assert_patching_matches, mlp_sweep
from tests.test_end_to_end import _cli_generations

pytestmark = [pytest.mark.slow, pytest.mark.real_model, pytest.mark.equivalence]
NAMES = ["gemma-3-270m", "qwen2.5-coder-0.5b-instruct"]
PROMPTS = ["The capital of France is", "The nurse said that"]
#: Edits tried for generation and export; those with no weight form on a family (Gemma's post-sublayer
#: norms: directional ablation of the residual) is refused there by design (tests/model/test_families.py)
#: and left out here.
TRIED = ("low_rank", "scaling", "directional_ablation")


@pytest.fixture(scope="module", params=NAMES)
def shipped(request):
    """``(lm, tokenizer, plain)``: the hooked model by name, and the GGUF file read by transformers alone."""
    spec = M.MODELS[request.param]
    gguf = M.gguf_path(spec)  # fails (not skips) without `make models`
    lm = M.load_model(request.param)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    plain = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    yield lm, tok, plain
    del lm, plain


def test_logits_equal_plain_transformers_on_the_same_text(shipped):
    lm, tok, plain = shipped
    for text in PROMPTS:
        ids = tok(text, return_tensors="pt")["input_ids"]
        assert M.to_tokens(lm, [text]).tolist() == ids.tolist()  # the model's own tokenization policy
        with torch.no_grad():
            want = plain(ids).logits
        torch.testing.assert_close(M.run(lm, ids), want, atol=2e-3, rtol=1e-4)


def test_head_and_mlp_patching_equal_transformer_lens(shipped):
    lm, tok, _ = shipped
    clean = M.to_tokens(lm, ["The nurse said that she", "The nurse said that he"])
    corrupted = M.to_tokens(lm, ["The pilot said that she", "The pilot said that he"])
    if clean.shape != corrupted.shape:  # the occupation words tokenise to different lengths: use ids directly
        corrupted = clean.clone()
        corrupted[:, 1] = clean[:, 1] + 1
    a, b = tok.encode(" she", add_special_tokens=False)[0], tok.encode(" he", add_special_tokens=False)[0]

    def metric(logits):
        return logits[:, -1, a] - logits[:, -1, b]

    s = lm.shape
    cache = lm.bridge.run_with_cache(clean)[1]
    layers = sorted({0, s.n_layers // 2, s.n_layers - 1})  # every head of three layers: first, middle, last
    heads = [h for h in all_heads(s.n_layers, s.n_heads) if h.layer in layers]
    index = pd.DataFrame({"layer": [h.layer for h in heads], "head_index": [h.head for h in heads]})
    sweeps = [
        (heads, lambda m: patching.generic_activation_patch(
            lm.bridge, corrupted, cache, m, patch_setter=patching.layer_head_vector_patch_setter, activation_name="z", index_df=index)),
        (all_mlps(s.n_layers), mlp_sweep(lm, corrupted, cache)),
    ]
    assert_patching_matches(lm, clean, corrupted, metric, sweeps, atol=1e-3)


def test_generation_and_export_equal_plain_transformers_edited_and_not(shipped, tmp_path):
    lm, tok, plain = shipped
    kinds = all_kinds(lm)
    edits = []
    for k in TRIED:
        try:
            with apply_edit(lm, kinds[k], form="weights"):
                pass
        except EditError as e:
            assert "no weight form" in str(e), (k, e)
            continue
        edits.append(kinds[k])
    assert len(edits) >= 2, [e.kind for e in edits]
    paths = [save_edit(e, tmp_path / f"{e.kind}.json") for e in edits]
    baked = AutoModelForCausalLM.from_pretrained(str(export_hf(lm, edits, tmp_path / "baked"))).eval()
    ids = tok(PROMPTS[0], return_tensors="pt")["input_ids"]
    with apply_edit(lm, *edits):
        edited_logits = M.run(lm, ids)
    with torch.no_grad():
        torch.testing.assert_close(baked(ids).logits, edited_logits, atol=2e-3, rtol=1e-4)
        assert (edited_logits - plain(ids).logits).abs().max() > 1e-2  # the edits change the model
    args = ["generate", "--model", lm.provenance.source, "--max-new-tokens", "10"]
    for p in PROMPTS:
        args += ["--prompt", p]
    for path in paths:
        args += ["--edit", str(path)]
    got = _cli_generations(args[1:])
    for p in PROMPTS:
        ids = tok(p, return_tensors="pt")["input_ids"]
        for which, reference in ((0, plain), (1, baked)):
            want = reference.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False)
            assert got[p][which] == tok.decode(want[0], skip_special_tokens=True), (p, which, got[p])
