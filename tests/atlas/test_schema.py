import json

import pytest

from circuits.atlas.build import behaviour_from_patching
from circuits.atlas.schema import Atlas, AtlasError, ModelInfo, Provenance
from circuits.probing.patching import PatchingResult
from circuits.sites import HeadRef, MlpRef
from circuits.suites import load_suite
import torch


def make_atlas() -> Atlas:
    comps = (HeadRef(0, 0), HeadRef(0, 1), MlpRef(0))
    effects = torch.tensor([[0.5, 0.6, 0.7, 0.55], [0.0, 0.01, -0.02, 0.01], [0.2, -0.3, 0.1, 0.0]])
    result = PatchingResult(comps, effects, torch.ones(4), torch.zeros(4), "denoising")
    suite = load_suite("gender-occupation")
    b = behaviour_from_patching(result, suite=suite, split="build", metric="logit_diff", threshold=0.05, seed=0)
    return Atlas(
        model=ModelInfo(name="tiny", fingerprint="sha256:" + "0" * 64, n_layers=1, n_heads=2, d_model=8, d_mlp=16),
        provenance=Provenance(packages={"torch": "x"}, command="test", seed=0),
        behaviours=[b],
    )


def test_round_trip_is_identity(tmp_path):
    a = make_atlas()
    assert Atlas.load(a.save(tmp_path / "a.atlas.json")) == a


def test_flag_rule_needs_threshold_and_ci_above_zero():
    b = make_atlas().behaviours[0]
    assert [c.id for c in b.flagged()] == ["L0H0"]  # L0MLP has mean 0.0 < threshold; L0H1 is tiny
    assert b.top(1)[0].id == "L0H0"
    assert b.top(5, kind="mlp")[0].id == "L0MLP"


def test_behaviour_lookup_error_names_what_exists():
    with pytest.raises(AtlasError, match="gender-occupation"):
        make_atlas().behaviour("toxicity")


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d["behaviours"][0]["components"][1]["effect"].__setitem__("std", -1.0), "behaviours.0.components.1.effect.std"),
        (lambda d: d["model"].__setitem__("fingerprint", "md5:abc"), "model.fingerprint"),
        (lambda d: d["behaviours"][0]["components"][0].__setitem__("id", "L0X0"), "behaviours.0.components.0.id"),
        (lambda d: d.__setitem__("schema_version", "9.9"), "schema_version"),
        (lambda d: d.pop("provenance"), "provenance"),
    ],
)
def test_malformed_file_names_the_bad_field(tmp_path, mutate, field):
    raw = json.loads(make_atlas().model_dump_json())
    mutate(raw)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(raw))
    with pytest.raises(AtlasError) as e:
        Atlas.load(p)
    assert f"field {field}:" in str(e.value)


def test_not_json_and_missing_file_are_clear_errors(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(AtlasError, match="not valid JSON"):
        Atlas.load(p)
    with pytest.raises(AtlasError, match="cannot read atlas"):
        Atlas.load(tmp_path / "missing.json")


def test_save_failure_keeps_old_file(tmp_path, monkeypatch):
    a = make_atlas()
    path = a.save(tmp_path / "a.json")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        a.model_copy(update={"provenance": Provenance(packages={}, command="other", seed=1)}).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind
