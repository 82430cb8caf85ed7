"""Property tests over every loader: a mutated file loads and round-trips, or raises the project's error.

Each loader gets >= 1,000 generated cases (structural mutations of a valid file, byte damage, invalid
UTF-8, NaN/Infinity, huge integers, deep nesting); ``-s`` prints the counts. No other exception type
may escape: not ``KeyError``, ``TypeError``, ``RecursionError``, ``UnicodeDecodeError`` nor pydantic's.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from circuits.atlas.schema import Atlas, AtlasError
from circuits.editing import Edit, EditError, load_edit, save_edit
from circuits.sites import HeadRef
from circuits.suites import SuiteError, load_suite
from tests.atlas.test_schema import make_atlas
from tests.fuzz import COUNTS, FUZZ, damaged, mutated_json

N = 500  # examples per strategy; two strategies per loader (1,000 cases per loader)


def _report(name: str, minimum: int = 1000) -> None:
    print(f"fuzz {name}: {COUNTS[name]} cases")
    assert COUNTS[name] >= minimum


# --- atlas --------------------------------------------------------------------------------------

ATLAS = json.loads(make_atlas().model_dump_json())
ATLAS_0_1 = {**ATLAS, "schema_version": "0.1", "provenance": {**ATLAS["provenance"], "seed": 0}}
del ATLAS_0_1["provenance"]["seeds"]


def _atlas_case(data: bytes) -> None:
    COUNTS["atlas"] += 1
    try:
        a = Atlas.parse(data, source="fuzz.json")
    except AtlasError:
        return
    assert Atlas.parse(a.model_dump_json()) == a


def test_fuzz_atlas():
    @FUZZ.__class__(FUZZ, max_examples=N)
    @given(st.sampled_from([ATLAS, ATLAS_0_1]).flatmap(mutated_json))
    def structural(data):
        _atlas_case(data)

    @FUZZ.__class__(FUZZ, max_examples=N)
    @given(damaged(json.dumps(ATLAS, indent=1).encode()))
    def bytes_(data):
        _atlas_case(data)

    structural()
    bytes_()
    _report("atlas")


# --- edit manifest + tensors --------------------------------------------------------------------

with tempfile.TemporaryDirectory() as _d:
    _p = save_edit(
        Edit("ablation", (HeadRef(0, 0), HeadRef(0, 1)), {"L0H0": torch.ones(4), "L0H1": torch.zeros(4)}, "tiny", "sha256:" + "0" * 64,
             hyperparameters={"mode": "mean", "k": 2}, suite={"name": "gender-occupation", "n_pairs": 3}),
        Path(_d) / "e.json",
    )
    MANIFEST, TENSORS = json.loads(_p.read_text()), _p.with_suffix(".safetensors").read_bytes()

tensor_dicts = st.dictionaries(
    st.sampled_from(["L0H0", "L0H1", "vector", "x.lora_A"]),
    st.tuples(st.sampled_from([torch.float32, torch.float16, torch.int64]), st.lists(st.integers(0, 4), max_size=2), st.sampled_from([0.0, 1.0, float("nan"), float("inf")])),
    max_size=3,
).map(lambda d: st_save({k: torch.full(shape, fill).to(dtype) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype) for k, (dtype, shape, fill) in d.items()}))


def _edit_case(manifest: bytes, tensors: bytes, fix_hash: bool) -> None:
    COUNTS["edit"] += 1
    if fix_hash:
        try:
            raw = json.loads(manifest)
            raw["tensors_sha256"] = hashlib.sha256(tensors).hexdigest()
            manifest = json.dumps(raw, allow_nan=True).encode()
        except (ValueError, TypeError, KeyError, IndexError, RecursionError):
            pass
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "e.json"
        path.write_bytes(manifest)
        path.with_suffix(".safetensors").write_bytes(tensors)
        try:
            e = load_edit(path)
        except EditError:
            return
        again = load_edit(save_edit(e, Path(d) / "again.json"))
        assert (again.kind, again.components, again.hyperparameters, again.form) == (e.kind, e.components, e.hyperparameters, e.form)
        assert again.tensors.keys() == e.tensors.keys() and all(torch.equal(again.tensors[k], e.tensors[k]) for k in e.tensors)


def test_fuzz_edit_manifest_and_tensors():
    @FUZZ.__class__(FUZZ, max_examples=N)
    @given(mutated_json(MANIFEST), st.booleans())
    def manifest(data, fix):
        _edit_case(data, TENSORS, fix)

    @FUZZ.__class__(FUZZ, max_examples=N)
    @given(st.one_of(damaged(TENSORS), tensor_dicts), st.booleans())
    def tensors(data, fix):
        _edit_case(json.dumps(MANIFEST).encode(), data, fix)

    manifest()
    tensors()
    _report("edit")


# --- suite files --------------------------------------------------------------------------------

RECORDS = [
    {"clean": f"The {w} said", "corrupted": f"The {v} said", "answer": " she", "wrong_answer": " he", "group": w, **({"split": "eval"} if i % 3 == 0 else {})}
    for i, (w, v) in enumerate([("nurse", "pilot"), ("maid", "monk"), ("queen", "king"), ("aunt", "uncle"), ("girl", "boy"), ("wife", "husband")])
]
SUITE_FILES = {
    ".jsonl": "\n".join(json.dumps(r) for r in RECORDS).encode(),
    ".json": json.dumps({"name": "fuzz", "kind": "harmful", "metric": "logit_diff", "pairs": RECORDS}).encode(),
    ".csv": ("clean,corrupted,answer,wrong_answer,split,group,metadata\n" + "".join(
        f"{r['clean']},{r['corrupted']},{r['answer']},{r['wrong_answer']},{r.get('split', '')},{r['group']},\"{{\"\"k\"\": \"\"v\"\"}}\"\n" for r in RECORDS
    )).encode(),
}


def _suite_case(suffix: str, data: bytes) -> None:
    COUNTS["suite"] += 1
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"s{suffix}"
        path.write_bytes(data)
        try:
            s = load_suite(path)
        except SuiteError:
            return
        assert load_suite(path).content_hash == s.content_hash  # deterministic
        pairs = list(s.records)
        out = Path(d) / "again.jsonl"
        out.write_text("\n".join(json.dumps({"clean": p.clean, "corrupted": p.corrupted, "answer": p.answer, "wrong_answer": p.wrong_answer,
                                             "split": p.split, "group": p.group}) for p in pairs))
        again = load_suite(out)
        assert [(p.clean, p.corrupted, p.answer, p.wrong_answer, p.split) for p in again.records] == [
            (p.clean, p.corrupted, p.answer, p.wrong_answer, p.split) for p in pairs
        ]


def test_fuzz_suite_files():
    @FUZZ.__class__(FUZZ, max_examples=N)
    @given(st.sampled_from([".jsonl", ".json"]).flatmap(lambda sfx: st.tuples(st.just(sfx), mutated_json(RECORDS if sfx == ".jsonl" else json.loads(SUITE_FILES[".json"])))))
    def structural(case):
        suffix, data = case
        if suffix == ".jsonl":  # one record per line
            data = b"\n".join(json.dumps(r).encode() if not isinstance(r, bytes) else r for r in _jsonl_lines(data))
        _suite_case(suffix, data)

    @FUZZ.__class__(FUZZ, max_examples=N)
    @given(st.sampled_from(sorted(SUITE_FILES)).flatmap(lambda sfx: st.tuples(st.just(sfx), damaged(SUITE_FILES[sfx]))))
    def bytes_(case):
        _suite_case(*case)

    structural()
    bytes_()
    _report("suite")


def _jsonl_lines(data: bytes) -> list[bytes]:
    """A mutated JSON list as JSONL lines (or the damaged bytes as one line when it no longer parses)."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return [data]
    return [json.dumps(r, allow_nan=True).encode() for r in value] if isinstance(value, list) else [data]


