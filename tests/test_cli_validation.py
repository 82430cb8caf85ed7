"""CLI inputs and outputs are checked before any model loads: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import circuits.model
from circuits.cli import app
from circuits.editing import Edit, save_edit
from circuits.sites import HeadRef
from tests.atlas.test_schema import make_atlas


class ModelLoaded(Exception):
    """Raised instead of loading a model: reaching it means the CLI checked too late."""


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise ModelLoaded("a model was loaded before the inputs were checked")

    monkeypatch.setattr(circuits.model, "load_model", refuse)


@pytest.fixture
def files(tmp_path):
    atlas = make_atlas().save(tmp_path / "a.atlas.json")
    edit = save_edit(Edit("scaling", (HeadRef(0, 1),), {}, "tiny", "sha256:" + "0" * 64, hyperparameters={"alpha": 0.5}), tmp_path / "e.json")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "x").write_text("x")
    (tmp_path / "afile").write_text("x")
    return {"atlas": str(atlas), "edit": str(edit), "tmp": tmp_path}


def _cases(f) -> list[tuple[list[str], str]]:
    t = f["tmp"]
    return [
        (["edit", f["atlas"], "-o", str(t / "e.txt")], "must end in .json"),
        (["edit", f["atlas"], "-o", str(t / "adir")], "must end in .json"),
        (["edit", f["atlas"], "-o", str(t / "adir.json" / "..")], "must end in .json"),
        (["edit", f["atlas"], "-o", str(t / "afile" / "e.json")], "is not a directory"),
        (["edit", f["atlas"], "-o", str(t / "o.json"), "--mode", "bogus"], "mode"),
        (["edit", f["atlas"], "-o", str(t / "o.json"), "--kind", "bogus"], "Invalid value for '--kind'"),
        (["edit", f["atlas"], "-o", str(t / "o.json"), "--alpha", "nan"], "alpha must be a finite number"),
        (["edit", f["atlas"], "-o", str(t / "o.json"), "--lr", "inf"], "lr must be a finite number"),
        (["edit", f["atlas"], "-o", str(t / "o.json"), "--lr", "abc"], "Invalid value for '--lr'"),
        (["edit", f["atlas"], "-o", str(t / "o.json"), "--k", "0"], "k must be an integer >= 1"),
        (["edit", f["atlas"], "-o", str(t / "o.json"), "--kind", "steering", "--layer", "5"], "--layer 5 does not exist"),
        (["edit", str(t / "missing.json"), "-o", str(t / "o.json")], "cannot read atlas"),
        (["trace", "--atlas", str(t / "missing.json")], "cannot read atlas"),
        (["trace", "--samples", "0"], "--samples"),
        (["trace", "-o", str(t / "adir")], "is a directory"),
        (["scan", "-o", str(t / "o.json"), "--max-pairs", "0"], "--max-pairs must be >= 1"),
        (["scan", "-o", str(t / "adir")], "is a directory"),
        (["scan", "-o", str(t / "o.json"), "--checkpoint-dir", str(t / "afile")], "is a file"),
        (["scan", "-o", str(t / "o.json"), "--threshold", "nan"], "finite"),
        (["generate", "-p", "hi", "--max-new-tokens", "-1"], "--max-new-tokens must be >= 0"),
        (["eval", "--edit", f["edit"], "--max-pairs", "0"], "--max-pairs must be >= 1"),
        (["eval", "--edit", f["edit"], "-o", str(t / "adir")], "is a directory"),
        (["eval", "--edit", f["edit"]], "recorded in"),  # the manifest's suite "" is not a shipped suite
        (["export", "--edit", f["edit"], "-o", str(t / "afile")], "is a file"),
        (["export", "--edit", f["edit"], "-o", str(t / "adir")], "not empty"),
        (["report", f["atlas"], "-o", str(t / "adir")], "is a directory"),
        (["atlas", "merge", f["atlas"], "-o", str(t / "afile" / "m.json")], "is not a directory"),
    ]


def test_every_bad_input_fails_before_the_model_loads_with_exit_2_on_stderr(files, no_model):
    runner = CliRunner()
    for args, message in _cases(files):
        r = runner.invoke(app, args)
        assert not isinstance(r.exception, ModelLoaded), args
        assert r.exit_code == 2, (args, r.output)
        assert message in r.stderr, (args, r.stderr)
        assert r.stdout.strip() == "", (args, r.stdout)
    assert not (files["tmp"] / "o.json").exists() and not (files["tmp"] / "e.txt").exists()


def test_a_suite_name_inside_an_atlas_is_not_used_as_a_path(files, no_model):
    evil = files["tmp"] / "x.jsonl"
    evil.write_text('{"clean": "a", "corrupted": "b", "answer": " c", "wrong_answer": " d"}\n')
    raw = json.loads(open(files["atlas"]).read())
    raw["behaviours"][0]["suite"]["name"] = "../" * 10 + str(evil)
    path = files["tmp"] / "evil.atlas.json"
    path.write_text(json.dumps(raw))
    r = CliRunner().invoke(app, ["edit", str(path), "-o", str(files["tmp"] / "o.json")])
    assert r.exit_code == 2 and "is not a shipped suite" in r.stderr


def test_edit_refuses_an_atlas_of_other_weights_before_building(tmp_path):
    from circuits.model.tiny import save_tiny_hf

    model_dir = save_tiny_hf("llama", tmp_path / "tiny", seed=0)
    atlas = make_atlas().save(tmp_path / "a.atlas.json")  # fingerprint sha256:000…: not this model
    r = CliRunner().invoke(app, ["edit", str(atlas), "-o", str(tmp_path / "e.json"), "--model", str(model_dir), "--no-evaluate"])
    assert r.exit_code == 2 and "build edits on the model the atlas describes" in r.stderr
    assert not (tmp_path / "e.json").exists()


def test_edit_refuses_an_atlas_measured_under_another_tokenization(tmp_path):
    """An atlas of these weights, measured with BOS prepended (as every atlas before schema 0.4 was)."""
    from circuits.model import fingerprint, load_model
    from circuits.model.tiny import save_tiny_hf

    model_dir = save_tiny_hf("llama", tmp_path / "tiny", seed=0)
    lm = load_model(model_dir)
    a = make_atlas()
    model = a.model.model_copy(update={"fingerprint": fingerprint(lm), "tokenization": a.model.tokenization.model_copy(update={"prepend_bos": True, "source": "legacy"})})
    atlas = a.model_copy(update={"model": model}).save(tmp_path / "a.atlas.json")
    r = CliRunner().invoke(app, ["edit", str(atlas), "-o", str(tmp_path / "e.json"), "--model", str(model_dir), "--no-evaluate"])
    assert r.exit_code == 2, r.output
    assert "measured with BOS prepended (legacy)" in r.stderr and "--prepend-bos" in r.stderr
    assert not (tmp_path / "e.json").exists()

    from circuits.atlas.schema import Atlas
    from circuits.editing import EditError
    from circuits.editing.build import check_atlas

    with pytest.raises(EditError, match="rescan the atlas"):
        check_atlas(lm, Atlas.load(atlas))
    check_atlas(load_model(model_dir, prepend_bos=True), Atlas.load(atlas))  # the atlas's policy: accepted
