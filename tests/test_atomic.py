"""Atomic writes (circuits.atomic): temporaries, stale clean-up, the edit pair's commit protocol, exports.

Crash points are simulated deterministically here (a writer stopped between its steps, a temporary
named after a dead process); ``tests/test_reliability_writes.py`` kills real writers at random points.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from circuits import atomic
from circuits.atomic import atomic_directory, atomic_write_bytes, atomic_write_pair, stale_temporaries, temp_sibling
from circuits.editing import Edit, load_edit, record_evaluation, save_edit
from circuits.sites import ResidRef


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _stale(path, tag="tmp", directory=False):
    """A temporary of ``path`` as a killed writer leaves it."""
    name = path.parent / f".{path.name}.{tag}-{_dead_pid()}-0123abcd"
    if directory:
        name.mkdir()
        (name / "model.safetensors").write_bytes(b"partial")
    else:
        name.write_bytes(b"partial")
    return name


def _edit(n: int, coefficient: float) -> Edit:
    g = torch.Generator().manual_seed(n)
    return Edit(kind="steering", components=(ResidRef(1, None),), tensors={"vector": torch.randn(n, generator=g)}, model_name="tiny",
                model_fingerprint="sha256:" + "0" * 64, hyperparameters={"coefficient": coefficient})


def test_a_write_replaces_the_file_and_removes_what_dead_writers_left(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_bytes(path, b"old")
    stale = [_stale(path), _stale(tmp_path / "other.json"), _stale(tmp_path / "export", directory=True)]
    live = temp_sibling(path)  # this process's own temporary (a write in progress) is kept
    live.write_bytes(b"in progress")
    assert stale_temporaries(tmp_path) == sorted(stale)
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert not any(p.exists() for p in stale) and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.json", live.name])


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = atomic_write_bytes(tmp_path / "a.json", b"old")
    monkeypatch.setattr(atomic.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_written_file_keeps_the_mode_of_the_one_it_replaces(tmp_path):
    path = atomic_write_bytes(tmp_path / "a.json", b"old")
    os.chmod(path, 0o640)
    atomic_write_bytes(path, b"new")
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_directory_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "export"
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed half way")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    _stale(out, directory=True)  # a killed export's temporary: removed by the next export
    with atomic_directory(out) as tmp:
        (tmp / "config.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["export"] and (out / "config.json").is_file()
    with pytest.raises(ValueError, match="not empty"), atomic_directory(out):
        pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"), atomic_directory(tmp_path / "file"):
        pass


def test_the_pair_writer_refuses_a_manifest_that_does_not_record_the_data(tmp_path):
    with pytest.raises(ValueError, match="sha256"):
        atomic_write_pair(tmp_path / "x.bin", b"data", tmp_path / "x.json", b'{"sha": "0"}', sha_field="sha")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stop_after", ["staged", "tensors renamed"])
def test_an_edit_save_stopped_at_any_step_loads_as_the_old_or_the_new_edit(tmp_path, monkeypatch, stop_after):
    old, new = _edit(300, -1.0), _edit(200, 2.0)
    path = save_edit(old, tmp_path / "e.json")
    real_commit, calls = atomic.commit, []

    def commit(tmp, target):
        calls.append(target)
        if stop_after == "staged" or len(calls) == 2:
            raise KeyboardInterrupt  # the writer dies here; nothing below runs
        return real_commit(tmp, target)

    monkeypatch.setattr(atomic, "commit", commit)
    with pytest.raises(KeyboardInterrupt):
        save_edit(new, path)
    monkeypatch.setattr(atomic, "commit", real_commit)
    loaded = load_edit(path)
    expected = old if stop_after == "staged" else new
    assert torch.equal(loaded.tensors["vector"], expected.tensors["vector"]) and loaded.hyperparameters == expected.hyperparameters


def test_a_killed_save_between_its_renames_is_read_as_the_new_edit_and_completed_by_the_next_write(tmp_path):
    old, new = _edit(300, -1.0), _edit(200, 2.0)
    path = save_edit(old, tmp_path / "e.json")
    # The state a writer killed between its two renames leaves: new tensors, old manifest, new pending manifest.
    new_path = save_edit(new, tmp_path / "new" / "e.json")
    path.with_suffix(".safetensors").write_bytes(new_path.with_suffix(".safetensors").read_bytes())
    pending = _stale(path, tag="pending")
    pending.write_bytes(new_path.read_bytes())
    assert json.loads(path.read_text())["hyperparameters"] == {"coefficient": -1.0}
    assert load_edit(path).hyperparameters == {"coefficient": 2.0}  # read-only: nothing on disk changed
    assert pending.exists()
    record_evaluation(path, {"bias_gap_after": 0.1})  # the next write finishes the interrupted one first
    assert not pending.exists()
    manifest = json.loads(path.read_text())
    assert manifest["hyperparameters"] == {"coefficient": 2.0} and manifest["evaluation"] == {"bias_gap_after": 0.1}
    assert manifest["tensors_sha256"] == hashlib.sha256(path.with_suffix(".safetensors").read_bytes()).hexdigest()


def test_a_pending_manifest_that_does_not_match_is_discarded(tmp_path):
    path = save_edit(_edit(300, -1.0), tmp_path / "e.json")
    pending = _stale(path, tag="pending")  # killed before the tensors were renamed in
    assert load_edit(path).hyperparameters == {"coefficient": -1.0}
    save_edit(_edit(100, 3.0), path)
    assert not pending.exists() and load_edit(path).hyperparameters == {"coefficient": 3.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.json", "e.safetensors"]


def test_an_interrupted_export_leaves_nothing_and_a_rerun_writes_it_whole(tmp_path, monkeypatch):
    import circuits.model.export as X
    from circuits.editing.export import export_hf
    from tests.kill_writers import _tiny_hf

    lm, out = _tiny_hf(), tmp_path / "baked"
    real_copy = X.hf_model_copy

    class Interrupted:
        def save_pretrained(self, directory, **kwargs):
            real_copy(lm).save_pretrained(directory, **kwargs)
            raise KeyboardInterrupt

    monkeypatch.setattr(X, "hf_model_copy", lambda _: Interrupted())
    with pytest.raises(KeyboardInterrupt):
        export_hf(lm, [], out)
    assert list(tmp_path.iterdir()) == []  # no partial directory that a rerun would refuse to overwrite
    monkeypatch.setattr(X, "hf_model_copy", real_copy)
    export_hf(lm, [], out)
    assert {"config.json", "model.safetensors", "circuits_edits.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "circuits_edits.json").read_text())["edits"] == []
    with pytest.raises(ValueError, match="not empty"):  # an existing export is refused, as before
        export_hf(lm, [], out)
