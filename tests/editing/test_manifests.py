"""Manifests record (kind, form, objective) at schema 0.5: earlier ones are refused with one error naming the
migration, and ``scripts/migrate_manifests.py`` rewrites them once (idempotent; the tensor file untouched)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from circuits.editing import EditError, load_edit, save_edit
from tests.kinds import all_kinds

ROOT = Path(__file__).resolve().parents[2]


def _migration():
    spec = importlib.util.spec_from_file_location("migrate_manifests", ROOT / "scripts" / "migrate_manifests.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.parametrize(
    "key, old, want",
    [
        ("pruning", {"schema_version": "0.2", "kind": "pruning"}, ("ablation", "weights", "reference")),
        ("ablation", {"schema_version": "0.1", "kind": "mean_ablation", "hyperparameters": {"k": 2}}, ("ablation", "hooks", "reference")),
        ("orthogonalization", {"schema_version": "0.2", "kind": "orthogonalization"}, ("directional_ablation", "weights", "mean_difference")),
        ("invariance", {"schema_version": "0.2", "kind": "invariance", "hyperparameters": {"objective": "invariance", "rank": 2, "alpha": 1.0}},
         ("low_rank", "weights", "invariance")),
        ("low_rank", {"schema_version": "0.4", "hyperparameters": {"objective": "gap", "rank": 2, "alpha": 0.5}}, ("low_rank", "weights", "gap")),
        ("care", {"schema_version": "0.3", "form": "hooks", "hyperparameters": {"optimiser": "pso", "k": 2}}, ("neuron_repair", "hooks", "care")),
        ("steering", {"schema_version": "0.3", "form": "hooks"}, ("steering", "hooks", "mean_difference")),
    ],
)
def test_earlier_manifests_are_refused_naming_the_migration_which_rewrites_them_once(model, tmp_path, key, old, want):
    mig = _migration()
    path = save_edit(all_kinds(model)[key], tmp_path / "e.json")
    tensors = path.with_suffix(".safetensors").read_bytes()
    version = old["schema_version"]
    dropped = {"objective"} | ({"tokenization"} if version < "0.4" else set()) | ({"form"} if version < "0.3" else set())
    raw = {k: v for k, v in json.loads(path.read_text()).items() if k not in dropped}
    raw.update({k: v for k, v in old.items()})
    path.write_text(json.dumps(raw))
    with pytest.raises(EditError, match=f"schema {old['schema_version']} is older than 0.5; upgrade it with `python scripts/migrate_manifests.py"):
        load_edit(path)
    assert mig.migrate_file(path) is True
    loaded = load_edit(path)
    assert (loaded.kind, loaded.form, loaded.objective) == want and "objective" not in loaded.hyperparameters
    assert loaded.tokenization == ({"prepend_bos": True, "source": "legacy"} if old["schema_version"] < "0.4" else all_kinds(model)[key].tokenization)
    if key == "ablation":
        assert loaded.hyperparameters["mode"] == "mean"
    assert path.with_suffix(".safetensors").read_bytes() == tensors  # the tensor file is never touched ...
    assert json.loads(path.read_text())["tensors_sha256"] == hashlib.sha256(tensors).hexdigest()  # ... so its hash still holds
    text = path.read_text()
    assert mig.migrate_file(path) is False and path.read_text() == text  # idempotent


def test_the_migration_refuses_a_tensor_file_that_does_not_match(model, tmp_path):
    mig = _migration()
    path = save_edit(all_kinds(model)["ablation"], tmp_path / "e.json")
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "schema_version": "0.3", "tensors_sha256": "0" * 64}))
    before = path.read_text()
    with pytest.raises(EditError, match="does not match"):
        mig.migrate_file(path)
    assert path.read_text() == before
    with pytest.raises(EditError, match="unsupported edit manifest version '9.9'"):
        path.write_text(json.dumps({**raw, "schema_version": "9.9"}))
        load_edit(path)


def test_every_committed_edit_manifest_is_current():
    mig = _migration()
    found = mig.manifests([ROOT / "atlas"])
    assert found, "no committed edit manifests found"
    stale = [str(p.relative_to(ROOT)) for p in found if mig.migrate_file(p, write=False)]
    assert not stale, f"run python scripts/migrate_manifests.py: {stale}"
