"""Property tests over every loader: a mutated file loads and round-trips, or raises the project's error.

Every loader gets generated cases (structural mutations of a valid file, byte damage, invalid UTF-8,
NaN/Infinity, huge integers, deep nesting) and, since issue 30, the cases that round found mishandled:
keys twice, lone surrogates, U+2028 inside JSONL strings, CSV line breaks and repeated columns, atlas
ids of another kind and circuits or traces outside the model, edits naming weights the model lacks or
in dtypes it does not compute in or overflowing its logits, damaged model directories and GGUF files,
and outputs pointed at inputs. No other exception type may escape: not ``KeyError``, ``TypeError``,
``RecursionError``, ``UnicodeDecodeError`` nor pydantic's; every error names the file; whatever is
accepted is used (an atlas rendered and written back, an edit applied to a model with finite logits
and removed bit for bit, a model loaded and run); nothing runs past its time limit.

Two tiers: the default runs a few dozen cases per loader (the edit–test loop); ``-m slow`` runs 500 per
strategy (:data:`FULL`); ``tests/reliability_campaign.py`` runs the same cases at the issue's counts and
records the figures. ``-s`` prints the counts.
"""

from __future__ import annotations

import functools
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
from tests.fuzz import COUNTS, FUZZ, atlas_semantic, damaged, dumps_special, mutated_json, text_damaged, time_limit

#: Examples per strategy in the slow tier (two or three strategies per loader).
FULL = 500
#: ``n`` of every fuzz test: a few dozen in the default tier, :data:`FULL` in the slow one.
TIERS = [pytest.param(25, id="quick"), pytest.param(FULL, id="full", marks=pytest.mark.slow)]
#: A case running longer than this is a hang.
CASE_SECONDS = 60


def _report(name: str, minimum: int) -> None:
    print(f"fuzz {name}: {COUNTS[name]} cases")
    assert COUNTS[name] >= minimum


def _settings(n: int):  # noqa: ANN202 - a hypothesis settings object
    return FUZZ.__class__(FUZZ, max_examples=n)


# --- atlas --------------------------------------------------------------------------------------

ATLAS = json.loads(make_atlas().model_dump_json())
ATLAS_0_1 = {**ATLAS, "schema_version": "0.1", "provenance": {**ATLAS["provenance"], "seed": 0}}
del ATLAS_0_1["provenance"]["seeds"]


def atlas_case(data: bytes, counter: str = "atlas") -> str:
    """Parse a mutated atlas: refused with an AtlasError naming the file, or rendered and written back.

    Returns:
        ``"refused"`` or ``"accepted"``.

    Raises:
        AssertionError: An accepted atlas that cannot be rendered or written back (wrongly accepted), or an
            error that does not name the file.
    """
    from circuits.atlas.report import render

    COUNTS[counter] += 1
    with time_limit(CASE_SECONDS):
        try:
            a = Atlas.parse(data, source="fuzz.json")
        except AtlasError as e:
            assert "fuzz.json" in str(e), str(e)
            return "refused"
        assert Atlas.parse(a.model_dump_json()) == a
        render(a)  # what is accepted can be shown ...
        with tempfile.TemporaryDirectory() as d:  # ... and written back
            assert Atlas.load(a.save(Path(d) / "a.json")) == a
    return "accepted"


@pytest.mark.parametrize("n", TIERS)
def test_fuzz_atlas(n):
    COUNTS["atlas"] = 0

    @_settings(n)
    @given(st.sampled_from([ATLAS, ATLAS_0_1]).flatmap(mutated_json))
    def structural(data):
        atlas_case(data)

    @_settings(n)
    @given(damaged(json.dumps(ATLAS, indent=1).encode()))
    def bytes_(data):
        atlas_case(data)

    @_settings(n)
    @given(atlas_semantic(ATLAS))
    def semantic(data):
        atlas_case(data)

    structural()
    bytes_()
    semantic()
    _report("atlas", 3 * n)


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


@functools.lru_cache(maxsize=1)
def fuzz_model():  # noqa: ANN201 - a HookedLM
    """The model fuzzed edits are applied to (a saved tiny Llama, vocabulary 64; loaded once per process)."""
    from circuits.model import load_model
    from tests.fuzz import tiny_model_dir

    directory = Path(tempfile.mkdtemp(prefix="fuzz-model-"))
    return load_model(tiny_model_dir(directory))


def _model_edits() -> list[tuple[dict, bytes]]:
    """Manifests and tensors of edits made for :func:`fuzz_model` (every kind the fuzz varies), as saved."""
    from circuits.editing.build import new_edit
    from circuits.sites import MlpRef, ResidRef

    m = fuzz_model()
    g = torch.Generator().manual_seed(0)
    made = [
        new_edit("ablation", (HeadRef(0, 1), HeadRef(1, 2)), {"L0H1": torch.randn(8, generator=g), "L1H2": torch.randn(8, generator=g)}, m, {"mode": "mean"}),
        new_edit("ablation", (HeadRef(0, 1),), {"L0H1": torch.randn(4, 8, generator=g)}, m, {"mode": "resample", "seed": 1}),
        new_edit("scaling", (HeadRef(0, 0),), {}, m, {"alpha": 0.5}),
        new_edit("steering", (ResidRef(1, None),), {"vector": torch.randn(32, generator=g)}, m, {"coefficient": -1.0}),
        new_edit("low_rank", (MlpRef(0),), {"blocks.0.mlp.out.weight.lora_A": torch.randn(2, 64, generator=g), "blocks.0.mlp.out.weight.lora_B": torch.randn(32, 2, generator=g)},
                 m, {"alpha": 1.0, "rank": 2}, form="weights"),
        new_edit("weight_delta", (MlpRef(0),), {"blocks.0.mlp.out.weight.delta": 0.01 * torch.randn(32, 64, generator=g)}, m, {}, form="weights"),
    ]
    out = []
    with tempfile.TemporaryDirectory() as d:
        for i, e in enumerate(made):
            path = save_edit(e, Path(d) / f"e{i}.json")
            out.append((json.loads(path.read_text()), path.with_suffix(".safetensors").read_bytes()))
    return out


def edit_case(manifest: bytes, tensors: bytes, fix_hash: bool, counter: str = "edit") -> str:
    """Load a mutated edit; an accepted one must round-trip and meet the fuzz model safely.

    Applied (as hooks and as weights where it has a weight form), it is refused with one EditError, or
    the logits are finite; either way the model is afterwards bit for bit what it was.

    Returns:
        ``"refused"`` (at load), ``"refused when applied"`` or ``"accepted"``.
    """
    from circuits import model as M
    from circuits.editing import apply_edit

    COUNTS[counter] += 1
    if fix_hash:
        try:
            raw = json.loads(manifest)
            raw["tensors_sha256"] = hashlib.sha256(tensors).hexdigest()
            manifest = json.dumps(raw, allow_nan=True).encode()
        except (ValueError, TypeError, KeyError, IndexError, RecursionError):
            pass
    with tempfile.TemporaryDirectory() as d, time_limit(CASE_SECONDS):
        path = Path(d) / "e.json"
        path.write_bytes(manifest)
        path.with_suffix(".safetensors").write_bytes(tensors)
        try:
            e = load_edit(path)
        except EditError as err:
            assert str(path) in str(err) or str(path.with_suffix(".safetensors")) in str(err), f"the error names neither file: {err}"
            return "refused"
        again = load_edit(save_edit(e, Path(d) / "again.json"))
        assert (again.kind, again.components, again.hyperparameters, again.form) == (e.kind, e.components, e.hyperparameters, e.form)
        assert again.tensors.keys() == e.tensors.keys() and all(torch.equal(again.tensors[k], e.tensors[k]) for k in e.tensors)
        m = fuzz_model()
        before = M.fingerprint(m)
        outcome = "accepted"
        for form in ("auto", "weights"):
            try:
                with apply_edit(m, e, check_fingerprint=False, form=form):
                    logits = M.run(m, torch.tensor([[4, 5, 6, 7]]))
                assert bool(torch.isfinite(logits).all()), f"{e}: non-finite logits accepted"
            except EditError:
                outcome = "refused when applied" if form == "auto" else outcome
            assert M.fingerprint(m) == before and not m.overlays and not m.weight_edits, f"{e}: the model was left changed"
        return outcome


