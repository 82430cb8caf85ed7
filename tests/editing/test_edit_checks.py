"""Edits meet a model safely (issue 30): names checked before applying, dtypes and hyperparameters bounded,
logits finite when an edit is built or applied, and the model left bit for bit as it was after a refusal."""

from __future__ import annotations

import pytest
import torch

from circuits import model as M
from circuits.editing import Edit, EditError, apply_edit, load_edit, save_edit
from circuits.editing.apply import check_finite_logits, edit_hooks
from circuits.editing.build import new_edit
from circuits.model.tiny import tiny_hf_model
from circuits.sites import HeadRef, MlpRef, NeuronRef, ResidRef


@pytest.fixture(scope="module")
def llama():
    return tiny_hf_model("llama", seed=0)


def _edit(model, kind, components, tensors, hp=None, form=None):
    """An edit made without the model (as one loaded from a file is): its checks run when it is applied."""
    return Edit(kind, tuple(components), tensors, model.name, M.fingerprint(model), hyperparameters=hp or {}, form=form)


BAD_WEIGHTS = ["../../etc/passwd", "blocks.99.attn.o.weight", "blocks.\u00b2.attn.o.weight", "blocks.\u0663.attn.o.weight",
               "blocks.0.bogus.o.weight", "blocks.0.attn.o.weight.x", "blocks.-1.attn.o.weight", "embed.bias", "", "blocks.0.attn.q.bias"]


@pytest.mark.parametrize("name", BAD_WEIGHTS)
@pytest.mark.parametrize("kind", ["low_rank", "weight_delta"])
def test_a_weight_name_the_model_does_not_have_is_one_error_naming_it(llama, tmp_path, kind, name):
    before = M.fingerprint(llama)
    if kind == "low_rank":
        e = _edit(llama, kind, [MlpRef(0)], {f"{name}.lora_A": torch.zeros(2, 32), f"{name}.lora_B": torch.zeros(32, 2)}, {"alpha": 1.0, "rank": 2})
    else:
        e = _edit(llama, kind, [MlpRef(0)], {f"{name}.delta": torch.zeros(32, 32)})
    loaded = load_edit(save_edit(e, tmp_path / "e.json"))  # loading knows no model: the name is checked where it meets one
    for edit in (e, loaded):
        with pytest.raises(EditError, match="does not exist") as err:
            apply_edit(llama, edit)
        assert repr(name)[:20] in str(err.value)
    assert M.fingerprint(llama) == before and not llama.overlays


@pytest.mark.parametrize("component", [NeuronRef(0, 10_000), HeadRef(5, 0), ResidRef(9, None), HeadRef(0, 9)])
def test_a_component_outside_the_model_is_one_error(llama, component):
    kind, hp = ("steering", {"coefficient": 1.0}) if isinstance(component, ResidRef) else ("scaling", {"alpha": 0.5})
    tensors = {"vector": torch.zeros(32)} if kind == "steering" else {}
    with pytest.raises(EditError, match=str(component).split("@")[0]):
        apply_edit(llama, _edit(llama, kind, [component], tensors, hp))
    assert not llama.overlays


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.int64, torch.int8, torch.bool, torch.float64, torch.complex64])
def test_tensor_dtypes_are_limited_to_what_models_compute_in(tmp_path, dtype, llama):
    t = torch.zeros(32).to(dtype)
    with pytest.raises(EditError, match="dtype"):
        _edit(llama, "steering", [ResidRef(1, None)], {"vector": t})
    # The same tensor in a file (written without the project's checks): one error when loaded, never NotImplementedError.
    ok = save_edit(_edit(llama, "steering", [ResidRef(1, None)], {"vector": torch.zeros(32)}), tmp_path / "e.json")
    import hashlib
    import json

    from safetensors.torch import save

    if dtype is not torch.complex64:
        blob = save({"vector": t})
        ok.with_suffix(".safetensors").write_bytes(blob)
        raw = json.loads(ok.read_text())
        raw["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
        ok.write_text(json.dumps(raw))
        with pytest.raises(EditError, match="dtype"):
            load_edit(ok)


@pytest.mark.parametrize("hp", [{"alpha": 1e308}, {"alpha": -1e7}, {"alpha": 2**70}, {"seed": -1}, {"k": 2**63}, {"note": "\ud800"}])
def test_hyperparameters_beyond_their_bounds_are_refused(llama, hp):
    with pytest.raises(EditError, match="hyperparameters"):
        _edit(llama, "scaling", [HeadRef(0, 1)], {}, {"alpha": 0.5, **hp})


def test_an_edit_that_makes_logits_non_finite_is_refused_when_built_and_when_applied(llama):
    before = M.fingerprint(llama)
    huge = torch.full((32,), 3e38)
    with pytest.raises(EditError, match="logits are not finite"):
        new_edit("steering", (ResidRef(1, None),), {"vector": huge}, llama, {"coefficient": 1e6})
    e = _edit(llama, "steering", [ResidRef(1, None)], {"vector": huge}, {"coefficient": 1e6})
    for form in ("auto", "weights"):  # as weights the folded bias overflows first: refused with its own error
        with pytest.raises(EditError, match="logits are not finite|NaN or infinite"):
            apply_edit(llama, e, form=form)
        assert M.fingerprint(llama) == before and not llama.overlays and not llama.weight_edits
    with pytest.raises(EditError, match="logits are not finite"):
        check_finite_logits(llama, e)
    fine = new_edit("steering", (ResidRef(1, None),), {"vector": torch.ones(32)}, llama, {"coefficient": 2.0})
    check_finite_logits(llama, fine)
    assert M.fingerprint(llama) == before and not llama.overlays


def test_the_check_forward_does_not_shift_a_resample_edits_draws(llama):
    """apply_edit's check forward draws from the resample generator; it is reseeded, so runs match the bare hooks."""
    bank = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    e = _edit(llama, "ablation", [HeadRef(0, 1), HeadRef(1, 2)], {"L0H1": bank, "L1H2": bank * 2}, {"mode": "resample", "seed": 3})
    tokens = torch.randint(0, 100, (2, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = M.run(llama, tokens, edit_hooks(e, llama))
        with apply_edit(llama, e):
            applied = M.run(llama, tokens)
    torch.testing.assert_close(applied, reference, rtol=0, atol=0)