# --- checkpoints --------------------------------------------------------------------------------

CHECKPOINT = st_save({"patched": torch.randn(2, 3)})
checkpoint_dicts = st.dictionaries(
    st.sampled_from(["patched", "other"]),
    st.tuples(st.sampled_from([torch.float32, torch.bfloat16, torch.int32]), st.sampled_from([(2, 3), (3, 2), (2, 3, 1), ()]), st.sampled_from([0.5, float("nan"), -float("inf")])),
    max_size=2,
).map(lambda d: st_save({k: torch.full(shape, fill).to(dtype) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype) for k, (dtype, shape, fill) in d.items()}))


def _checkpoint_case(data: bytes) -> None:
    from circuits.probing import checkpoints

    COUNTS["checkpoint"] += 1
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "layer_0.safetensors"
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = checkpoints.load_layer(path, (2, 3))
        if rows is None:
            assert not path.exists()  # discarded, to be recomputed
            return
        assert tuple(rows.shape) == (2, 3) and bool(torch.isfinite(rows).all())
        checkpoints.save_layer(path, rows)
        assert torch.equal(checkpoints.load_layer(path, (2, 3)), rows)


def test_fuzz_checkpoints():
    pytest.importorskip("circuits.probing.checkpoints")

    @FUZZ.__class__(FUZZ, max_examples=N)
    @given(damaged(CHECKPOINT))
    def bytes_(data):
        _checkpoint_case(data)

    @FUZZ.__class__(FUZZ, max_examples=N)
    @given(checkpoint_dicts)
    def tensors(data):
        _checkpoint_case(data)

    bytes_()
    tensors()
    _report("checkpoint")


# --- CLI arguments (no model is ever loaded) ----------------------------------------------------


class ModelLoaded(Exception):
    """Raised instead of loading a model: reaching it with a bad argument means a check came too late."""