@pytest.mark.parametrize("n", TIERS)
def test_fuzz_edit_manifest_and_tensors(n):
    from tests.fuzz import HYPERPARAMETER_VALUES, edit_tensors

    COUNTS["edit"] = 0
    made = _model_edits()

    @_settings(n)
    @given(st.sampled_from([(MANIFEST, TENSORS), *made]).flatmap(lambda mt: st.tuples(mutated_json(mt[0]), st.just(mt[1]))), st.booleans())
    def manifest(case, fix):
        edit_case(case[0], case[1], fix)

    @_settings(n)
    @given(st.one_of(damaged(TENSORS), tensor_dicts, edit_tensors().map(st_save)), st.sampled_from([MANIFEST, *(m for m, _ in made)]), st.booleans())
    def tensors(data, base, fix):
        edit_case(json.dumps(base).encode(), data, fix)

    @_settings(n)
    @given(st.sampled_from(made), st.dictionaries(st.sampled_from(["alpha", "coefficient", "mode", "seed", "rank", "k"]), st.sampled_from(HYPERPARAMETER_VALUES), min_size=1, max_size=2))
    def hyperparameters(case, values):
        base, blob = case
        raw = {**base, "hyperparameters": {**base["hyperparameters"], **values}}
        edit_case(dumps_special(raw), blob, False)

    manifest()
    tensors()
    hyperparameters()
    _report("edit", 3 * n)


# --- suite files --------------------------------------------------------------------------------

RECORDS = [
    # A valid file (every record split, as the loader requires of all or none), so mutations reach acceptance too.
    {"clean": f"The {w} said", "corrupted": f"The {v} said", "answer": " she", "wrong_answer": " he", "group": w, "split": "eval" if i % 3 == 0 else "build"}
    for i, (w, v) in enumerate([("nurse", "pilot"), ("maid", "monk"), ("queen", "king"), ("aunt", "uncle"), ("girl", "boy"), ("wife", "husband")])
]
SUITE_FILES = {
    ".jsonl": "\n".join(json.dumps(r) for r in RECORDS).encode(),
    ".json": json.dumps({"name": "fuzz", "kind": "harmful", "metric": "logit_diff", "pairs": RECORDS}).encode(),
    ".csv": ("clean,corrupted,answer,wrong_answer,split,group,metadata\n" + "".join(
        f"{r['clean']},{r['corrupted']},{r['answer']},{r['wrong_answer']},{r['split']},{r['group']},\"{{\"\"k\"\": \"\"v\"\"}}\"\n" for r in RECORDS
    )).encode(),
}


def suite_case(suffix: str, data: bytes, counter: str = "suite") -> str:
    """Load a mutated suite file: refused with a SuiteError that starts with the file's path, or loaded
    deterministically and written back as JSONL that loads the same pairs.

    Returns:
        ``"refused"`` or ``"accepted"``.
    """
    COUNTS[counter] += 1
    with tempfile.TemporaryDirectory() as d, time_limit(CASE_SECONDS):
        path = Path(d) / f"s{suffix}"
        path.write_bytes(data)
        try:
            s = load_suite(path)
        except SuiteError as e:
            assert str(e).startswith(str(path)), f"the error does not name the file: {e}"
            return "refused"
        assert load_suite(path).content_hash == s.content_hash  # deterministic
        pairs = list(s.records)
        out = Path(d) / "again.jsonl"
        out.write_text("\n".join(json.dumps({"clean": p.clean, "corrupted": p.corrupted, "answer": p.answer, "wrong_answer": p.wrong_answer,
                                             "split": p.split, "group": p.group}, ensure_ascii=False) for p in pairs), encoding="utf-8")
        again = load_suite(out)
        assert [(p.clean, p.corrupted, p.answer, p.wrong_answer, p.split) for p in again.records] == [
            (p.clean, p.corrupted, p.answer, p.wrong_answer, p.split) for p in pairs
        ]
    return "accepted"


