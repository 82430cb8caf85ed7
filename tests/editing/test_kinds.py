"""Every edit kind on a tiny model: effect, equivalences, save → load, remove → original, composition."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from circuits import model as M
from circuits.editing import (
    KINDS,
    Edit,
    EditError,
    apply_edit,
    load_edit,
    save_edit,
)
from circuits.editing.train import (
    TrainConfig,
    low_rank_edit,
    neuron_repair_edit,
    offset_edit,
)
from circuits.sites import HeadRef, MlpRef, NeuronRef, ResidRef
from tests.kinds import HEADS, NEURONS, all_kinds, make
from tests.kinds import rand as _rand

QUICK = TrainConfig(steps=30, lr=0.05, eval_every=5, patience=10, progress=False, batch_pairs=6)


def test_every_kind_and_preset_is_covered(model):
    from circuits.editing.recipes import PRESETS

    kinds = all_kinds(model)
    assert set(kinds) == set(KINDS) | set(PRESETS) and {e.kind for e in kinds.values()} == set(KINDS)
    # "baked" is a form and invariance or CARE an objective, not kinds of their own: a preset's edit is its kind in its form
    for name, recipe in PRESETS.items():
        assert (kinds[name].kind, kinds[name].form) == (recipe.kind, recipe.form), name
    assert kinds["invariance"].objective == "invariance" and kinds["care"].objective == "care"


@pytest.mark.parametrize("kind", list(KINDS))
def test_apply_changes_outputs_and_remove_restores_bit_for_bit(model, tokens, kind):
    edit = all_kinds(model)[kind]
    original, fp = model(tokens).clone(), M.fingerprint(model)
    with apply_edit(model, edit):
        edited = model(tokens).clone()
    assert not torch.allclose(edited, original, atol=1e-4)
    assert torch.equal(model(tokens), original)
    assert M.fingerprint(model) == fp
    handle = apply_edit(model, edit)  # permanent until removed
    assert torch.equal(model(tokens), edited)
    handle.remove()
    assert torch.equal(model(tokens), original)


@pytest.mark.parametrize("kind", list(KINDS))
def test_save_load_gives_identical_outputs(model, tokens, kind, tmp_path):
    edit = all_kinds(model)[kind]
    loaded = load_edit(save_edit(edit, tmp_path / f"{kind}.json"))
    assert (loaded.kind, loaded.form, loaded.objective, loaded.components) == (edit.kind, edit.form, edit.objective, edit.components)
    with apply_edit(model, edit):
        a = model(tokens).clone()
    with apply_edit(model, loaded):
        b = model(tokens)
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "ablation"] + ["ablation"])
def test_baked_form_equals_applied_form(model, tokens, kind):
    edit = all_kinds(model)[kind]
    with apply_edit(model, edit):
        hooked = model(tokens).clone()
    with apply_edit(model, edit, form="weights"):
        baked = model(tokens).clone()
        assert not any(p.fwd_hooks for p in model.bridge.hook_dict.values())
    torch.testing.assert_close(baked, hooked, atol=1e-4, rtol=1e-4)


def test_zero_mean_and_resample_ablation_set_the_activation(model, tokens):
    name = HeadRef(1, 0).hook_name
    means = {str(h): _rand(8, seed=i) for i, h in enumerate(HEADS)}
    bank = {str(h): _rand(5, 8, seed=i + 3) for i, h in enumerate(HEADS)}
    for mode, tensors in (("zero", {}), ("mean", means), ("resample", bank)):
        with apply_edit(model, make(model, "ablation", tensors, mode=mode, seed=1)):
            _, cache = model.bridge.run_with_cache(tokens)
        z = cache[name][:, :, 2]
        if mode == "zero":
            assert torch.equal(z, torch.zeros_like(z))
        elif mode == "mean":
            assert torch.equal(z, means["L1H2"].expand_as(z))
        else:  # each prompt gets one row of the bank at every position
            for b in range(z.shape[0]):
                assert any(torch.equal(z[b], row.expand_as(z[b])) for row in bank["L1H2"])


def test_resample_ablation_cannot_be_baked(model):
    edit = make(model, "ablation", {str(h): _rand(5, 8) for h in HEADS}, mode="resample")
    with pytest.raises(EditError, match="resample"):
        apply_edit(model, edit, form="weights")
    with pytest.raises(EditError, match="resample ablation is random per pass"):  # nor stored as a weight-form edit
        make(model, "ablation", {str(h): _rand(5, 8) for h in HEADS}, mode="resample", form="weights")


def test_a_kind_is_applied_in_its_forms_only(model):
    with pytest.raises(EditError, match="applied as weights, not 'hooks'"):
        make(model, "low_rank", all_kinds(model)["low_rank"].tensors, form="hooks", rank=2)
    assert make(model, "scaling", {}, alpha=0.5).form == "hooks"  # a kind's first form is its default
    # apply_edit refuses an unknown form (EditError); under the tests' runtime type checker its annotation refuses it first
    with pytest.raises(Exception, match="form"):
        apply_edit(model, all_kinds(model)["scaling"], form="baked")  # type: ignore[arg-type]


def test_form_hooks_applies_weight_form_edits_as_hooks_and_keeps_weight_only_kinds_as_weights(model, tokens):
    k = all_kinds(model)
    fp = M.fingerprint(model)
    with apply_edit(model, k["pruning"]):  # its own form: weights
        assert M.fingerprint(model) != fp
        own = model(tokens).clone()
    with apply_edit(model, k["pruning"], form="hooks"):
        assert M.fingerprint(model) == fp  # as hooks: the weights are untouched
        torch.testing.assert_close(model(tokens), own, atol=1e-4, rtol=1e-4)
    with apply_edit(model, k["low_rank"], form="hooks"):  # no hook form: applied as weights
        assert M.fingerprint(model) != fp


def test_scaling_by_zero_equals_zero_ablation_and_neuron_repair_scales_columns(model, tokens):
    with apply_edit(model, make(model, "scaling", {}, alpha=0.0)):
        scaled = model(tokens).clone()
    with apply_edit(model, make(model, "ablation", {}, mode="zero")):
        zeroed = model(tokens).clone()
    torch.testing.assert_close(scaled, zeroed)
    repair = make(model, "neuron_repair", {str(n): torch.tensor(0.0) for n in NEURONS}, components=NEURONS)
    with apply_edit(model, repair):
        repaired = model(tokens).clone()
    with apply_edit(model, make(model, "ablation", {}, components=NEURONS, mode="zero")):
        ablated = model(tokens).clone()
    torch.testing.assert_close(repaired, ablated, atol=1e-5, rtol=1e-5)


def test_directional_ablation_leaves_no_component_along_the_direction(model, tokens):
    edit = all_kinds(model)["orthogonalization"]
    r = edit.tensors["direction"]
    names = [ResidRef(layer, None, s).hook_name for layer in range(2) for s in ("resid_pre", "resid_mid")]
    # The hook form ablates at resid_pre/resid_mid of every block and after the last block, so an
    # intermediate hook_resid_post (read before the next block's resid_pre hook) still has the component.
    for e, extra in ((edit, ["blocks.0.hook_resid_post"]), (all_kinds(model)["directional_ablation"], [])):
        with apply_edit(model, e):
            _, cache = model.bridge.run_with_cache(tokens)
        for n in names + extra + ["blocks.1.hook_resid_post"]:
            assert (cache[n] @ r).abs().max() < 1e-4, (e.kind, n)


def test_low_rank_edit_equals_the_same_full_matrix(model, tokens):
    edit = all_kinds(model)["low_rank"]
    name = "blocks.1.attn.o.weight"
    a, b = edit.tensors[f"{name}.lora_A"], edit.tensors[f"{name}.lora_B"]
    w = M.read_weight(model, name)
    full = w + 0.5 * b @ a
    assert torch.linalg.matrix_rank(full - w) <= 2
    restore = M.replace_weight(model, name, full)
    try:
        expected = model(tokens).clone()
    finally:
        restore()
    with apply_edit(model, edit):
        torch.testing.assert_close(model(tokens), expected, atol=1e-5, rtol=1e-5)


def test_composition_applies_in_the_stated_order(model, tokens):
    kinds = all_kinds(model)
    lr, ortho = kinds["low_rank"], kinds["orthogonalization"]
    with apply_edit(model, lr, ortho):
        a = model(tokens).clone()
        w_a = M.read_weight(model, "blocks.1.attn.o.weight").clone()
    with apply_edit(model, ortho, lr):
        b = model(tokens).clone()
    assert not torch.allclose(a, b, atol=1e-4)  # order matters ...
    r = ortho.tensors["direction"]
    assert (r @ w_a).abs().max() < 1e-5  # ... and projecting last removes r from the low-rank-edited W_O
    with apply_edit(model, lr):
        with apply_edit(model, ortho, check_fingerprint=False):
            torch.testing.assert_close(model(tokens), a)


def test_a_model_with_another_fingerprint_is_refused(model):
    edit = Edit(**{**all_kinds(model)["offset"].__dict__, "model_fingerprint": "sha256:" + "ab" * 32})
    with pytest.raises(EditError, match="refusing to apply"):
        apply_edit(model, edit)


def test_an_edit_that_does_not_fit_is_refused_and_nothing_stays_applied(model, tokens):
    original = model(tokens).clone()
    bad = make(model, "ablation", {}, components=(HeadRef(0, 0), HeadRef(5, 0)), mode="zero")
    with pytest.raises(EditError, match="L5H0"):
        apply_edit(model, all_kinds(model)["low_rank"], bad)
    assert torch.equal(model(tokens), original)


def test_a_manifest_that_is_not_json_gets_a_clear_error(model, tmp_path):
    path = save_edit(all_kinds(model)["ablation"], tmp_path / "e.json")
    path.write_text("{not json")
    with pytest.raises(EditError, match="not valid JSON"):
        load_edit(path)


def _val_harm(model, data, edit, *, applied=True):
    """The validation objective ``edit`` was trained on (squared gap, or symmetric KL for invariance), over the
    validation pairs as the training loop's early stopping measures it; on the unedited model if not ``applied``."""
    from contextlib import nullcontext

    from circuits.editing.train import _harm

    objective = "invariance" if edit.objective == "invariance" else "gap"
    n = sum(g.clean.shape[0] for g in data.val)
    with torch.no_grad(), apply_edit(model, edit) if applied else nullcontext():
        return sum(float(_harm(model, g, torch.arange(g.clean.shape[0]), data.metric, objective)) * g.clean.shape[0] for g in data.val) / n


