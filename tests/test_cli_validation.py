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


@pytest.mark.slow  # an end-to-end pipeline (> 10 s): make test runs it, make test-fast does not
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


# --- issue 30: outputs never destroy inputs; model sources checked; write errors are errors ------------


def _suite_file(path, split=None):
    rec = [{"clean": f"The nurse {i} said", "corrupted": f"The pilot {i} said", "answer": " she", "wrong_answer": " he", "group": f"g{i}",
            **({"split": split} if split else {})} for i in range(8)]
    path.write_text("\n".join(json.dumps(r) for r in rec) + "\n")
    return path


def _over_inputs(f) -> list[tuple[list[str], str]]:
    """``(argv, input)``: every command, its output pointed at one of its inputs (``OUT`` is replaced)."""
    t = f["tmp"]
    suite = str(_suite_file(t / "s.jsonl"))
    return [
        (["report", f["atlas"], "-o", "OUT"], f["atlas"]),
        (["atlas", "merge", f["atlas"], f["atlas2"], "-o", "OUT"], f["atlas2"]),
        (["edit", f["atlas"], "-o", "OUT"], f["atlas"]),
        (["edit", f["atlas"], "--suite", suite, "-o", "OUT"], suite),
        (["scan", "--suite", suite, "-o", "OUT"], suite),
        (["circuit", "--suite", suite, "-o", "OUT"], suite),
        (["circuit", "--atlas", f["atlas"], "-o", "OUT"], f["atlas"]),
        (["trace", "--atlas", f["atlas"], "-o", "OUT"], f["atlas"]),
        (["eval", "--edit", f["edit"], "--suite", "gender-occupation", "-o", "OUT"], f["edit"]),
        (["eval", "--edit", f["edit"], "--suite", "gender-occupation", "-o", "OUT"], f["edit"].replace(".json", ".safetensors")),
        (["eval", "--edit", f["edit"], "--suite", suite, "-o", "OUT"], suite),
    ]


@pytest.fixture
def more_files(files):
    files["atlas2"] = str(make_atlas().save(files["tmp"] / "b.atlas.json"))
    return files


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "dotted"])
def test_no_command_writes_over_one_of_its_inputs(more_files, no_model, how):
    """`report a.json -o a.json` and its kin are refused before anything runs; the input is left byte for byte."""
    import os

    t = more_files["tmp"]
    runner = CliRunner()
    for i, (args, target) in enumerate(_over_inputs(more_files)):
        before = open(target, "rb").read()
        out = {"same": target, "dotted": str(t / "." / ".." / t.name / os.path.basename(target))}.get(how)
        if out is None:
            out = str(t / f"{how}-{i}{os.path.splitext(target)[1]}")
            (os.symlink if how == "symlink" else os.link)(target, out)
        r = runner.invoke(app, [out if a == "OUT" else a for a in args])
        assert not isinstance(r.exception, ModelLoaded), args
        assert r.exit_code == 2 and "the input" in r.stderr and "destroy" in r.stderr, (how, args, r.stderr)
        assert open(target, "rb").read() == before, (how, args)


def test_export_into_an_input_or_a_model_directory_is_refused(files, no_model, tmp_path):
    from circuits.model.tiny import save_tiny_hf

    model_dir = save_tiny_hf("llama", tmp_path / "tiny")
    r = CliRunner().invoke(app, ["edit", files["atlas"], "--model", str(model_dir), "-o", str(model_dir / "e.json")])
    assert r.exit_code == 2 and "inside the input" in r.stderr and not (model_dir / "e.safetensors").exists()
    r = CliRunner().invoke(app, ["export", "--edit", files["edit"], "--model", str(model_dir), "-o", str(model_dir)])
    assert r.exit_code == 2 and "the input" in r.stderr


def _special_outputs(tmp_path):
    import os
    import socket
    import stat

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock = tmp_path / "sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    out = {"a FIFO": fifo, "a socket": sock, "a directory": tmp_path / "adir", "a link to a FIFO": tmp_path / "link"}
    (tmp_path / "link").symlink_to(fifo)
    if os.geteuid() == 0:  # our own device node (a copy of /dev/full): never the machine's
        os.mknod(tmp_path / "full", stat.S_IFCHR | 0o666, os.makedev(1, 7))
        out["a character device"] = tmp_path / "full"
    return out, s


