"""Every model source is checked before anything loads: one ModelLoadError naming the file and what is wrong (issue 30).

Each case damages a saved tiny model (or a GGUF file) the way a user or an adversary might; the source
must be refused by :func:`circuits.model.validate_source` and by :func:`circuits.model.load_model`
before any weights are read (``from_pretrained`` is made to fail if it is reached).
"""

from __future__ import annotations

import json
import shutil
import struct

import pytest

from circuits import model as M
from circuits.model.tiny import save_tiny_hf


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_hf("llama", tmp_path_factory.mktemp("llama") / "m", seed=0)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return save_tiny_hf("gpt2", tmp_path_factory.mktemp("gpt2") / "m", seed=0)


def _config(d):
    return json.loads((d / "config.json").read_text())


def _set(d, **fields):
    (d / "config.json").write_text(json.dumps({**_config(d), **fields}))


def _weights(d):
    return d / "model.safetensors"


#: ``(name, damage(dir, other), words the message must hold)``; ``other`` is a saved GPT-2 directory.
CASES = [
    ("config is a list", lambda d, o: (d / "config.json").write_text("[1, 2]"), ["config.json", "JSON object"]),
    ("config is not JSON", lambda d, o: (d / "config.json").write_text("{'a': 1"), ["config.json", "not valid JSON"]),
    ("config repeats a key", lambda d, o: (d / "config.json").write_text('{"model_type": "llama", "model_type": "gpt2"}'), ["config.json", "twice"]),
    ("architectures is an integer", lambda d, o: _set(d, architectures=5), ["config.json", "architectures"]),
    ("architectures holds an integer", lambda d, o: _set(d, architectures=[5]), ["config.json", "architectures"]),
    ("architectures is empty", lambda d, o: _set(d, architectures=[]), ["config.json", "architectures"]),
    ("unknown architecture", lambda d, o: _set(d, architectures=["EvilForCausalLM"]), ["config.json", "EvilForCausalLM"]),
    ("architecture and model_type disagree", lambda d, o: _set(d, model_type="gpt2"), ["config.json", "builds"]),
    ("no architecture, no model_type", lambda d, o: (d / "config.json").write_text(json.dumps({k: v for k, v in _config(d).items() if k not in ("architectures", "model_type")})), ["config.json", "architecture"]),
    ("layers beyond the limit", lambda d, o: _set(d, num_hidden_layers=10**6), ["config.json", "num_hidden_layers"]),
    ("a size that is a string", lambda d, o: _set(d, hidden_size="32"), ["config.json", "hidden_size"]),
    ("zero heads", lambda d, o: _set(d, num_attention_heads=0), ["config.json", "num_attention_heads"]),
    ("more layers than the weights hold", lambda d, o: _set(d, num_hidden_layers=3), ["model.layers.2", "another model"]),
    ("a width the weights do not have", lambda d, o: _set(d, hidden_size=64, head_dim=16), ["shape", "config.json gives"]),
    ("truncated weights", lambda d, o: _weights(d).write_bytes(_weights(d).read_bytes()[:3000]), ["model.safetensors", "truncated"]),
    ("weights cut at the end", lambda d, o: _weights(d).write_bytes(_weights(d).read_bytes()[:-7]), ["model.safetensors", "truncated"]),
    ("garbage weights", lambda d, o: _weights(d).write_bytes(b"\xff" * 64), ["model.safetensors"]),
    ("a header claiming 2**60 bytes", lambda d, o: _weights(d).write_bytes(struct.pack("<Q", 2**60) + b"{}"), ["model.safetensors"]),
    ("weights of another model", lambda d, o: shutil.copy(_weights(o), _weights(d)), ["another model"]),
    ("an export of another model's config", lambda d, o: shutil.copy(o / "config.json", d / "config.json"), ["another model"]),
    ("float8 weights", lambda d, o: _float8(d), ["dtype F8_E4M3"]),
    ("weights are a FIFO", lambda d, o: _fifo(_weights(d)), ["model.safetensors", "FIFO"]),
    ("an index pointing outside", lambda d, o: _index(d, "../../etc/passwd"), ["weight_map", "etc/passwd"]),
    ("an index naming a missing shard", lambda d, o: _index(d, "model-00001.safetensors"), ["model-00001.safetensors", "does not exist"]),
    ("only pickled weights", lambda d, o: (_weights(d).unlink(), (d / "pytorch_model.bin").write_bytes(b"\x80\x04")), ["never unpickles"]),
    ("a tokenizer that is not JSON", lambda d, o: (d / "tokenizer.json").write_text("{"), ["tokenizer.json", "not valid JSON"]),
    ("a tokenizer config that is a list", lambda d, o: (d / "tokenizer_config.json").write_text("[]"), ["tokenizer_config.json", "JSON object"]),
]