def _cli_world(root: Path) -> dict[str, str]:
    atlas = make_atlas().save(root / "a.atlas.json")
    edit = save_edit(Edit("scaling", (HeadRef(0, 1),), {}, "tiny", "sha256:" + "0" * 64, hyperparameters={"alpha": 0.5}), root / "e.json")
    (root / "full").mkdir()
    (root / "full" / "x").write_text("x")
    (root / "file").write_text("x")
    (root / "garbage.json").write_bytes(b'{"schema_version": "0.3", "x": \xff NaN')
    (root / "deep.json").write_bytes(b"[" * 10_000 + b"]" * 10_000)
    return {"atlas": str(atlas), "edit": str(edit), "root": str(root)}


def _bad_options(w: dict[str, str]) -> dict[str, st.SearchStrategy[list[str]]]:
    r = w["root"]
    bad_out = st.sampled_from([f"{r}/full", f"{r}/file/o.json", f"{r}/file/x/y.json", r])
    bad_in = st.sampled_from([f"{r}/missing.json", f"{r}/garbage.json", f"{r}/deep.json", f"{r}/full", "/dev/zero", f"{r}/file"])
    nonpos = st.integers(-(2**40), 0).map(str)
    negative = st.integers(-(2**40), -1).map(str)
    nonfinite = st.sampled_from(["nan", "inf", "-inf", "abc", "1e999", ""])
    word = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=8)

    def opt(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
        return values.map(lambda v: [name, v])

    return {
        "edit": st.one_of(
            opt("-o", bad_out), opt("-o", st.sampled_from([f"{r}/e.txt", f"{r}/e", f"{r}/e.json.bak"])), opt("--mode", word.filter(lambda v: v not in ("zero", "mean", "resample"))),
            opt("--kind", word), opt("--granularity", word), opt("--k", nonpos), opt("--rank", nonpos), opt("--steps", nonpos),
            opt("--alpha", nonfinite), opt("--lr", nonfinite), opt("--coefficient", nonfinite), opt("--preservation", nonfinite),
            opt("--generations", negative), opt("--max-tokens", nonpos), opt("--layer", st.integers(1, 2**40).map(str)), opt("--bogus", word),
        ),
        "scan": st.one_of(
            opt("-o", bad_out), opt("--max-pairs", nonpos), opt("--split", word), opt("--executor", word.filter(lambda v: v not in ("inprocess", "ray"))),
            opt("--threshold", nonfinite), opt("--suite", bad_in), opt("--metric", word), opt("--workers", nonpos), opt("--checkpoint-dir", st.just(f"{r}/file")),
        ),
        "trace": st.one_of(
            opt("--samples", nonpos), opt("--window", nonpos), opt("--facts", nonpos), opt("--kind", word.filter(lambda v: v not in ("resid", "mlp", "attn"))),
            opt("--atlas", bad_in), opt("-o", bad_out),
        ),
        "generate": st.one_of(opt("--max-new-tokens", negative), opt("--edit", bad_in)),
        "eval": st.one_of(opt("--max-pairs", nonpos), opt("--max-tokens", nonpos), opt("--edit", bad_in), opt("-o", bad_out), opt("--suite", word)),
        "export": st.one_of(opt("-o", st.sampled_from([f"{r}/file", f"{r}/full"])), opt("--edit", bad_in)),
        "report": opt("-o", bad_out),
        "merge": opt("-o", bad_out),
    }


def _base(command: str, w: dict[str, str]) -> list[str]:
    r = w["root"]
    return {
        "edit": ["edit", w["atlas"], "-o", f"{r}/new.json"], "scan": ["scan", "-o", f"{r}/new.json"], "trace": ["trace"],
        "generate": ["generate", "-p", "hi"], "eval": ["eval", "--edit", w["edit"], "--suite", "gender-occupation"],
        "export": ["export", "--edit", w["edit"], "-o", f"{r}/newdir"], "report": ["report", w["atlas"], "-o", f"{r}/r.html"],
        "merge": ["atlas", "merge", w["atlas"], "-o", f"{r}/m.json"],
    }[command]


def test_fuzz_cli_arguments(monkeypatch):
    from typer.testing import CliRunner

    import circuits.model
    from circuits.cli import app

    def refuse(*args, **kwargs):
        raise ModelLoaded

    monkeypatch.setattr(circuits.model, "load_model", refuse)
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as d:
        w = _cli_world(Path(d))
        bad = _bad_options(w)
        commands = st.sampled_from(sorted(bad)).flatmap(lambda c: st.tuples(st.just(c), st.lists(bad[c], min_size=1, max_size=3)))

        @FUZZ.__class__(FUZZ, max_examples=2 * N)
        @given(commands)
        def invalid(case):
            command, injections = case
            COUNTS["cli"] += 1
            args = _base(command, w) + [a for inj in injections for a in inj]
            res = runner.invoke(app, args)
            assert not isinstance(res.exception, ModelLoaded), f"model loaded before refusing {args}"
            assert res.exception is None or isinstance(res.exception, SystemExit), (args, repr(res.exception))
            assert res.exit_code == 2 and res.stderr.strip(), (args, res.exit_code, res.output)
            assert not Path(w["root"], "new.json").exists() and not Path(w["root"], "m.json").exists()

        invalid()
    _report("cli")
