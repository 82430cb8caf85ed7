"""Shipped models split across packages: pieces joined in order, checked against the published SHA-256, refused otherwise."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import pytest

from circuits.model import sources
from circuits.model.sources import (
    MODELS,
    GgufPart,
    ModelLoadError,
    ModelNotInstalledError,
    ModelSpec,
    gguf_path,
)

PIECES = [b"GGUF" + bytes(range(60)), bytes(range(200, 256)) * 3, b"tail"]


@pytest.fixture
def spec(tmp_path, monkeypatch) -> ModelSpec:
    """Three fake piece packages on sys.path, a cache in tmp_path, and the spec that joins them."""
    site = tmp_path / "site"
    for i, data in enumerate(PIECES, 1):
        pkg = site / f"fake_piece_pkg{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "_VERIFIED", {})
    whole = b"".join(PIECES)
    return ModelSpec(
        name="fake", hf_name="org/fake", package="fake_piece_pkg1", pip_name="fake-part1..3", gguf_file="fake.gguf",
        parts=tuple(GgufPart(f"fake_piece_pkg{i}", f"data/part{i:02d}.bin") for i in (1, 2, 3)),
        sha256=hashlib.sha256(whole).hexdigest(), size=len(whole),
    )


def test_pieces_are_joined_in_order_into_the_cache(spec):
    path = gguf_path(spec)
    assert path.read_bytes() == b"".join(PIECES)
    assert path.parent == sources.cache_root() / "gguf" and not list(path.parent.glob(".*.tmp"))
    assert gguf_path(spec) == path  # the second call reuses the joined file


def test_a_missing_piece_names_the_install_command(spec, tmp_path):
    (tmp_path / "site/fake_piece_pkg2/data/part02.bin").unlink()
    with pytest.raises(ModelNotInstalledError, match=r"fake_piece_pkg2/data/part02.bin is missing.*make models"):
        gguf_path(spec)
    assert not (sources.cache_root() / "gguf").exists() or not list((sources.cache_root() / "gguf").iterdir())


def test_pieces_that_join_to_another_hash_are_refused_and_nothing_is_kept(spec):
    wrong = ModelSpec(**{**spec.__dict__, "sha256": "0" * 64})
    with pytest.raises(ModelLoadError, match="not the published"):
        gguf_path(wrong)
    assert not list((sources.cache_root() / "gguf").iterdir())


def test_pieces_of_the_wrong_size_are_refused_before_joining(spec):
    with pytest.raises(ModelLoadError, match="bytes, not the published"):
        gguf_path(ModelSpec(**{**spec.__dict__, "size": spec.size + 1}))


def test_a_joined_file_changed_on_disk_is_refused_on_the_next_process_first_load(spec, monkeypatch):
    path = gguf_path(spec)
    path.write_bytes(path.read_bytes()[:-1] + b"X")
    assert gguf_path(spec) == path  # checked once per process: this process already verified it
    monkeypatch.setattr(sources, "_VERIFIED", {})  # a new process
    with pytest.raises(ModelLoadError, match="Delete it and reinstall"):
        gguf_path(spec)


def test_the_shipped_models_are_named_with_quantization_licence_and_uploader():
    assert set(MODELS) == {"smollm2-135m", "gemma-3-270m", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"}
    for spec in MODELS.values():
        record = spec.record()
        assert record["quantization"] and record["licence"] and "third party" in record["distributed_by"]
        if spec.parts:
            assert len(spec.sha256 or "") == 64 and (spec.size or 0) > 100_000_000
    listed = Path(__file__).resolve().parents[2].joinpath("requirements/models.txt").read_text().split()
    for spec in MODELS.values():
        for part in spec.parts or (GgufPart(spec.package, spec.gguf_file),):
            assert any(line.replace("-", "_").split("==")[0] == part.package for line in listed), part.package