@pytest.mark.parametrize("n", TIERS)
def test_fuzz_suite_files(n):
    COUNTS["suite"] = 0

    @_settings(n)
    @given(st.sampled_from([".jsonl", ".json"]).flatmap(lambda sfx: st.tuples(st.just(sfx), mutated_json(RECORDS if sfx == ".jsonl" else json.loads(SUITE_FILES[".json"])))))
    def structural(case):
        suffix, data = case
        if suffix == ".jsonl":  # one record per line
            data = b"\n".join(json.dumps(r).encode() if not isinstance(r, bytes) else r for r in _jsonl_lines(data))
        suite_case(suffix, data)

    @_settings(n)
    @given(st.sampled_from(sorted(SUITE_FILES)).flatmap(lambda sfx: st.tuples(st.just(sfx), damaged(SUITE_FILES[sfx]))))
    def bytes_(case):
        suite_case(*case)

    @_settings(n)
    @given(st.sampled_from(sorted(SUITE_FILES)).flatmap(lambda sfx: st.tuples(st.just(sfx), text_damaged(SUITE_FILES[sfx]))))
    def text(case):
        suite_case(*case)

    structural()
    bytes_()
    text()
    _report("suite", 3 * n)


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


def checkpoint_case(data: bytes, counter: str = "checkpoint") -> str:
    """A damaged checkpoint is discarded (to be recomputed) or is whole, finite and of the right shape."""
    from circuits.probing import checkpoints

    COUNTS[counter] += 1
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "layer_0.safetensors"
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = checkpoints.load_layer(path, (2, 3))
        if rows is None:
            assert not path.exists()  # discarded, to be recomputed
            return "refused"
        assert tuple(rows.shape) == (2, 3) and bool(torch.isfinite(rows).all())
        checkpoints.save_layer(path, rows)
        assert torch.equal(checkpoints.load_layer(path, (2, 3)), rows)
    return "accepted"


@pytest.mark.parametrize("n", TIERS)
def test_fuzz_checkpoints(n):
    pytest.importorskip("circuits.probing.checkpoints")
    COUNTS["checkpoint"] = 0

    @_settings(n)
    @given(damaged(CHECKPOINT))
    def bytes_(data):
        checkpoint_case(data)

    @_settings(n)
    @given(checkpoint_dicts)
    def tensors(data):
        checkpoint_case(data)

    bytes_()
    tensors()
    _report("checkpoint", 2 * n)


# --- CLI arguments (no model is ever loaded) ----------------------------------------------------


class ModelLoaded(Exception):
    """Raised instead of loading a model: reaching it with a bad argument means a check came too late."""


