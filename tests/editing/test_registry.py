"""The one kind registry: every (kind, objective) builds through ``build_edit`` and ``circuits edit`` on a tiny
model; recipes are validated before any work; the CLI choices and the docs are the registry's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from circuits import model as M
from circuits.atlas.build import behaviour_from_patching
from circuits.atlas.schema import Atlas, ModelInfo, Provenance
from circuits.editing import KINDS, EditError, apply_edit, load_edit, save_edit
from circuits.editing.aifs import labelled_prompts
from circuits.editing.recipes import (
    METHODS,
    OBJECTIVES,
    PRESETS,
    EditRecipe,
    ScalingParams,
    build_edit,
    methods_of,
    recipe,
)
from circuits.editing.registry_docs import kinds_markdown
from circuits.probing.effects import Effects, Method
from circuits.sites import HeadRef, MlpRef, ResidRef
from circuits.suites import bind_model, load_suite

ROOT = Path(__file__).resolve().parents[2]
#: Small settings per method, so that every method builds in seconds on a tiny model.
QUICK_TRAIN = {"steps": 2, "eval_every": 1, "patience": 1, "progress": False}
QUICK = {
    "care": {"candidates": 4, "max_pairs": 6, "pop_size": 4, "generations": 2, "n_values": 2, "k": 2, "progress": False},
    "aifs": {"max_pairs": 6, "epochs": 1, "ig_steps": 2, "progress": False},
}


def tiny_atlas(lm: M.HookedLM, suite) -> Atlas:  # noqa: ANN001
    """An atlas of ``lm`` for gender-occupation flagging L1H2, L0H1, L1H0 and both MLP layers (effects by hand)."""
    comps = (HeadRef(1, 2), HeadRef(0, 1), HeadRef(1, 0), MlpRef(0), MlpRef(1), HeadRef(0, 3))
    effects = torch.tensor([[0.9, 0.8, 1.0, 0.85], [0.6, 0.7, 0.5, 0.65], [0.3, 0.35, 0.4, 0.3], [0.5, 0.45, 0.55, 0.5], [0.4, 0.42, 0.38, 0.41], [0.0, 0.01, -0.02, 0.01]])
    result = Effects(comps, effects, "normalised", Method("activation_patching"), clean_metric=torch.ones(4), corrupted_metric=torch.zeros(4))
    b = behaviour_from_patching(result, suite=suite, split="build", metric="logit_diff", threshold=0.05, seed=0)
    s = lm.shape
    info = ModelInfo(name=lm.name, fingerprint=M.fingerprint(lm), n_layers=s.n_layers, n_heads=s.n_heads, d_model=s.d_model, d_mlp=s.d_mlp,
                     tokenization=lm.tokenization.as_dict())
    return Atlas(model=info, provenance=Provenance(packages={"torch": "x"}, command="test", seeds=[0]), behaviours=[b])


@pytest.fixture(scope="module")
def setting():
    from circuits.model.tiny import tiny_hf_model

    lm = tiny_hf_model("llama", seed=0)
    suite = bind_model(load_suite("gender-occupation"), lm)
    return lm, suite, tiny_atlas(lm, suite)


def _quick(r: EditRecipe) -> EditRecipe:
    small = QUICK.get(r.objective, QUICK_TRAIN)  # type: ignore[arg-type]
    return r.with_options(**{k: v for k, v in small.items() if k in r.options()})


# --- the registry -----------------------------------------------------------------------------------


def test_every_kind_is_built_by_the_registry_and_presets_are_its_combinations():
    assert {m.kind for m in METHODS} == set(KINDS)
    for kind, spec in KINDS.items():
        r = EditRecipe(kind)  # the defaults: the kind's first form and first objective
        assert (r.form, r.objective) == (spec.forms[0], methods_of(kind)[0].objective)
        assert spec.summary and spec.source and spec.tensors
    triples = {n: (r.kind, r.form, r.objective) for n, r in PRESETS.items()}
    assert triples == {
        "pruning": ("ablation", "weights", "reference"),
        "orthogonalization": ("directional_ablation", "weights", "mean_difference"),
        "invariance": ("low_rank", "weights", "invariance"),
        "lora_all": ("low_rank", "weights", "gap"),
        "full_ft": ("weight_delta", "weights", "gap"),
        "care": ("neuron_repair", "hooks", "care"),
    }
    assert [m.objective for m in methods_of("neuron_repair")] == ["gap", "invariance", "care"]
    assert set(OBJECTIVES) == {m.objective for m in METHODS}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: EditRecipe("pruning"), "unknown edit kind 'pruning'"),
        (lambda: EditRecipe("ablation", objective="care"), "not built by objective 'care'; its objectives: reference"),
        (lambda: EditRecipe("low_rank", form="hooks"), "applied as weights, not 'hooks'"),
        (lambda: EditRecipe("ablation", form="weights").with_options(mode="resample"), "resample ablation is random per pass"),
        (lambda: EditRecipe("ablation", params=ScalingParams()), "takes AblationParams"),
        (lambda: recipe("ablation", rank=3), "rank does not apply to ablation \\(hooks, reference\\); its options: k, granularity, mode, seed"),
        (lambda: recipe("ablation", k=0), "k must be an integer >= 1"),
        (lambda: recipe("ablation", mode="bogus"), "mode must be one of zero, mean, resample"),
        (lambda: recipe("scaling", alpha=float("nan")), "alpha must be a finite number"),
        (lambda: recipe("offset", lr=0.0), "lr must be > 0"),
        (lambda: recipe("steering", layer=-1), "layer must be an integer >= 0"),
        (lambda: recipe("pruning", form="hooks"), "preset 'pruning' fixes the kind, form and objective"),
        (lambda: recipe("nothing"), "unknown edit kind or preset"),
        (lambda: recipe("ablation", granularity="layer"), "granularity must be one of head, neuron"),
    ],
)
def test_a_bad_recipe_is_refused_before_any_work(make, message):
    with pytest.raises(EditError, match=message):
        make()


def test_options_are_set_by_name_in_the_parameters_and_the_settings_they_nest():
    r = recipe("low_rank", k=5, rank=2, steps=7, lr=0.5)
    assert (r.params.k, r.params.rank, r.params.train.steps, r.params.train.lr) == (5, 2, 7, 0.5)
    care = recipe("care", candidates=8, pop_size=6, seed=3)
    assert (care.params.candidates, care.params.config.pop_size, care.params.config.seed) == (8, 6, 3)
    parsed = care.with_assignments(["bounds=0, 1.2", "n_partitions=none", "progress=false", "accuracy_weight=0.25"]).params.config
    assert (parsed.bounds, parsed.n_partitions, parsed.progress, parsed.accuracy_weight) == ((0.0, 1.2), None, False, 0.25)
    for bad, message in ((["pop_size"], "NAME=VALUE"), (["pop_size=x"], "cannot read 'x' as int"), (["rank=2"], "rank does not apply")):
        with pytest.raises(EditError, match=message):
            care.with_assignments(bad)


def test_the_docs_are_generated_from_the_registry():
    doc = (ROOT / "docs" / "edit_kinds.md").read_text(encoding="utf-8")
    assert doc == kinds_markdown(), "docs/edit_kinds.md is out of date: python scripts/write_kinds_doc.py"
    assert all(f"| `{k}` |" in doc for k in KINDS) and all(f"| `{p}` |" in doc for p in PRESETS)


def test_the_cli_lists_the_registry():
    from circuits.cli import app

    r = CliRunner().invoke(app, ["edit", "--help"], terminal_width=200)
    assert r.exit_code == 0
    assert f"--kind <{'|'.join(KINDS)}>" in r.stdout and f"--preset <{'|'.join(PRESETS)}>" in r.stdout
    assert f"--objective <{'|'.join(OBJECTIVES)}>" in r.stdout
    for kind in KINDS:
        assert f"{kind}/{methods_of(kind)[0].objective}" in r.stdout  # its options are listed


# --- building every method --------------------------------------------------------------------------


@pytest.mark.parametrize("m", METHODS, ids=[f"{m.kind}/{m.objective}" for m in METHODS])
def test_every_method_builds_through_build_edit(setting, m, tmp_path):
    lm, suite, atlas = setting
    r = _quick(EditRecipe(m.kind, objective=m.objective))
    edit = build_edit(lm, atlas, suite, r)
    assert (edit.kind, edit.form, edit.objective) == (r.kind, r.form, r.objective)
    assert edit.suite["name"] == "gender-occupation" and edit.tokenization == lm.tokenization.as_dict()
    loaded = load_edit(save_edit(edit, tmp_path / "e.json"))
    assert (loaded.kind, loaded.form, loaded.objective) == (edit.kind, edit.form, edit.objective)
    tokens = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    with apply_edit(lm, loaded):
        lm(tokens)


def test_the_recipe_chooses_the_form_of_any_method(setting):
    lm, suite, atlas = setting
    pruning = build_edit(lm, atlas, suite, recipe("pruning"))
    assert (pruning.kind, pruning.form, pruning.objective) == ("ablation", "weights", "reference")
    offset = build_edit(lm, atlas, suite, _quick(EditRecipe("offset", form="weights", objective="invariance")))
    assert (offset.form, offset.objective) == ("weights", "invariance")
    hooks = build_edit(lm, atlas, suite, _quick(EditRecipe("offset", objective="invariance")))
    assert all(torch.equal(offset.tensors[k], hooks.tensors[k]) for k in hooks.tensors)  # the form does not change what is built


def test_care_and_aifs_build_from_the_atlas(setting):
    lm, suite, atlas = setting
    care = build_edit(lm, atlas, suite, _quick(recipe("care")))
    assert care.kind == "neuron_repair" and care.objective == "care" and care.hyperparameters["optimiser"] == "pso"
    assert len(care.components) == 2 and all(c.layer in (0, 1) for c in care.components)  # neurons of the flagged MLP layers
    assert {"unfairness_before", "accuracy_after"} <= set(care.evaluation or {}) and care.suite["n_pairs"] == 6
    aifs = build_edit(lm, atlas, suite, _quick(recipe("aifs")))
    assert aifs.components == (ResidRef(1, None),)  # the residual stream entering the strongest flagged head's layer
    heads = build_edit(lm, atlas, suite, _quick(recipe("aifs", site="heads", k=4)))
    assert heads.components == (HeadRef(1, 2), HeadRef(1, 0))  # the flagged heads of that layer, strongest first
    assert heads.tensors["gate"].shape == (2 * lm.shape.d_head,)


def test_labelled_prompts_need_two_answers(setting):
    lm, _, _ = setting
    pairs = load_suite("identity-harm-religion").pairs("build")  # answer == wrong_answer: no labels
    with pytest.raises(EditError, match="one of two answers"):
        labelled_prompts(lm, pairs)


@pytest.mark.slow  # two trained recipes end to end through the CLI
def test_circuits_edit_builds_care_and_aifs_on_a_tiny_model(tmp_path):
    from circuits.cli import app
    from circuits.model import load_model
    from circuits.model.tiny import save_tiny_hf

    model_dir = save_tiny_hf("llama", tmp_path / "tiny", seed=0)
    lm = load_model(model_dir)
    atlas = tiny_atlas(lm, bind_model(load_suite("gender-occupation"), lm)).save(tmp_path / "a.atlas.json")
    base = ["edit", str(atlas), "--model", str(model_dir), "--no-evaluate", "--generations", "0"]
    care_args = ["--param", "candidates=4", "--param", "max_pairs=6", "--param", "pop_size=4", "--param", "generations=2", "--param", "n_values=2"]
    runs = {
        "care": ["--kind", "neuron_repair", "--objective", "care", "--k", "2", "--seed", "1", *care_args],
        "preset": ["--preset", "care", "--k", "2", "--seed", "1", *care_args],
        "aifs": ["--kind", "aifs", "--layer", "0", "--param", "max_pairs=6", "--param", "epochs=1", "--param", "ig_steps=2"],
        "pruning": ["--kind", "ablation", "--form", "weights", "--mode", "zero"],
    }
    for name, args in runs.items():
        r = CliRunner().invoke(app, [*base, "-o", str(tmp_path / f"{name}.json"), *args])
        assert r.exit_code == 0, (name, r.output)
    care, preset = load_edit(tmp_path / "care.json"), load_edit(tmp_path / "preset.json")
    assert (care.kind, care.form, care.objective, len(care.components)) == ("neuron_repair", "hooks", "care", 2)
    assert care.components == preset.components and all(torch.equal(care.tensors[k], preset.tensors[k]) for k in care.tensors)
    assert json.loads((tmp_path / "care.json").read_text())["objective"] == "care"
    aifs = load_edit(tmp_path / "aifs.json")
    assert (aifs.kind, aifs.objective, str(aifs.components[0])) == ("aifs", "aifs", "L0RESID")
    pruning = load_edit(tmp_path / "pruning.json")
    assert (pruning.kind, pruning.form, pruning.hyperparameters["mode"]) == ("ablation", "weights", "zero")
    for args, message in (
        (["--kind", "ablation", "--rank", "3"], "rank does not apply to ablation"),
        (["--kind", "ablation", "--objective", "care"], "not built by objective 'care'"),
        (["--preset", "care", "--kind", "ablation"], "give one"),
        (["--preset", "pruning", "--form", "hooks"], "fixes the kind, form and objective"),
        (["--kind", "low_rank", "--form", "hooks"], "applied as weights"),
        (["--kind", "pruning"], "Invalid value for '--kind'"),
        (["--kind", "aifs", "--param", "bogus=1"], "bogus does not apply to aifs"),
    ):
        r = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "x.json"), *args])
        assert r.exit_code == 2 and message in r.stderr, (args, r.output)
    assert not (tmp_path / "x.json").exists()