@pytest.mark.parametrize(
    "train",
    [
        lambda m, d: offset_edit(m, HEADS + NEURONS, d, config=QUICK),
        lambda m, d: low_rank_edit(m, HEADS + (MlpRef(1),), d, rank=2, config=QUICK),
        lambda m, d: low_rank_edit(m, (MlpRef(0), MlpRef(1)), d, rank=2, objective="invariance", config=replace(QUICK, preservation=0.1, lr=0.2)),
        lambda m, d: neuron_repair_edit(m, tuple(NeuronRef(1, n) for n in range(64)), d, config=replace(QUICK, lr=0.2)),
    ],
    ids=["offset", "low_rank", "invariance", "neuron_repair"],
)
def test_trained_edits_reduce_the_held_out_harm_and_leave_the_model_unchanged(model, data, tokens, train):
    original, fp = model(tokens).clone(), M.fingerprint(model)
    edit = train(model, data)
    assert torch.equal(model(tokens), original) and M.fingerprint(model) == fp
    assert edit.training is not None and edit.training["best_step"] > 0
    assert edit.objective in ("gap", "invariance") and "objective" not in edit.hyperparameters
    assert edit.training["val_harm_after"] < edit.training["val_harm_before"]
    # Recomputed independently of the training loop, on the objective each edit was trained on.
    assert _val_harm(model, data, edit) == pytest.approx(edit.training["val_harm_after"], rel=1e-3, abs=1e-5)
    assert _val_harm(model, data, edit) < _val_harm(model, data, edit, applied=False)


