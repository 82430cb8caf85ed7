"""The unrestricted baselines of issue 22 on a tiny model: LoRA on every layer and full fine-tuning.

Each trains with the surgical edits' loop and lowers the held-out harm of a planted task, applies and
removes bit for bit, touches exactly the matrices it names (embeddings, norms, biases frozen), saves
and loads, and has the parameter count worked out by hand from the model's shape.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from circuits import model as M
from circuits.editing import EditError, apply_edit, load_edit, save_edit
from circuits.editing.baselines import (
    FULL_FT_LR,
    LORA_ALL_LR,
    TARGETS,
    baseline_weights,
    full_ft_edit,
    lora_all_edit,
)
from circuits.editing.recipes import PRESETS, LowRankParams, WeightDeltaParams, recipe
from circuits.editing.train import TrainConfig
from circuits.evaluation.run import neutral_kl
from circuits.sites import AttnRef, MlpRef

QUICK = TrainConfig(steps=30, lr=0.05, eval_every=5, patience=10, progress=False, batch_pairs=6)
# Every matrix moving makes the KL term bite sooner than for the surgical edits: a lighter λ, and a
# smaller step for the dense deltas, so that 30 steps of the planted task lower the held-out harm.
LORA = replace(QUICK, lr=0.02, preservation=0.1)
FULL = replace(QUICK, lr=3e-3, preservation=0.1)
# d_model 32, 4 query heads and 2 key/value heads of d_head 8, gated MLP of width 64, 2 blocks
SHAPES = {"attn.q": (32, 32), "attn.k": (16, 32), "attn.v": (16, 32), "attn.o": (32, 32), "mlp.gate": (64, 32), "mlp.in": (64, 32), "mlp.out": (32, 64)}


@pytest.fixture(scope="module")
def trained(model, data):
    return {
        "lora_all": lora_all_edit(model, data, rank=4, config=LORA),
        "full_ft": full_ft_edit(model, data, config=FULL),
    }


def _val_harm(model, data, edit=None) -> float:
    """The validation harm the loop's early stopping measures, recomputed outside it."""
    from contextlib import nullcontext

    from circuits.editing.train import _harm

    n = sum(g.clean.shape[0] for g in data.val)
    with torch.no_grad(), apply_edit(model, edit) if edit is not None else nullcontext():
        return sum(float(_harm(model, g, torch.arange(g.clean.shape[0]), data.metric, "gap")) * g.clean.shape[0] for g in data.val) / n


def test_the_baselines_are_presets_of_the_registry():
    lora, full = PRESETS["lora_all"], PRESETS["full_ft"]
    assert (lora.kind, lora.form, lora.objective) == ("low_rank", "weights", "gap") and lora.params.scope == "all"
    assert (full.kind, full.form, full.objective) == ("weight_delta", "weights", "gap")
    assert lora.params.train.lr == LORA_ALL_LR and full.params.train.lr == FULL_FT_LR  # the baselines' own learning rates
    assert recipe("lora_all", rank=4).params == LowRankParams(rank=4, scope="all", train=TrainConfig(lr=LORA_ALL_LR))
    assert recipe("full_ft").params == WeightDeltaParams()


def test_every_layers_seven_projections_are_edited(model, trained):
    names = baseline_weights(model)
    assert names == [f"blocks.{layer}.{t}.weight" for layer in range(2) for t in TARGETS]
    lora, full = trained["lora_all"], trained["full_ft"]
    assert lora.kind == "low_rank" and lora.hyperparameters["baseline"] == "lora_all"
    assert set(lora.tensors) == {f"{n}.lora_{x}" for n in names for x in "AB"}
    assert full.kind == "weight_delta" and full.form == "weights" and set(full.tensors) == {f"{n}.delta" for n in names}
    assert lora.components == full.components == (AttnRef(0), MlpRef(0), AttnRef(1), MlpRef(1))
    assert all(full.tensors[f"{n}.delta"].abs().sum() > 0 for n in names)  # every matrix trained
    assert all(lora.tensors[f"{n}.lora_B"].abs().sum() > 0 for n in names)


def test_parameter_counts_by_hand(trained):
    # LoRA: r·(in + out) per matrix; full fine-tuning: in·out per matrix; 2 blocks
    lora = 2 * sum(4 * (o + i) for o, i in SHAPES.values())
    full = 2 * sum(o * i for o, i in SHAPES.values())
    assert lora == 2 * 4 * (64 + 48 + 48 + 64 + 96 + 96 + 96) == 4096
    assert full == 2 * (1024 + 512 + 512 + 1024 + 2048 + 2048 + 2048) == 18432
    assert trained["lora_all"].n_parameters == lora and trained["full_ft"].n_parameters == full


@pytest.mark.parametrize("kind", ["lora_all", "full_ft"])
def test_training_lowers_the_held_out_harm_and_leaves_the_model_unchanged(model, data, trained, tokens, kind):
    edit = trained[kind]
    assert edit.training is not None and edit.training["best_step"] > 0
    assert edit.training["val_harm_after"] < 0.5 * edit.training["val_harm_before"]
    assert _val_harm(model, data, edit) == pytest.approx(edit.training["val_harm_after"], rel=1e-3, abs=1e-5)
    assert _val_harm(model, data, edit) < _val_harm(model, data)


