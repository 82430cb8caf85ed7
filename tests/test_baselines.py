"""The head-sweep baselines of benchmarks/patching.py agree with each other and with a hand-written loop.

Tiny random Llama (GQA), GPT-2 and GPT-NeoX models built from configs; no hub access.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import baselines  # noqa: E402

pytestmark = pytest.mark.equivalence

VOCAB = 100


def _llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
        intermediate_size=64, vocab_size=VOCAB, attn_implementation="eager",
    )
    return LlamaForCausalLM(config)


def _gpt2() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=VOCAB, attn_implementation="eager"))


def _neox() -> torch.nn.Module:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        num_hidden_layers=2, num_attention_heads=4, hidden_size=32, intermediate_size=64,
        vocab_size=VOCAB, attn_implementation="eager",
    )
    return GPTNeoXForCausalLM(config)


# name -> (builder, o_proj module path, n_layers, n_heads, d_head)
ARCHS = {
    "llama": (_llama, lambda m, L: m.model.layers[L].self_attn.o_proj, 2, 4, 8),
    "gpt2": (_gpt2, lambda m, L: m.transformer.h[L].attn.c_proj, 2, 4, 8),
    "neox": (_neox, lambda m, L: m.gpt_neox.layers[L].attention.dense, 2, 4, 8),
}


@pytest.fixture(scope="module", params=sorted(ARCHS))
def case(request):
    """A tiny eager-attention model, its o_proj path, shape, tokens and a metric with a clear clean/corrupted gap."""
    build, o_proj, n_layers, n_heads, d_head = ARCHS[request.param]
    torch.manual_seed(0)
    model = build().eval()
    assert model.config._attn_implementation == "eager"
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(0, VOCAB, (3, 6), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2] = (clean[:, 2] + 7) % VOCAB
    with torch.no_grad():
        gap = (model(clean).logits[:, -1] - model(corrupted).logits[:, -1]).mean(0)
    a, b = int(gap.argmax()), int(gap.argmin())

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, a] - logits[:, -1, b]

    return request.param, model, o_proj, clean, corrupted, metric, dict(n_layers=n_layers, n_heads=n_heads, d_head=d_head)


def _reference(model, o_proj, clean, corrupted, metric, n_layers, n_heads, d_head) -> torch.Tensor:
    """Hand-written: swap each o_proj for a module that splices the clean head slice into its input."""

    class Spliced(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module, z_clean: torch.Tensor, lo: int, hi: int) -> None:
            super().__init__()
            self.inner, self.z_clean, self.lo, self.hi = inner, z_clean, lo, hi

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.cat([x[..., : self.lo], self.z_clean[..., self.lo : self.hi], x[..., self.hi :]], dim=-1)
            return self.inner(x)

    def parent_and_name(layer: int):
        target = o_proj(model, layer)
        for name, module in model.named_modules():
            for child_name, child in module.named_children():
                if child is target:
                    return module, child_name
        raise LookupError(layer)

    with torch.no_grad():
        z_clean = {}
        hooks = [
            o_proj(model, L).register_forward_hook(lambda mod, inp, out, L=L: z_clean.__setitem__(L, inp[0].clone()))
            for L in range(n_layers)
        ]
        clean_m = metric(model(clean).logits).mean()
        for hook in hooks:
            hook.remove()
        corrupted_m = metric(model(corrupted).logits).mean()
        effects = torch.zeros(n_layers, n_heads)
        for L in range(n_layers):
            parent, name = parent_and_name(L)
            original = getattr(parent, name)
            for h in range(n_heads):
                setattr(parent, name, Spliced(original, z_clean[L], h * d_head, (h + 1) * d_head))
                try:
                    patched_m = metric(model(corrupted).logits).mean()
                finally:
                    setattr(parent, name, original)
                effects[L, h] = (patched_m - corrupted_m) / (clean_m - corrupted_m)
    return effects


def _tiny_tokenizer():
    """A word-level tokenizer over the tiny vocab: all the nnsight pipeline needs for token-id inputs."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(VOCAB)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")), pad_token="t0", eos_token="t0")


def test_hook_loop_matches_reference(case):
    _, model, o_proj, clean, corrupted, metric, shape = case
    ref = _reference(model, o_proj, clean, corrupted, metric, **shape)
    ours = baselines.hook_loop_head_sweep(model, clean, corrupted, metric, o_proj_module=o_proj, **shape)
    assert ours.shape == (shape["n_layers"], shape["n_heads"]) and ours.dtype == torch.float32
    assert ref.abs().max() > 1e-3  # the metric moves: not a trivial all-zero comparison
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_nnsight_matches_hook_loop_and_reference(case):
    pytest.importorskip("nnsight")
    _, model, o_proj, clean, corrupted, metric, shape = case
    # The plain loops first: wrapping in nnsight instruments the model's modules for good.
    ref = _reference(model, o_proj, clean, corrupted, metric, **shape)
    loop = baselines.hook_loop_head_sweep(model, clean, corrupted, metric, o_proj_module=o_proj, **shape)
    ours = baselines.nnsight_head_sweep(
        model, clean, corrupted, metric, o_proj_path=o_proj, tokenizer=_tiny_tokenizer(), **shape
    )
    assert ours.shape == (shape["n_layers"], shape["n_heads"]) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours, loop, atol=1e-5, rtol=0)
    # and the model still runs unpatched afterwards (no leftover edits or hooks)
    torch.testing.assert_close(baselines.hook_loop_head_sweep(model, clean, corrupted, metric, o_proj_module=o_proj, **shape), loop, atol=1e-6, rtol=0)
