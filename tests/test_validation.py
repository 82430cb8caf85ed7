"""Regression tests for issue 21's validation failures: every bad input gets one clear error of the artifact's type."""

from __future__ import annotations

import json
import os
import threading

import pytest
import torch

from circuits.atlas.schema import Atlas, AtlasError, EffectStats
from circuits.editing import Edit, EditError, apply_edit, load_edit, save_edit
from circuits.io import MAX_JSON_DEPTH, read_json_file
from circuits.sites import ComponentError, HeadRef, NeuronRef, check_components, parse_component
from circuits.suites import SuiteError, load_suite, shipped_suite
from tests.atlas.test_schema import make_atlas

FP = "sha256:" + "0" * 64


# --- component ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["L03H2", "L3H02", "L\u0663H2", "L3H\u0662", "L3H2\n", " L3H2", "L3H2 ", "L3H2@01", "L1234567890H1", "l3h2", ""])
def test_component_ids_are_strict_and_canonical(text):
    with pytest.raises(ComponentError):
        parse_component(text)


@pytest.mark.parametrize("text", ["L0H0", "L9H6", "L9H6.k@2", "L5N1024", "L3MLP", "L4ATTN@0", "L3RESID_POST@4", "L10H0.pattern@3"])
def test_canonical_ids_round_trip(text):
    assert str(parse_component(text)) == text


def test_components_beyond_the_model_get_one_error_naming_id_and_bound(tiny):
    with pytest.raises(ComponentError, match=r"L99H99: layer 99 .* 2 layers"):
        check_components(["L99H99"], tiny.shape)
    with pytest.raises(ComponentError, match=r"L1H9: head 9 .* 4 heads"):
        check_components([HeadRef(1, 9)], tiny.shape)
    with pytest.raises(ComponentError, match=r"L0N100000: neuron"):
        check_components([NeuronRef(0, 100_000)], tiny.shape)
    from circuits.editing.build import new_edit
    from circuits.model import fingerprint

    # Refused when built for a model (issue 30: an edit is checked where it meets a model) ...
    with pytest.raises(EditError, match="L99H99: layer 99"):
        new_edit("scaling", (HeadRef(99, 99),), {}, tiny, {"alpha": 0.5})
    # ... and when an edit made without it (e.g. loaded from a file) is applied.
    edit = Edit("scaling", (HeadRef(99, 99),), {}, "tiny", fingerprint(tiny), hyperparameters={"alpha": 0.5})
    with pytest.raises(EditError, match="L99H99: layer 99"):
        with apply_edit(tiny, edit):
            pass


def test_atlas_components_are_checked_against_its_model(tmp_path):
    raw = json.loads(make_atlas().model_dump_json())
    raw["behaviours"][0]["components"][0]["id"] = "L99H99"
    with pytest.raises(AtlasError, match="L99H99: layer 99"):
        Atlas.parse(json.dumps(raw))


# --- atlas files --------------------------------------------------------------------------------


def _atlas_text(mutate=None) -> str:
    raw = json.loads(make_atlas().model_dump_json())
    if mutate:
        mutate(raw)
    return json.dumps(raw)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_atlas_non_finite_numbers_are_refused_naming_the_field(tmp_path, literal):
    text = _atlas_text(lambda d: d["behaviours"][0]["components"][1]["effect"].update(mean=12345.5)).replace("12345.5", literal)
    (tmp_path / "a.json").write_text(text)
    with pytest.raises(AtlasError, match="finite") as e:
        Atlas.load(tmp_path / "a.json")
    assert "a.json" in str(e.value) and (literal != "1e999" or "behaviours.0.components.1.effect.mean" in str(e.value))


def test_atlas_with_nan_cannot_be_built_so_no_unreadable_file_is_written():
    with pytest.raises(ValueError, match="finite"):
        EffectStats(mean=float("nan"), std=0.0, n=1, ci_low=0.0, ci_high=0.0, p_value=1.0)


def test_ci_low_above_ci_high_and_missing_schema_version_are_refused():
    with pytest.raises(AtlasError, match=r"ci_low .* above ci_high"):
        Atlas.parse(_atlas_text(lambda d: d["behaviours"][0]["components"][0]["effect"].update(ci_low=2.0, ci_high=1.0)))
    with pytest.raises(AtlasError, match="schema_version: missing"):
        Atlas.parse(_atlas_text(lambda d: d.pop("schema_version")))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.__setitem__("provenance", ["not", "an", "object"]),
        lambda d: d["provenance"].__setitem__("seed", "zero"),
        lambda d: d.__setitem__("behaviours", "none"),
        lambda d: d["behaviours"].append(7),
        lambda d: d["behaviours"][0].__setitem__("method", "activation_patching"),
        lambda d: d["behaviours"][0].__setitem__("method", {"name": 5, "direction": []}),
    ],
)
def test_schema_0_1_upgrade_of_wrongly_typed_fields_gives_an_atlas_error(mutate):
    def old(d):
        d["schema_version"] = "0.1"
        d["provenance"]["seed"] = d["provenance"].pop("seeds")[0]
        mutate(d)

    with pytest.raises(AtlasError):
        Atlas.parse(_atlas_text(old))