def test_an_output_that_is_a_device_fifo_socket_or_directory_is_refused(files, no_model):
    import os

    t = files["tmp"]
    specials, sock = _special_outputs(t)
    try:
        for what, path in specials.items():
            kind = os.stat(path).st_mode
            for args in (["report", files["atlas"], "-o", str(path)], ["atlas", "schema", "-o", str(path)],
                         ["scan", "-o", str(path)], ["trace", "-o", str(path)], ["atlas", "merge", files["atlas"], "-o", str(path)]):
                r = CliRunner().invoke(app, args)
                assert r.exit_code == 2 and what.split()[-1] in r.stderr and "written" not in r.stdout, (what, args, r.stderr)
            assert os.stat(path).st_mode == kind  # still the FIFO, socket, device or directory it was
        for what, path in specials.items():  # the library's writers refuse it too (defence in depth)
            from circuits.atomic import NotRegularFileError
            from circuits.io import atomic_write_text

            if what != "a directory":
                with pytest.raises(NotRegularFileError):
                    atomic_write_text(path, "x")
    finally:
        sock.close()


@pytest.mark.parametrize("error", ["ENOSPC", "EACCES", "EROFS"])
def test_a_failed_write_is_an_error_never_written(files, monkeypatch, error):
    """A full disk or a permission error: exit 2, one line naming the output, the old file unchanged, no temporary."""
    import errno
    import os

    t = files["tmp"]
    old = t / "r.html"
    old.write_text("old report")

    def fail(fd):
        raise OSError(getattr(errno, error), os.strerror(getattr(errno, error)))

    monkeypatch.setattr(os, "fsync", fail)
    for args, out in ((["report", files["atlas"], "-o", str(old)], old), (["atlas", "schema", "-o", str(t / "s.json")], t / "s.json"),
                      (["atlas", "merge", files["atlas"], "-o", str(t / "m.json")], t / "m.json")):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2 and f"cannot write {out}" in r.stderr and os.strerror(getattr(errno, error)) in r.stderr, (args, r.stderr)
        assert "written" not in r.stdout and "→" not in r.stdout
    assert old.read_text() == "old report" and not (t / "s.json").exists() and not (t / "m.json").exists()
    assert not [p for p in t.iterdir() if ".tmp-" in p.name]


def test_empty_or_malformed_model_sources_are_refused_before_loading(files, no_model, tmp_path):
    from circuits.model.tiny import save_tiny_hf

    broken = save_tiny_hf("llama", tmp_path / "broken")
    (broken / "config.json").write_text("[1, 2]")
    for args in (["scan", "-o", str(tmp_path / "o.json"), "--model", ""], ["generate", "-p", "hi", "--model", ""],
                 ["edit", files["atlas"], "-o", str(tmp_path / "o.json"), "--model", ""], ["trace", "--model", " smollm2-135m"],
                 ["scan", "-o", str(tmp_path / "o.json"), "--model", str(broken)], ["circuit", "-o", str(tmp_path / "o.json"), "--model", str(broken)],
                 ["export", "--edit", files["edit"], "-o", str(tmp_path / "x"), "--model", str(broken)]):
        r = CliRunner().invoke(app, args)
        assert not isinstance(r.exception, ModelLoaded), args
        assert r.exit_code == 2 and ("empty" in r.stderr or "config.json" in r.stderr), (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


def test_more_bad_invocations_fail_before_the_model_loads(files, no_model):
    t = files["tmp"]
    all_eval, build_only = _suite_file(t / "ev.jsonl", "eval"), _suite_file(t / "bu.jsonl", "build")
    cases = [
        (["circuit", "--atlas", str(t / "missing.json"), "-o", str(t / "o.json")], "cannot read atlas"),
        (["circuit", "--atlas", str(t / "adir"), "-o", str(t / "o.json")], "not a regular file"),
        (["circuit", "-o", str(t / "o.json"), "--suite", str(all_eval)], "no 'build' pairs"),
        (["circuit"], "give -o"),
        (["circuit", "-o", str(t / "o.json"), "--tau", "-1"], "--tau"),
        (["circuit", "-o", str(t / "o.json"), "--max-pairs", "0"], "--max-pairs"),
        (["scan", "-o", str(t / "o.json"), "--suite", str(all_eval)], "no 'build' pairs"),
        (["scan", "-o", str(t / "o.json"), "--suite", str(build_only), "--split", "eval"], "no 'eval' pairs"),
        (["scan", "-o", str(t / "o.json"), "--seed", "-1"], "--seed"),
        (["eval", "--edit", files["edit"], "--suite", str(build_only)], "no 'eval' pairs"),
        (["trace", "--subject", "Louvre"], "does not occur"),
        (["trace", "--kind", "resid", "--window", "3"], "--window must be 1"),
        (["trace", "--target", ""], "--target"),
        (["trace", "--seed", str(2**64)], "--seed"),
        (["export", "--edit", files["edit"], "-o", str(t / "x"), "--peft"], "low_rank"),
        (["edit", files["atlas"], "-o", str(t / "o.json"), "--kind", "steering", "--layer", "-1"], "layer"),
        (["generate", "-p", ""], "--prompt"),
    ]
    for args, message in cases:
        r = CliRunner().invoke(app, args)
        assert not isinstance(r.exception, ModelLoaded), args
        assert r.exit_code == 2 and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