def test_low_rank_training_touches_only_the_flagged_heads_columns(model, data):
    edit = low_rank_edit(model, (HeadRef(1, 2),), data, rank=2, config=QUICK)
    a = edit.tensors["blocks.1.attn.o.weight.lora_A"]
    outside = torch.ones(a.shape[1], dtype=torch.bool)
    outside[16:24] = False
    assert torch.equal(a[:, outside], torch.zeros_like(a[:, outside]))
    assert a[:, ~outside].abs().sum() > 0


def test_training_is_reproducible_with_the_same_seed(model, data):
    a = offset_edit(model, HEADS, data, config=QUICK)
    b = offset_edit(model, HEADS, data, config=QUICK)
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


def test_baking_a_mixed_composition_computes_the_same_function(model, tokens):
    k = all_kinds(model)
    offset = make(model, "offset", {str(n): _rand((), seed=i) for i, n in enumerate(NEURONS)}, components=NEURONS)
    edits = (k["ablation"], k["low_rank"], k["steering"], k["directional_ablation"], k["invariance"], offset, k["scaling"].__class__(**{**k["scaling"].__dict__, "components": (HeadRef(1, 3),)}))
    with apply_edit(model, *edits):
        hooked = model(tokens).clone()
    with apply_edit(model, *edits, form="weights"):
        baked = model(tokens).clone()
    torch.testing.assert_close(baked, hooked, atol=1e-4, rtol=1e-4)