def _cli_world(root: Path) -> dict[str, str]:
    import os

    atlas = make_atlas().save(root / "a.atlas.json")
    edit = save_edit(Edit("scaling", (HeadRef(0, 1),), {}, "tiny", "sha256:" + "0" * 64, hyperparameters={"alpha": 0.5}), root / "e.json")
    (root / "full").mkdir()
    (root / "full" / "x").write_text("x")
    (root / "file").write_text("x")
    (root / "garbage.json").write_bytes(b'{"schema_version": "0.3", "x": \xff NaN')
    (root / "deep.json").write_bytes(b"[" * 10_000 + b"]" * 10_000)
    (root / "broken").mkdir()  # a model directory whose config is a list
    (root / "broken" / "config.json").write_text("[1, 2]")
    (root / "broken" / "model.safetensors").write_bytes(b"")
    records = [{"clean": f"a{i}", "corrupted": f"b{i}", "answer": " c", "wrong_answer": " d", "split": "eval"} for i in range(4)]
    (root / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    os.symlink(atlas, root / "link.atlas.json")
    os.link(atlas, root / "hard.atlas.json")
    os.symlink(edit, root / "link-e.json")
    os.mkfifo(root / "fifo")
    return {"atlas": str(atlas), "edit": str(edit), "root": str(root)}


def _bad_options(w: dict[str, str]) -> dict[str, st.SearchStrategy[list[str]]]:
    r = w["root"]
    bad_out = st.sampled_from([f"{r}/full", f"{r}/file/o.json", f"{r}/file/x/y.json", r, f"{r}/fifo", "/dev/null"])
    # The atlas is an input of edit, report and merge: an output over it, however it is spelled, is refused.
    over_atlas = st.sampled_from([w["atlas"], f"{r}/link.atlas.json", f"{r}/hard.atlas.json", f"{r}/./full/../a.atlas.json"])
    atlas_out = st.one_of(bad_out, over_atlas)
    bad_in = st.sampled_from([f"{r}/missing.json", f"{r}/garbage.json", f"{r}/deep.json", f"{r}/full", "/dev/zero", f"{r}/file", f"{r}/fifo"])
    bad_model = st.sampled_from(["", " ", f"{r}/broken", f"{r}/missing-dir", f"{r}/file", f"{r}/garbage.gguf", "../../etc", "a\nb"])
    nonpos = st.integers(-(2**40), 0).map(str)
    negative = st.integers(-(2**40), -1).map(str)
    huge = st.sampled_from([str(2**63), str(2**64), str(10**30)])
    nonfinite = st.sampled_from(["nan", "inf", "-inf", "abc", "1e999", ""])
    word = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=8)

    def opt(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
        return values.map(lambda v: [name, v])

    return {
        "edit": st.one_of(
            opt("-o", atlas_out), opt("-o", st.sampled_from([f"{r}/e.txt", f"{r}/e", f"{r}/e.json.bak"])), opt("--mode", word.filter(lambda v: v not in ("zero", "mean", "resample"))),
            opt("--kind", word), opt("--granularity", word), opt("--k", nonpos), opt("--rank", nonpos), opt("--steps", nonpos),
            opt("--alpha", nonfinite), opt("--lr", nonfinite), opt("--coefficient", nonfinite), opt("--preservation", nonfinite),
            opt("--generations", negative), opt("--max-tokens", nonpos), opt("--layer", st.integers(1, 2**40).map(str)), opt("--bogus", word),
            opt("--model", bad_model), opt("--seed", st.one_of(negative, huge)), opt("--suite", st.just(f"{r}/eval.jsonl")), opt("--layer", negative),
        ),
        "scan": st.one_of(
            opt("-o", bad_out), opt("--max-pairs", nonpos), opt("--split", word), opt("--executor", word.filter(lambda v: v not in ("inprocess", "ray"))),
            opt("--threshold", nonfinite), opt("--suite", bad_in), opt("--metric", word), opt("--workers", nonpos), opt("--checkpoint-dir", st.just(f"{r}/file")),
            opt("--model", bad_model), opt("--seed", st.one_of(negative, huge)), opt("--suite", st.just(f"{r}/eval.jsonl")),
        ),
        "circuit": st.one_of(
            opt("-o", bad_out), opt("--atlas", bad_in), opt("--model", bad_model), opt("--tau", st.sampled_from(["-1", "nan", "inf"])),
            opt("--max-pairs", nonpos), opt("--suite", st.just(f"{r}/eval.jsonl")), opt("--target", st.sampled_from(["0", "1.5", "nan"])),
        ),
        "trace": st.one_of(
            opt("--samples", nonpos), opt("--window", nonpos), opt("--facts", nonpos), opt("--kind", word.filter(lambda v: v not in ("resid", "mlp", "attn"))),
            opt("--atlas", bad_in), opt("-o", bad_out), opt("--model", bad_model), opt("--seed", st.one_of(negative, huge)),
            opt("--subject", st.sampled_from(["", "Louvre"])), opt("--target", st.just("")),
        ),
        "generate": st.one_of(opt("--max-new-tokens", negative), opt("--edit", bad_in), opt("--model", bad_model), opt("--prompt", st.just(""))),
        "eval": st.one_of(opt("--max-pairs", nonpos), opt("--max-tokens", nonpos), opt("--edit", bad_in), opt("-o", bad_out), opt("--suite", word),
                          opt("--model", bad_model), opt("--seed", negative), opt("-o", st.sampled_from([w["edit"], f"{r}/link-e.json", w["edit"].replace(".json", ".safetensors")]))),
        "export": st.one_of(opt("-o", st.sampled_from([f"{r}/file", f"{r}/full", f"{r}/fifo"])), opt("--edit", bad_in), opt("--model", bad_model)),
        "report": opt("-o", atlas_out),
        "merge": opt("-o", atlas_out),
    }


def _base(command: str, w: dict[str, str]) -> list[str]:
    r = w["root"]
    return {
        "edit": ["edit", w["atlas"], "-o", f"{r}/new.json"], "scan": ["scan", "-o", f"{r}/new.json"], "trace": ["trace"],
        "circuit": ["circuit", "-o", f"{r}/new.json"],
        "generate": ["generate", "-p", "hi"], "eval": ["eval", "--edit", w["edit"], "--suite", "gender-occupation"],
        "export": ["export", "--edit", w["edit"], "-o", f"{r}/newdir"], "report": ["report", w["atlas"], "-o", f"{r}/r.html"],
        "merge": ["atlas", "merge", w["atlas"], "-o", f"{r}/m.json"],
    }[command]


def _inputs_of(w: dict[str, str]) -> dict[str, bytes]:
    import os

    return {p: open(p, "rb").read() for p in (w["atlas"], w["edit"], w["edit"].replace(".json", ".safetensors"))} | {
        "/dev/null": str(os.stat("/dev/null").st_mode).encode(), f"{w['root']}/fifo": str(os.stat(f"{w['root']}/fifo").st_mode).encode()}


def cli_case(runner, w: dict[str, str], args: list[str], counter: str = "cli") -> str:  # noqa: ANN001 - a typer CliRunner
    """Invoke the CLI with a bad argument: exit 2 with one message on stderr, no model loaded, no input or
    special file changed, nothing written.

    Returns:
        ``"refused"``.
    """
    import os

    COUNTS[counter] += 1
    before = _inputs_of(w)
    with time_limit(CASE_SECONDS):
        res = runner.invoke(app_(), args)
    assert not isinstance(res.exception, ModelLoaded), f"model loaded before refusing {args}"
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, repr(res.exception))
    assert res.exit_code == 2 and res.stderr.strip(), (args, res.exit_code, res.output)
    assert not Path(w["root"], "new.json").exists() and not Path(w["root"], "m.json").exists()
    after = {p: (open(p, "rb").read() if p not in ("/dev/null", f"{w['root']}/fifo") else str(os.stat(p).st_mode).encode()) for p in before}
    assert after == before, f"an input was changed by {args}"
    return "refused"