def _float8(d):
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(_weights(d)))
    state["model.norm.weight"] = state["model.norm.weight"].to(torch.float8_e4m3fn)
    save_file(state, str(_weights(d)))


def _fifo(path):
    import os

    path.unlink()
    os.mkfifo(path)


def _index(d, shard):
    from safetensors import safe_open

    with safe_open(str(_weights(d)), "pt") as f:
        keys = list(f.keys())
    _weights(d).unlink()
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {k: shard for k in keys}}))


@pytest.fixture
def no_weights_read(monkeypatch):
    """Loading weights fails the test: every case must be refused before."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained was reached: the source was not validated first")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


@pytest.mark.parametrize("name, damage, words", CASES, ids=[c[0] for c in CASES])
def test_a_damaged_model_directory_gets_one_clear_error_before_loading(tmp_path, llama_dir, gpt2_dir, no_weights_read, name, damage, words):
    d = tmp_path / "m"
    shutil.copytree(llama_dir, d)
    damage(d, gpt2_dir)
    for check in (M.validate_source, M.load_model):
        with pytest.raises(M.ModelLoadError) as e:
            check(str(d))
        assert all(w in str(e.value) for w in words), (name, str(e.value))
        assert str(d) in str(e.value)


def test_an_intact_directory_passes_and_loads(llama_dir):
    M.validate_source(llama_dir)
    M.validate_source(str(llama_dir))
    assert M.load_model(llama_dir).shape.n_layers == 2


@pytest.mark.parametrize("source", ["", " ", " smollm2-135m", "smollm2-135m\n", "a\x00b"])
def test_an_empty_or_padded_source_string_is_refused(source):
    with pytest.raises(M.ModelLoadError, match="empty, has surrounding whitespace or holds a NUL"):
        M.load_model(source)


def _gguf_header(version=3, tensors=1, kvs=1):
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs)


GGUF_CASES = [
    ("not a GGUF file", b"PK\x03\x04" + b"\x00" * 100, "does not start with the GGUF magic"),
    ("empty", b"", "does not start with the GGUF magic"),
    ("garbage after the magic", b"GGUF" + bytes(range(200)), "header"),
    ("unknown version", _gguf_header(version=99) + b"\x00" * 64, "version 99"),
    ("counts beyond the file", _gguf_header(tensors=2**60, kvs=2**60) + b"\x00" * 64, "do not fit"),
    ("no tensors", _gguf_header(tensors=0) + b"\x00" * 64, "do not fit"),
    ("metadata cut short", _gguf_header(tensors=1, kvs=2) + struct.pack("<Q", 2**40) + b"general.", "malformed or truncated"),
]


@pytest.mark.parametrize("name, data, words", GGUF_CASES, ids=[c[0] for c in GGUF_CASES])
def test_a_bad_gguf_file_gets_one_clear_error_before_loading(tmp_path, name, data, words):
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    for check in (M.validate_source, M.load_model):
        with pytest.raises(M.ModelLoadError, match=words) as e:
            check(path)
        assert str(path) in str(e.value)


def test_a_truncated_real_gguf_file_is_refused(tmp_path):
    """The shipped SmolLM2 GGUF cut in half: its tensor table points past the end (not cached, so it is parsed)."""
    try:
        shipped = M.gguf_path(M.MODELS["smollm2-135m"])
    except M.ModelNotInstalledError:
        pytest.skip("the real model's package is not installed")
    path = tmp_path / "half.gguf"
    with shipped.open("rb") as f:
        path.write_bytes(f.read(shipped.stat().st_size // 2))
    with pytest.raises(M.ModelLoadError, match="malformed or truncated"):
        M.validate_source(path, cache_dir=tmp_path / "cache")