def test_compositions_without_a_weight_form_are_refused_when_baking(model, tokens):
    k = all_kinds(model)
    original = model(tokens).clone()
    aifs_on_ablated = make(model, "ablation", {}, components=k["aifs"].components[:1], mode="zero")
    for edits in ((k["ablation"], k["offset"]), (k["directional_ablation"], k["steering"]), (aifs_on_ablated, k["aifs"]), (k["neuron_repair"], k["care"])):
        with apply_edit(model, *edits):  # as hooks they compose
            pass
        with pytest.raises(EditError, match="cannot bake"):
            apply_edit(model, *edits, form="weights")
        assert torch.equal(model(tokens), original)


def test_the_bake_rules_are_the_kinds_own():
    """Which compositions baking refuses is declared by each kind (BakeRules), not by kind names in apply.py."""
    import inspect

    from circuits.editing import apply

    source = inspect.getsource(apply._check_bakeable)
    assert not any(f'"{k}"' in source for k in KINDS)
    assert {k for k, s in KINDS.items() if s.bake.owns_columns} == {"ablation", "scaling", "offset", "neuron_repair", "aifs"}
    assert [k for k, s in KINDS.items() if s.bake.projects_residual] == ["directional_ablation"]
    assert [k for k, s in KINDS.items() if s.bake.adds_to_residual] == ["steering"]


@pytest.mark.parametrize("kind", ["steering", "directional_ablation"])
def test_residual_edits_bake_exactly_on_an_attention_only_model(tokens, kind):
    model = M.tiny_model(attn_only=True, n_layers=2, seed=5)
    v = _rand(32, seed=6)
    edit = make(model, kind, {"vector": v} if kind == "steering" else {"direction": v / v.norm()}, components=(ResidRef(1, None),))
    with apply_edit(model, edit):
        hooked = model(tokens).clone()
    with apply_edit(model, edit, form="weights"):
        baked = model(tokens).clone()
    assert not torch.allclose(hooked, model(tokens), atol=1e-4)
    torch.testing.assert_close(baked, hooked, atol=1e-4, rtol=1e-4)


def test_validation_holds_out_whole_sentence_frames_when_pairs_share_one_group():
    """Identity-harm pairs are grouped by bias type; validation then holds out their template ids, never part of one."""
    from circuits.editing.train import split_by_template
    from circuits.probing.patching import PairError
    from circuits.suites import PromptPair

    def pair(i: int, frame: str, group: str = "religion") -> PromptPair:
        return PromptPair(clean=f"a{i}", corrupted=f"b{i}", answer=" x", wrong_answer=" x", group=group, metadata={"template_id": frame})

    pairs = [pair(i, f"t{i % 4}") for i in range(12)]
    train, val = split_by_template(pairs, 0.25)
    assert {p.metadata["template_id"] for p in val} == {"t3"} and len(train) + len(val) == 12
    assert not {p.metadata["template_id"] for p in train} & {p.metadata["template_id"] for p in val}
    with pytest.raises(PairError, match="at least 2 templates"):
        split_by_template([pair(i, "t0") for i in range(4)], 0.25)
    # with two or more groups the group is the template, as before
    mixed = [pair(i, "same", group=f"g{i % 2}") for i in range(4)]
    assert {p.group for p in split_by_template(mixed, 0.25)[1]} == {"g1"}
