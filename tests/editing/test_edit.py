import json

import pytest
import torch

from circuits.editing import Edit, EditError, apply_edit, load_edit, save_edit
from circuits.model import fingerprint, tiny_model
from circuits.sites import HeadRef


@pytest.fixture()
def model():
    return tiny_model(n_layers=2, n_heads=4, n_kv_heads=2, seed=3)


@pytest.fixture()
def tokens():
    return torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(1))


def make_edit(model) -> Edit:
    g = torch.Generator().manual_seed(2)
    heads = (HeadRef(1, 2), HeadRef(0, 1), HeadRef(1, 0))
    return Edit(
        kind="ablation",
        components=heads,
        tensors={str(h): torch.randn(8, generator=g) for h in heads},
        model_name="tiny",
        model_fingerprint=fingerprint(model),
        hyperparameters={"k": 3, "mode": "mean"},
        suite={"name": "synthetic", "split": "build"},
    )


def test_mean_ablation_sets_exactly_the_edited_heads(model, tokens):
    edit = make_edit(model)
    _, before = model.bridge.run_with_cache(tokens)
    with apply_edit(model, edit):
        _, after = model.bridge.run_with_cache(tokens)
    for layer in range(2):
        z0, z1 = before[f"blocks.{layer}.attn.hook_z"], after[f"blocks.{layer}.attn.hook_z"]
        for head in range(4):
            key = str(HeadRef(layer, head))
            if key in edit.tensors:
                assert torch.equal(z1[:, :, head], edit.tensors[key].expand(2, 7, 8))
            elif layer == 0:  # layer-0 heads not edited are upstream of every edit: unchanged
                assert torch.equal(z1[:, :, head], z0[:, :, head])


def test_context_manager_restores_original_outputs_bit_for_bit(model, tokens):
    original = model(tokens).clone()
    with apply_edit(model, make_edit(model)):
        edited = model(tokens)
    assert not torch.allclose(edited, original)
    assert torch.equal(model(tokens), original)


def test_permanent_until_removed(model, tokens):
    original = model(tokens).clone()
    handle = apply_edit(model, make_edit(model))
    edited = model(tokens).clone()
    assert torch.equal(model(tokens), edited)  # still applied on the next call
    model.bridge.reset_hooks()  # a user's reset does not drop a permanent edit
    assert torch.equal(model(tokens), edited)
    handle.remove()
    handle.remove()  # idempotent
    assert torch.equal(model(tokens), original)


def test_save_load_round_trip_gives_identical_outputs(model, tokens, tmp_path):
    edit = make_edit(model)
    path = save_edit(edit, tmp_path / "e.json")
    loaded = load_edit(path)
    assert loaded.components == edit.components
    assert all(torch.equal(loaded.tensors[k], v) for k, v in edit.tensors.items())
    with apply_edit(model, edit):
        a = model(tokens).clone()
    with apply_edit(model, loaded):
        b = model(tokens)
    assert torch.equal(a, b)


def test_other_model_is_refused(model, tokens):
    other = tiny_model(n_layers=2, n_heads=4, n_kv_heads=2, seed=4)
    with pytest.raises(EditError, match="refusing to apply"):
        apply_edit(other, make_edit(model))
    assert not any(hp.fwd_hooks for hp in other.bridge.hook_dict.values())  # nothing left half-applied


def test_wrong_shape_is_refused(model):
    edit = make_edit(model)
    bad = Edit(**{**edit.__dict__, "components": (HeadRef(5, 0),), "tensors": {"L5H0": torch.zeros(8)}})
    with pytest.raises(EditError, match="does not exist"):
        apply_edit(model, bad)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m.__setitem__("kind", "telepathy"), "field kind"),
        (lambda m: m.__setitem__("model_fingerprint", "nope"), "field model_fingerprint"),
        (lambda m: m.__setitem__("components", ["L1Q2"]), "field components"),
        (lambda m: m.pop("model_name"), "field model_name"),
        (lambda m: m.update(components=[]), "components"),
        (lambda m: m.update(hyperparameters={"mode": "sideways"}), "mode"),
        (lambda m: m.update(tensors_sha256="0" * 64), "sha256"),
        (lambda m: m.update(extra_field=1), "extra_field"),
    ],
)
def test_malformed_manifest_gets_one_clear_error(model, tmp_path, mutate, message):
    path = save_edit(make_edit(model), tmp_path / "e.json")
    raw = json.loads(path.read_text())
    mutate(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(EditError, match=message):
        load_edit(path)


def test_tampered_or_missing_tensors_are_refused(model, tmp_path):
    path = save_edit(make_edit(model), tmp_path / "e.json")
    st = path.with_suffix(".safetensors")
    st.write_bytes(st.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(EditError, match="does not match the sha256"):
        load_edit(path)
    st.unlink()
    with pytest.raises(EditError, match="cannot read edit tensors"):
        load_edit(path)
    path.write_text("{")
    with pytest.raises(EditError, match="not valid JSON"):
        load_edit(path)


def test_manifest_must_be_json(model, tmp_path):
    with pytest.raises(EditError, match=".json"):
        save_edit(make_edit(model), tmp_path / "e.safetensors")
