"""Loading from every source, dtype and device handling, refused architectures, provenance."""

from __future__ import annotations

import json

import pytest
import torch

from circuits import model as M
from circuits.model.tiny import tiny_hf_model
from circuits.probing.patching import normalise, patch_tokens
from circuits.sites import all_heads

PROMPTS = ["The nurse said that she was very", "The pilot said that he was very"]


def _metric(logits):
    return logits[:, -1, 264].float() - logits[:, -1, 314].float()


def test_bfloat16_runs_patches_and_generates_on_cpu():
    fp32, bf16 = tiny_hf_model("llama", seed=2), tiny_hf_model("llama", seed=2, dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16 and fp32.dtype == torch.float32
    assert M.fingerprint(bf16) != M.fingerprint(fp32)
    clean = M.to_tokens(fp32, PROMPTS)
    corrupted = clean.clone()
    corrupted[:, 2] = torch.tensor([1000, 2000])
    logits = M.run(bf16, clean)
    assert logits.dtype == torch.bfloat16
    heads = all_heads(2, 4)
    effects = {}
    for name, lm in (("fp32", fp32), ("bf16", bf16)):
        p, c, k = patch_tokens(lm, clean, corrupted, _metric, heads)
        effects[name] = normalise(p, c, k).mean(1)
    # bfloat16 keeps 8 bits of mantissa: normalised effects agree to a few hundredths (README: numerics).
    torch.testing.assert_close(effects["bf16"], effects["fp32"], atol=0.05, rtol=0)
    out = M.generate_ids(bf16, clean[:1], max_new_tokens=4)
    assert out.shape == (1, clean.shape[1] + 4)


def test_directory_load_honours_dtype(family_dirs):
    lm = M.load_model(family_dirs["gpt2"], dtype="bfloat16")
    assert lm.dtype == torch.bfloat16 and lm.recipe["dtype"] == "bfloat16"
    assert M.build_model(lm.recipe).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "kwargs, message",
    [({"dtype": "float64"}, "not supported"), ({"device": "tpu"}, "not a device|not supported"), ({"device": "cuda:0"}, "not available")],
)
def test_bad_dtype_or_device_is_refused_before_loading(family_dirs, kwargs, message):
    if kwargs.get("device", "").startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(M.ModelLoadError, match=message):
        M.load_model(family_dirs["gpt2"], **kwargs)


def test_directory_errors_are_clear(tmp_path, family_dirs):
    with pytest.raises(M.ModelLoadError, match="no config.json"):
        M.load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(M.ModelLoadError, match="never unpickles"):
        M.load_model(tmp_path)
    with pytest.raises(M.ModelLoadError, match="does not exist"):
        M.load_model(tmp_path / "missing.gguf")


@pytest.mark.parametrize("cls, why", [("MixtralForCausalLM", "mixture-of-experts"), ("MambaForCausalLM", "state-space"),
                                      ("BloomForCausalLM", "not in circuit-atlas's architecture table")])
def test_unsupported_architectures_are_refused_at_load(tmp_path, cls, why):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": [cls]}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(M.ModelLoadError, match=why):
        M.load_model(tmp_path)


def test_a_hub_id_loads_from_the_local_hub_cache_offline(family_dirs, tmp_path, monkeypatch):
    """A hub snapshot laid out as huggingface_hub caches it; no network is used."""
    snapshot = tmp_path / "hub" / "models--tiny-org--tiny-qwen3" / "snapshots" / ("ab" * 20)
    snapshot.mkdir(parents=True)
    for f in family_dirs["qwen3"].iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (tmp_path / "hub" / "models--tiny-org--tiny-qwen3" / "refs").mkdir()
    (tmp_path / "hub" / "models--tiny-org--tiny-qwen3" / "refs" / "main").write_text("ab" * 20)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as C

    monkeypatch.setattr(C, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)
    lm = M.load_model("tiny-org/tiny-qwen3")
    assert lm.provenance.kind == "hub" and lm.provenance.revision == "ab" * 20 and lm.name == "tiny-org/tiny-qwen3"
    assert M.fingerprint(lm) == M.fingerprint(M.load_model(family_dirs["qwen3"]))
    with pytest.raises(M.ModelLoadError, match="pass the directory instead"):
        M.load_model("tiny-org/not-cached")
