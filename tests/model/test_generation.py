"""Generation with edits equals plain ``transformers`` ``generate`` on the same edits baked and exported.

Greedy tokens of :func:`circuits.model.generate_ids` (a plain Hugging Face model sharing the hooked
model's weights, with its KV cache, the edits carried over as module hooks or weight forms) against an
independent reference: ``AutoModelForCausalLM.from_pretrained`` on the exported baked directory, run by
``transformers`` alone; where a family cannot store an edit's weight form, against TransformerLens'
own uncached forward with the edit's hooks.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from circuits import model as M
from circuits.editing import KINDS, EditError, apply_edit
from circuits.model.tiny import FAMILIES
from tests.kinds import all_kinds, make, rand

pytestmark = pytest.mark.equivalence
PROMPT = "The nurse said that"
NEW = 12


def _plain_generate(directory, tokens):
    plain = AutoModelForCausalLM.from_pretrained(directory).eval()
    eos = plain.generation_config.eos_token_id
    return plain.generate(
        input_ids=tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=NEW, do_sample=False,
        pad_token_id=eos if isinstance(eos, int) else 0,
    )


def _hooked_greedy(lm, tokens):
    """TransformerLens' forward with the applied hooks, no cache: one full forward per new token."""
    out = tokens
    for _ in range(NEW):
        nxt = M.run(lm, out)[:, -1].argmax(-1)
        out = torch.cat([out, nxt[:, None]], 1)
        if lm.tokenizer.eos_token_id is not None and int(nxt) == lm.tokenizer.eos_token_id:
            break
    return out


def _reference(lm, edits, tokens, tmp_path):
    """Plain transformers on the baked export, or (no weight form / no place for a bias) the hooked forward."""
    try:
        with apply_edit(lm, *edits, form="weights") if edits else _nothing():
            directory = M.save_hf_pretrained(lm, tmp_path / "baked")
        return _plain_generate(directory, tokens), "export"
    except (EditError, M.ExportError):
        with apply_edit(lm, *edits):
            return _hooked_greedy(lm, tokens), "hooks"


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _cases(lm):
    kinds = all_kinds(lm)
    s = lm.shape
    zero = make(lm, "ablation", {}, mode="zero")
    cases = {k: [kinds[k]] for k in sorted(k for k, spec in KINDS.items() if spec.has_hooks)}
    cases["ablation (zero)"] = [zero]
    cases["none"] = []
    cases["low_rank + ablation + steering"] = [kinds["low_rank"], kinds["ablation"], kinds["steering"]]
    cases["neuron_repair + scaling"] = [kinds["neuron_repair"], kinds["scaling"]]
    cases["offset on neurons"] = [make(lm, "offset", {"L0N5": rand((), seed=2) * 5}, components=(kinds["pruning"].components[0],))]
    del s
    return cases


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_with_edits_equals_plain_transformers(family_models, family, tmp_path):
    lm = family_models[family]
    tokens = M.to_tokens(lm, [PROMPT])
    for name, edits in _cases(lm).items():
        expected, how = _reference(lm, edits, tokens, tmp_path / name.replace(" ", "_"))
        with apply_edit(lm, *edits) if edits else _nothing():
            got = M.generate_ids(lm, tokens, max_new_tokens=NEW)
        assert got.tolist() == expected.tolist(), (family, name, how)


def test_generation_leaves_the_model_and_its_twin_unedited(family_models):
    lm = family_models["llama"]
    tokens = M.to_tokens(lm, [PROMPT])
    before, fp = M.generate_ids(lm, tokens, max_new_tokens=NEW), M.fingerprint(lm)
    kinds = all_kinds(lm)
    with apply_edit(lm, kinds["directional_ablation"]):  # folded into the twin's weights only
        M.generate_ids(lm, tokens, max_new_tokens=NEW)
    with apply_edit(lm, kinds["orthogonalization"]):  # a weight edit the twin shares
        M.generate_ids(lm, tokens, max_new_tokens=NEW)
    assert M.fingerprint(lm) == fp
    assert torch.equal(M.generate_ids(lm, tokens, max_new_tokens=NEW), before)


def test_sampling_is_seeded_and_leaves_the_global_random_state(family_models):
    lm = family_models["gpt2"]
    state = torch.random.get_rng_state()
    a = M.sample_continuations(lm, [PROMPT, "My neighbour is"], n=3, max_new_tokens=6, seed=7)
    b = M.sample_continuations(lm, [PROMPT, "My neighbour is"], n=3, max_new_tokens=6, seed=7)
    assert a == b and len(a) == 2 and all(len(x) == 3 for x in a)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert M.sample_continuations(lm, [PROMPT], n=3, max_new_tokens=6, seed=8) != a[:1]


def test_tl_native_models_generate_through_the_hooked_forward(tiny):
    tokens = torch.tensor([[1, 5, 9, 3]])
    got = M.generate_ids(tiny, tokens, max_new_tokens=5)
    expected = tokens
    for _ in range(5):
        expected = torch.cat([expected, M.run(tiny, expected)[:, -1].argmax(-1, keepdim=True)], 1)
    assert got.tolist() == expected.tolist()
    with pytest.raises(ValueError, match="max_new_tokens"):
        M.generate_ids(tiny, tokens, max_new_tokens=-1)


def test_the_reference_would_catch_a_decoder_that_drops_the_context(family_models):
    """The failure of TransformerLens 4.3's bridge on transformers 5.24: every step sees only the new token."""
    lm = family_models["llama"]
    tokens = M.to_tokens(lm, [PROMPT])
    good = M.generate_ids(lm, tokens, max_new_tokens=NEW)
    out = tokens
    for _ in range(NEW):
        step = out if out.shape[1] == tokens.shape[1] else out[:, -1:]
        out = torch.cat([out, M.run(lm, step)[:, -1].argmax(-1, keepdim=True)], 1)
    assert out.tolist() != good.tolist()


def _bos_variant(directory, out):
    """A copy of a saved tiny model whose tokenizer adds BOS to every text (as Llama's and Gemma's do)."""
    import shutil

    from transformers import AutoTokenizer

    shutil.copytree(directory, out)
    tok = AutoTokenizer.from_pretrained(str(out))
    tok.add_bos_token = True
    tok.save_pretrained(str(out))
    return out


@pytest.mark.parametrize("adds_bos", [False, True], ids=["tokenizer-without-bos", "tokenizer-with-bos"])
@pytest.mark.parametrize("family", FAMILIES)
def test_generated_text_equals_plain_transformers_on_the_same_text(family_dirs, family, adds_bos, tmp_path):
    """``generate(lm, TEXT)`` against ``AutoTokenizer`` + ``AutoModelForCausalLM.generate`` on ``tokenizer(TEXT)``, by text."""
    from transformers import AutoTokenizer

    directory = _bos_variant(family_dirs[family], tmp_path / "bos") if adds_bos else family_dirs[family]
    lm = M.load_model(directory)
    assert lm.tokenization.prepend_bos is adds_bos and lm.tokenization.source == "tokenizer"
    tok = AutoTokenizer.from_pretrained(str(directory))
    for text in ("The capital of France is", PROMPT):
        ids = tok(text, return_tensors="pt")["input_ids"]
        assert (ids[0, 0].item() == tok.bos_token_id) is adds_bos
        expected = _plain_generate(str(directory), ids)
        assert M.tokens_of(lm, text).tolist() == ids[0].tolist()
        assert M.generate(lm, text, max_new_tokens=NEW) == tok.decode(expected[0], skip_special_tokens=True), (family, text)
