import json

import pytest

from circuits.atlas.build import behaviour_from_patching
from circuits.atlas.merge import diff, merge
from circuits.atlas.schema import Atlas, AtlasError, MethodInfo, ModelInfo, Provenance
from circuits.probing.effects import Effects, Method
from circuits.sites import HeadRef, MlpRef
from circuits.suites import load_suite
import torch


def make_atlas() -> Atlas:
    comps = (HeadRef(0, 0), HeadRef(0, 1), MlpRef(0))
    effects = torch.tensor([[0.5, 0.6, 0.7, 0.55], [0.0, 0.01, -0.02, 0.01], [0.2, -0.3, 0.1, 0.0]])
    result = Effects(comps, effects, "normalised", Method("activation_patching"), clean_metric=torch.ones(4), corrupted_metric=torch.zeros(4))
    suite = load_suite("gender-occupation")
    attribution = MethodInfo(name="attribution_patching", ig_steps=1)
    b = behaviour_from_patching(
        result, suite=suite, split="build", metric="logit_diff", threshold=0.05, seed=0,
        extra=[(attribution, effects * 0.5)], scores={"R": torch.tensor([0.1, 0.9, 0.5])},
    )
    return Atlas(
        model=ModelInfo(
            name="tiny", fingerprint="sha256:" + "0" * 64, n_layers=1, n_heads=2, d_model=8, d_mlp=16,
            tokenization={"prepend_bos": False, "source": "tokenizer"},
        ),
        provenance=Provenance(packages={"torch": "x"}, command="test", seeds=[0]),
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
        a.model_copy(update={"provenance": Provenance(packages={}, command="other", seeds=[1])}).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind


def test_query_api_filters_sorts_and_exports_a_dataframe():
    a = make_atlas()
    assert [bc.entry.id for bc in a.components(flagged=True)] == ["L0H0"]
    assert [bc.entry.id for bc in a.components(kind="mlp")] == ["L0MLP"]
    assert [bc.entry.id for bc in a.top(2, by="R")] == ["L0H1", "L0MLP"]
    assert a.top(1, by="attribution_patching/swap/denoising")[0].entry.id == "L0H0"
    with pytest.raises(AtlasError, match="no score or method"):
        a.top(1, by="nope")
    df = a.to_dataframe()
    assert len(df) == 3 and set(df["component"]) == {"L0H0", "L0H1", "L0MLP"}
    assert df.loc[df.component == "L0H0", "effect:attribution_patching/swap/denoising"].item() == pytest.approx(0.29375)
    assert df.loc[df.component == "L0H1", "score:R"].item() == pytest.approx(0.9)
    assert df.loc[df.component == "L0MLP", "head"].isna().all()


def test_merge_refuses_other_models_and_combines_behaviours():
    a = make_atlas()
    other = a.model_copy(update={"model": a.model.model_copy(update={"fingerprint": "sha256:" + "1" * 64})})
    with pytest.raises(AtlasError, match="different models"):
        merge(a, other)
    renamed = a.model_copy(update={"behaviours": [a.behaviours[0].model_copy(update={"name": "toxicity"})]})
    m = merge(a, renamed)
    assert [b.name for b in m.behaviours] == ["gender-occupation", "toxicity"]
    assert [b.name for b in merge(a, a).behaviours] == ["gender-occupation"]  # identical behaviour: kept once
    changed = a.model_copy(update={"behaviours": [a.behaviours[0].model_copy(update={"threshold": 0.9})]})
    with pytest.raises(AtlasError, match="different behaviour"):
        merge(a, changed)


def test_diff_reports_what_moved():
    a = make_atlas()
    b0 = a.behaviours[0]
    moved = [c.model_copy(update={"effect": c.effect.model_copy(update={"mean": c.effect.mean - 0.5}), "flagged": False}) if c.id == "L0H0" else c for c in b0.components]
    b = a.model_copy(update={"behaviours": [b0.model_copy(update={"components": moved})]})
    changes = diff(a, b, min_delta=0.1)
    assert [(c.component, round(c.delta, 3), c.flagged_a, c.flagged_b) for c in changes] == [("L0H0", -0.5, True, False)]
    with pytest.raises(AtlasError, match="share no behaviour"):
        diff(a, b.model_copy(update={"behaviours": [b.behaviours[0].model_copy(update={"name": "x"})]}))


def test_version_0_1_files_are_upgraded(tmp_path):
    raw = json.loads(make_atlas().model_dump_json())
    raw["schema_version"] = "0.1"
    del raw["model"]["tokenization"]
    raw["provenance"] = {"packages": {}, "command": "old", "seed": 3}
    for b in raw["behaviours"]:
        b["method"] = {"name": "activation_patching", "direction": "denoising", "normalisation": "0=corrupted,1=clean"}
        del b["methods"]
    p = tmp_path / "old.json"
    p.write_text(json.dumps(raw))
    a = Atlas.load(p)
    assert a.schema_version == "0.4" and a.provenance.seeds == [3] and a.behaviours[0].primary.name == "activation_patching"
    assert a.model.tokenization.prepend_bos and a.model.tokenization.source == "legacy"


def test_a_0_3_atlas_records_the_bos_its_time_prepended_and_a_0_4_atlas_must_record_its_policy(tmp_path):
    raw = json.loads(make_atlas().model_dump_json())
    del raw["model"]["tokenization"]
    (tmp_path / "new.json").write_text(json.dumps(raw))
    with pytest.raises(AtlasError, match="tokenization"):
        Atlas.load(tmp_path / "new.json")
    (tmp_path / "old.json").write_text(json.dumps({**raw, "schema_version": "0.3"}))
    old = Atlas.load(tmp_path / "old.json")
    assert old.model.tokenization.model_dump() == {"prepend_bos": True, "source": "legacy"}


def test_atlases_measured_under_different_tokenization_do_not_merge():
    a = make_atlas()
    legacy = a.model_copy(update={"model": a.model.model_copy(update={"tokenization": a.model.tokenization.model_copy(update={"prepend_bos": True})})})
    b = legacy.model_copy(update={"behaviours": [legacy.behaviours[0].model_copy(update={"name": "other"})]})
    with pytest.raises(AtlasError, match="different tokenization"):
        merge(a, b)


def test_json_schema_is_exported():
    schema = Atlas.json_schema()
    assert schema["title"] == "Atlas" and "behaviours" in schema["properties"]


def test_saved_files_get_normal_permissions(tmp_path):
    import os
    import stat

    path = make_atlas().save(tmp_path / "a.json")
    mode = stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    path.chmod(0o640)
    make_atlas().save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # an existing file keeps its mode


def test_the_flag_rule_is_one_sided_and_random_methods_need_three_seeds():
    from circuits.atlas.schema import EffectStats, MethodInfo

    below = EffectStats(mean=-0.4, std=0.1, n=8, ci_low=-0.5, ci_high=-0.3, p_value=0.001)
    assert below.significant and not below.above_zero  # two-sided significance is not enough to flag
    with pytest.raises(ValueError, match="at least 3 seeds"):
        MethodInfo(name="activation_patching", intervention="resample", seeds=[0, 1])
    assert MethodInfo(name="activation_patching", intervention="resample", seeds=[0, 1, 2]).seeds == [0, 1, 2]