def test_invalid_utf8_deep_nesting_and_huge_integers_are_atlas_errors(tmp_path):
    cases = {
        "utf8": b'{"schema_version": "0.3", "x": "\xff\xfe"}',
        "deep": b"[" * 100_000 + b"]" * 100_000,
        "depth": b"[" * (MAX_JSON_DEPTH + 2) + b"]" * (MAX_JSON_DEPTH + 2),
        "bigint": b'{"schema_version": "0.3", "n": ' + b"9" * 5000 + b"}",
        "int64": b'{"schema_version": "0.3", "n": ' + b"9" * 30 + b"}",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(AtlasError, match=str(tmp_path / name)):
            Atlas.load(tmp_path / name)
    with pytest.raises(AtlasError, match="line 1: not valid UTF-8"):
        Atlas.load(tmp_path / "utf8")


def test_special_and_oversized_files_are_refused_without_reading_them(tmp_path):
    with pytest.raises(AtlasError, match="not a regular file"):
        Atlas.load("/dev/zero")
    with pytest.raises(AtlasError, match="not a regular file"):
        Atlas.load(tmp_path)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    result: list[BaseException] = []
    t = threading.Thread(target=lambda: result.append(pytest.raises(AtlasError, Atlas.load, fifo).value), daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive() and "not a regular file" in str(result[0])  # refused, not hung
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2048)
    with pytest.raises(ValueError, match="limit is 1024 bytes"):
        read_json_file(big, max_bytes=1024)


# --- edits --------------------------------------------------------------------------------------


def _edit(**kw) -> Edit:
    args = dict(kind="scaling", components=(HeadRef(0, 1),), tensors={}, model_name="tiny", model_fingerprint=FP, hyperparameters={"alpha": 0.5})
    args.update(kw)
    return Edit(**args)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(hyperparameters={"alpha": float("nan")}), "finite"),
        (dict(hyperparameters={"alpha": float("inf")}), "finite"),
        (dict(hyperparameters={"alpha": "abc"}), "alpha .* must be float"),
        (dict(kind="ablation", hyperparameters={"mode": "bogus"}), "mode"),
        (dict(kind="ablation", hyperparameters={"mode": "mean"}, components=(HeadRef(0, 1), HeadRef(0, 1)), tensors={"L0H1": torch.zeros(4)}), "twice"),
        (dict(kind="ablation", hyperparameters={"mode": "mean"}, tensors={"L0H1": torch.tensor([float("nan")] * 4)}), "NaN"),
    ],
)
def test_edits_with_bad_values_are_refused_at_construction(kw, message):
    with pytest.raises(EditError, match=message):
        _edit(**kw)


def test_edit_manifest_errors_are_edit_errors(tmp_path):
    path = save_edit(_edit(kind="ablation", hyperparameters={"mode": "mean"}, tensors={"L0H1": torch.ones(4)}), tmp_path / "e.json")
    good = json.loads(path.read_text())
    cases = {
        "nan": path.read_text().replace('"tiny"', "NaN"),
        "noversion": json.dumps({k: v for k, v in good.items() if k != "schema_version"}),
        "old-typed": json.dumps({**good, "schema_version": "0.1", "hyperparameters": ["mode"]}),
        "old-kind": json.dumps({**good, "schema_version": "0.2", "kind": 5}),
        "alpha": json.dumps({**good, "kind": "scaling", "hyperparameters": {"alpha": "abc"}}),
        "dup": json.dumps({**good, "components": ["L0H1", "L0H1"]}),
        "noncanonical": json.dumps({**good, "components": ["L00H1"]}),
    }
    for name, text in cases.items():
        p = tmp_path / f"{name}.json"
        p.write_text(text)
        p.with_suffix(".safetensors").write_bytes(path.with_suffix(".safetensors").read_bytes())
        with pytest.raises(EditError):
            load_edit(p)
    bad = tmp_path / "utf8.json"
    bad.write_bytes(b"\xff" + path.read_bytes())
    with pytest.raises(EditError, match="UTF-8"):
        load_edit(bad)