def app_():  # noqa: ANN201 - the typer app (imported late: the CLI imports much)
    from circuits.cli import app

    return app


@pytest.fixture
def no_model_loads(monkeypatch):
    import circuits.model

    def refuse(*args, **kwargs):
        raise ModelLoaded

    monkeypatch.setattr(circuits.model, "load_model", refuse)


@pytest.mark.parametrize("n", TIERS)
def test_fuzz_cli_arguments(n, no_model_loads):
    from typer.testing import CliRunner

    COUNTS["cli"] = 0
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as d:
        w = _cli_world(Path(d))
        bad = _bad_options(w)
        commands = st.sampled_from(sorted(bad)).flatmap(lambda c: st.tuples(st.just(c), st.lists(bad[c], min_size=1, max_size=3)))

        @_settings(2 * n)
        @given(commands)
        def invalid(case):
            command, injections = case
            cli_case(runner, w, _base(command, w) + [a for inj in injections for a in inj])

        invalid()
    _report("cli", 2 * n)


# --- model sources (issue 30) -------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def model_files() -> dict[str, bytes]:
    """The files of :func:`tests.fuzz.tiny_model_dir` and of :func:`circuits.model.tiny.save_tiny_gguf`, as bytes."""
    from circuits.model.tiny import save_tiny_gguf
    from tests.fuzz import tiny_model_dir

    with tempfile.TemporaryDirectory() as d:
        directory = tiny_model_dir(Path(d) / "m")
        files = {p.name: p.read_bytes() for p in directory.iterdir()}
        files["tiny.gguf"] = save_tiny_gguf(Path(d) / "t.gguf").read_bytes()
    return files