@pytest.mark.parametrize("kind", ["lora_all", "full_ft"])
def test_apply_changes_only_the_named_weights_and_remove_restores_bit_for_bit(model, trained, tokens, kind):
    edit = trained[kind]
    original, fp = model(tokens).clone(), M.fingerprint(model)
    state = model.core.state_dict()  # applying replaces parameters, it does not write into these
    with apply_edit(model, edit):
        edited = model(tokens).clone()
        changed = {k for k, v in model.core.state_dict().items() if not torch.equal(v, state[k])}
    assert not torch.allclose(edited, original, atol=1e-4)
    # the bridge lists each tensor under several names: count tensors, not names
    assert len({state[k].data_ptr() for k in changed}) == len(baseline_weights(model))
    assert all(k.endswith("weight") and ("attn" in k or "mlp" in k) and "norm" not in k and "ln" not in k for k in changed), changed
    assert torch.equal(model(tokens), original) and M.fingerprint(model) == fp
    with apply_edit(model, edit, form="weights"):  # already weights: baking is the same function
        assert torch.equal(model(tokens), edited)
    assert torch.equal(model(tokens), original) and M.fingerprint(model) == fp


@pytest.mark.parametrize("kind", ["lora_all", "full_ft"])
def test_manifest_round_trip(model, trained, tokens, tmp_path, kind):
    edit = trained[kind]
    loaded = load_edit(save_edit(edit, tmp_path / f"{kind}.json"))
    assert (loaded.kind, loaded.form, loaded.components, loaded.hyperparameters) == (edit.kind, edit.form, edit.components, edit.hyperparameters)
    assert loaded.training == edit.training and loaded.n_parameters == edit.n_parameters
    assert all(torch.equal(loaded.tensors[k], edit.tensors[k]) for k in edit.tensors)
    with apply_edit(model, edit):
        expected = model(tokens).clone()
    with apply_edit(model, loaded):
        assert torch.equal(model(tokens), expected)


def test_the_capability_measure_of_evaluate_takes_the_baselines(model, trained):
    windows = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(4))
    for edit in trained.values():
        kl = neutral_kl(model, [edit], windows)
        assert kl.shape == (3,) and (kl >= 0).all() and kl.max() > 0


def test_training_is_seeded(model, data, trained):
    again = lora_all_edit(model, data, rank=4, config=LORA)
    assert all(torch.equal(again.tensors[k], trained["lora_all"].tensors[k]) for k in again.tensors)
    other = lora_all_edit(model, data, rank=4, config=replace(LORA, steps=1, seed=1))
    assert not torch.equal(other.tensors["blocks.0.attn.q.weight.lora_A"], trained["lora_all"].tensors["blocks.0.attn.q.weight.lora_A"])


def test_the_weights_preservation_term_is_refused(model, data):
    for build in (lora_all_edit, full_ft_edit):
        with pytest.raises(EditError, match="KL preservation"):
            build(model, data, config=replace(QUICK, preservation_kind="weights"))


def test_build_edit_trains_the_baselines_without_selecting_from_the_atlas(model, data, monkeypatch):
    import circuits.editing.recipes as R
    from circuits.atlas.schema import Atlas
    from circuits.suites import Suite

    monkeypatch.setattr(R, "check_atlas", lambda m, a: None)
    monkeypatch.setattr(R.TrainingData, "from_suite", classmethod(lambda cls, m, s: data))
    monkeypatch.setattr(R, "select_components", lambda *a, **k: pytest.fail("the baselines select nothing from the atlas"))
    atlas, suite = Atlas.__new__(Atlas), Suite.__new__(Suite)  # never read: the fingerprint check and data are patched
    full = R.build_edit(model, atlas, suite, R.recipe("full_ft").with_options(**{**FULL.__dict__, "steps": 5}))
    lora = R.build_edit(model, atlas, suite, R.recipe("lora_all", rank=2).with_options(**{**LORA.__dict__, "steps": 5}))
    assert full.kind == "weight_delta" and full.hyperparameters["baseline"] == "full_ft" and full.objective == "gap"
    assert lora.kind == "low_rank" and lora.hyperparameters["rank"] == 2 and lora.n_parameters == 4096 // 2


def test_every_projection_of_a_hugging_face_llama_trains():
    """The bridged Hugging Face path (SmolLM2's): each of the 7 × n_layers matrices gets a gradient."""
    from circuits.editing.apply import attach_for_training
    from circuits.model.tiny import tiny_hf_model
    from tests.kinds import make

    lm = tiny_hf_model("llama", seed=0)
    names = baseline_weights(lm)
    assert len(names) == 7 * lm.shape.n_layers
    live = {f"{n}.delta": torch.zeros(M.read_weight(lm, n).shape, requires_grad=True) for n in names}
    tokens = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    with M.frozen_parameters(lm):
        remove = attach_for_training(lm, make(lm, "weight_delta", live, components=(AttnRef(0),)))
        try:
            lm(tokens).float().log_softmax(-1)[..., 7].mean().backward()
        finally:
            remove()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in live.values())