def test_nan_edit_tensors_are_refused_at_load(tmp_path):
    import hashlib

    from safetensors.torch import save as st_save

    path = save_edit(_edit(kind="ablation", hyperparameters={"mode": "mean"}, tensors={"L0H1": torch.ones(4)}), tmp_path / "e.json")
    blob = st_save({"L0H1": torch.tensor([1.0, float("nan"), 0.0, 0.0])})
    path.with_suffix(".safetensors").write_bytes(blob)
    raw = json.loads(path.read_text())
    raw["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
    path.write_text(json.dumps(raw))
    with pytest.raises(EditError, match="NaN"):
        load_edit(path)


# --- suite names recorded in files --------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x.jsonl", "/etc/passwd", "x.csv", "nope"])
def test_a_recorded_suite_name_is_never_a_path(tmp_path, name):
    with pytest.raises(SuiteError, match="not a shipped suite"):
        shipped_suite(name)
    assert shipped_suite("gender-occupation").name == "gender-occupation"


# --- issue 30: what is accepted fits the model and can be written back --------------------------------


def _with_circuit(raw, nodes, edges=(), **fields):
    raw["behaviours"][0]["circuit"] = {"method": "eap_ig", "selection": "hand", "ablation": "corrupted", "n_edges_total": 10,
                                       "nodes": nodes, "edges": list(edges), "faithfulness": 0.9, "completeness": 0.8, **fields}


def _node(i, layer, kind):
    return {"id": i, "layer": layer, "kind": kind}


def _trace(**fields):
    base = {"prompt": "The Eiffel Tower is in", "subject": "The Eiffel Tower", "target": " Paris", "kind": "resid", "window": 1,
            "severed": False, "n_samples": 2, "seed": 0, "noise_std": 0.3, "clean_prob": 0.3, "corrupted_prob": 0.01,
            "tokens": ["<s>", "The", " E"], "subject_positions": [1, 2], "probs": [[0.1, 0.2, 0.3]]}
    return {**base, **fields}


ATLAS_CASES = [
    ("a component id of another kind", lambda d: d["behaviours"][0]["components"][0].update(kind="mlp"), "is a head, but its kind is 'mlp'"),
    ("an MLP recorded as a head", lambda d: d["behaviours"][0]["components"][2].update(kind="head"), "is a mlp"),
    ("a circuit node beyond the layers", lambda d: _with_circuit(d, [_node("INPUT", -1, "input"), _node("L5H0", 5, "head")],
                                                                   [{"sender": "INPUT", "receiver": "L5H0", "score": 1.0}]), "layer 5 does not exist"),
    ("a circuit node beyond the heads", lambda d: _with_circuit(d, [_node("L0H7", 0, "head")]), "head 7 does not exist"),
    ("a circuit node of another kind", lambda d: _with_circuit(d, [_node("L0MLP", 0, "head")]), "recorded as head"),
    ("a circuit node at another layer", lambda d: _with_circuit(d, [_node("L0H1", 3, "head")]), "at layer 3"),
    ("LOGITS beyond the model", lambda d: _with_circuit(d, [_node("LOGITS", 99, "logits")]), "LOGITS"),
    ("completeness null", lambda d: _with_circuit(d, [_node("L0H1", 0, "head")], completeness=None), "give both or neither"),
    ("more edges than the graph has", lambda d: _with_circuit(d, [_node("INPUT", -1, "input"), _node("L0H1", 0, "head")],
                                                               [{"sender": "INPUT", "receiver": "L0H1", "score": 1.0}], n_edges_total=0), "n_edges_total"),
    ("a trace with more rows than layers", lambda d: d.update(traces=[_trace(probs=[[0.1, 0.2, 0.3]] * 2)]), "probs has 2 rows"),
    ("a subject position outside the tokens", lambda d: d.update(traces=[_trace(subject_positions=[1, 7])]), "subject position 7"),
    ("a negative subject position", lambda d: d.update(traces=[_trace(subject_positions=[-1])]), "subject position -1"),
    ("repeated subject positions", lambda d: d.update(traces=[_trace(subject_positions=[1, 1])]), "repeat"),
    ("n_heads = 1e12", lambda d: d["model"].update(n_heads=1e12), "model.n_heads"),
    ("n_heads = 10**12", lambda d: d["model"].update(n_heads=10**12), "model.n_heads"),
    ("n_layers = 1e20", lambda d: d["model"].update(n_layers=1e20), "model.n_layers"),
    ("a count that is a float", lambda d: d["behaviours"][0]["components"][0]["effect"].update(n=4.0), "effect.n"),
    ("a seed beyond 64 bits", lambda d: d["provenance"].update(seeds=[1e30]), "provenance.seeds.0"),
]


@pytest.mark.parametrize("name, mutate, message", ATLAS_CASES, ids=[c[0] for c in ATLAS_CASES])
def test_atlases_that_do_not_fit_their_model_are_refused_naming_file_and_field(tmp_path, name, mutate, message):
    path = tmp_path / "a.json"
    path.write_text(_atlas_text(mutate))
    with pytest.raises(AtlasError, match=message.replace("(", r"\(")) as e:
        Atlas.load(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("text, field", [
    ('{"schema_version": "0.3", "schema_version": "0.3"}', "<root>: key 'schema_version' appears twice"),
    ("DUP_IN_EFFECT", "behaviours.0.components.0.effect: key 'mean' appears twice"),
    ("SURROGATE", "behaviours.0.name: lone surrogate"),
])
def test_duplicate_keys_and_lone_surrogates_are_refused(tmp_path, text, field):
    good = _atlas_text()
    if text == "DUP_IN_EFFECT":
        text = good.replace('"effect": {"mean": ', '"effect": {"mean": 0.0, "mean": ', 1)
    elif text == "SURROGATE":
        text = good.replace('"name": "gender-occupation"', '"name": "gender\\ud800"', 1)
    (tmp_path / "a.json").write_text(text)
    with pytest.raises(AtlasError, match=field):
        Atlas.load(tmp_path / "a.json")


def test_what_cannot_be_written_back_is_refused_before_writing_and_the_old_file_stays(tmp_path):
    path = make_atlas().save(tmp_path / "a.json")
    before = path.read_bytes()
    a = make_atlas()
    bad = a.model_copy(update={"provenance": a.provenance.model_copy(update={"command": "scan \udc80"})})
    with pytest.raises(AtlasError, match="provenance.command: lone surrogate"):
        bad.save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_an_atlas_at_the_size_limits_renders(tmp_path):
    from circuits.atlas.report import write_report
    from circuits.sites import MAX_HEADS, MAX_LAYERS

    raw = json.loads(_atlas_text())
    raw["model"].update(n_layers=MAX_LAYERS, n_heads=MAX_HEADS)
    out = write_report(Atlas.validate_raw(raw), tmp_path / "r.html")
    assert out.stat().st_size < 50 * 2**20


# --- issue 30: suite files --------------------------------------------------------------------------

_REC = {"clean": "The nurse said", "corrupted": "The pilot said", "answer": " she", "wrong_answer": " he"}


def _records(n=6, **extra):
    return [{**_REC, "clean": f"The nurse {i} said", "group": f"g{i}", **extra} for i in range(n)]


SUITE_CASES = [
    ("s.jsonl", "\n".join(json.dumps(r) for r in _records()) + '\n{"clean": "a", "clean": "b", "corrupted": "c", "answer": " d", "wrong_answer": " e"}',
     "line 7: field <root>: key 'clean' appears twice"),
    ("s.json", '{"pairs": [], "pairs": []}', "key 'pairs' appears twice"),
    ("s.jsonl", "\n".join(json.dumps(r) for r in _records()) + '\n{"clean": "a\\ud800", "corrupted": "c", "answer": " d", "wrong_answer": " e"}',
     "line 7: field clean: lone surrogate"),
    ("s.csv", "clean,corrupted,answer,wrong_answer,answer\n" + "".join(f"a{i},b,c,d,e\n" for i in range(6)), "line 1: columns ['answer'] appear twice"),
    ("s.csv", "clean,corrupted,answer,wrong_answer,metadata\n" + "".join(f'a{i},b,c,d,"{{""k"": ""\\ud800""}}"\n' for i in range(6)),
     "line 2: field metadata: field k: lone surrogate"),
    ("s.csv", 'clean,corrupted,answer,wrong_answer\n"a\nb,c,d,e\n', "line 3"),
    ("s.jsonl", "\n".join(json.dumps(r) for r in _records(split="eval")[:3] + _records()[3:]), "give a split for every pair or for none"),
    ("s.jsonl", json.dumps(_REC), "cannot split 1 record"),
    ("s.json", json.dumps({"pairs": _records(), "metric": {"name": "bogus"}}), "field metric"),
    ("s.json", json.dumps({"splits": {}, "name": "x"}), "field kind"),
    ("s.json", json.dumps({"pairs": _records(), "kind": "evil"}), "field kind"),
]


@pytest.mark.parametrize("name, text, message", SUITE_CASES)
def test_suite_file_errors_name_the_file_and_where(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with pytest.raises(SuiteError, match=message.replace("[", r"\[").replace("(", r"\(")) as e:
        load_suite(path)
    assert str(e.value).startswith(str(path)), str(e.value)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0b", "\x1c"])
def test_jsonl_lines_end_at_newlines_only(tmp_path, separator):
    """U+2028 and U+2029 (and other characters str.splitlines breaks at) are valid inside JSON strings."""
    path = tmp_path / "s.jsonl"
    records = [{**r, "clean": r["clean"] + separator + "x"} for r in _records()]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    suite = load_suite(path)
    assert sorted(p.clean for p in suite.records) == sorted(r["clean"] for r in records)