def model_case(files: dict[str, bytes], counter: str = "model") -> str:
    """Write a (damaged) model directory or GGUF file: :func:`validate_source` refuses it with one
    ModelLoadError naming the file, or :func:`load_model` loads it and a forward runs.

    Returns:
        ``"refused"``, ``"refused when loading"`` (a GGUF file transformers cannot convert: one clear error)
        or ``"accepted"``.
    """
    from circuits import model as M

    COUNTS[counter] += 1
    with tempfile.TemporaryDirectory() as d, time_limit(CASE_SECONDS):
        root = Path(d)
        if "tiny.gguf" in files:
            source = root / "m.gguf"
            source.write_bytes(files["tiny.gguf"])
        else:
            source = root / "m"
            source.mkdir()
            for name, data in files.items():
                (source / name).write_bytes(data)
        try:
            M.validate_source(source, cache_dir=root / "cache")
        except M.ModelLoadError as e:
            assert str(source) in str(e), f"the error does not name the source: {e}"
            return "refused"
        try:
            lm = M.load_model(source, cache_dir=root / "cache")
        except M.ModelLoadError as e:
            assert source.suffix == ".gguf", f"validated, then refused when loading: {e}"
            assert str(source) in str(e), str(e)
            return "refused when loading"
        M.run(lm, torch.tensor([[1, 2, 3]]))
    return "accepted"


@pytest.mark.parametrize("n", [pytest.param(8, id="quick"), pytest.param(FULL // 5, id="full", marks=pytest.mark.slow)])
def test_fuzz_model_sources(n):
    """Damaged configs, weight files, tokenizers and GGUF files (loading a tiny model takes ~0.2 s: fewer cases)."""
    from tests.fuzz import gguf_damaged

    COUNTS["model"] = 0
    files = model_files()
    directory = {k: v for k, v in files.items() if k != "tiny.gguf"}

    @_settings(n)
    @given(mutated_json(json.loads(files["config.json"])))
    def config(data):
        model_case({**directory, "config.json": data})

    @_settings(n)
    @given(st.sampled_from(["model.safetensors", "tokenizer.json", "tokenizer_config.json"]).flatmap(lambda f: st.tuples(st.just(f), damaged(files[f]))))
    def damaged_file(case):
        name, data = case
        model_case({**directory, name: data})

    @_settings(n)
    @given(gguf_damaged(files["tiny.gguf"]))
    def gguf(data):
        model_case({"tiny.gguf": data})

    config()
    damaged_file()
    gguf()
    _report("model", 3 * n)
