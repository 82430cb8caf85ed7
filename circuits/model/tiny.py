"""Tiny random models for tests and trials: TransformerLens-native ones, and Hugging Face ones of every family.

Used by the architecture matrix tests, the benchmarks' shape-matched random models, and users who want
to try the pipeline on a family without downloading it. Every family is built with the shipped
model's tokenizer (SmolLM2's, 49,152 tokens), so text prompts and suites work unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from circuits.model.arch import NATIVE
from circuits.model.boot import boot
from circuits.model.hooked import HookedLM, Provenance
from circuits.model.sources import MODELS, _gguf_directory, gguf_path, resolve_dtype

#: The families of the architecture matrix, covering learned vs rotary positions, LayerNorm vs
#: RMSNorm, parallel vs sequential blocks, tied vs untied embeddings, GQA vs MHA, post-norms.
FAMILIES: tuple[str, ...] = (
    "gpt2", "gpt_neox", "gptj", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "olmo2",
)


def tiny_hf_config(family: str, *, vocab_size: int, n_layers: int = 2, **overrides: Any) -> Any:
    """A small config of a family: 4 query heads of width 8, d_model 32, d_mlp 64 (GQA: 2 kv heads).

    Args:
        family: One of :data:`FAMILIES`.
        vocab_size: Vocabulary size (the tokenizer's).
        n_layers: Blocks.
        **overrides: Config fields to change (e.g. ``n_embd=768`` for GPT-2 small's width).

    Returns:
        A ``transformers`` config.

    Raises:
        ValueError: Unknown family.
    """
    import transformers as T

    gqa = {"num_hidden_layers": n_layers, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 32,
           "intermediate_size": 64, "max_position_embeddings": 128, "vocab_size": vocab_size}
    builders = {
        "gpt2": lambda: T.GPT2Config(n_layer=n_layers, n_head=4, n_embd=32, n_positions=128, vocab_size=vocab_size),
        "gpt_neox": lambda: T.GPTNeoXConfig(
            num_hidden_layers=n_layers, num_attention_heads=4, hidden_size=32, intermediate_size=64,
            max_position_embeddings=128, vocab_size=vocab_size, rotary_pct=0.25, use_parallel_residual=True),
        "gptj": lambda: T.GPTJConfig(n_layer=n_layers, n_head=4, n_embd=32, n_positions=128, rotary_dim=4, vocab_size=vocab_size),
        "llama": lambda: T.LlamaConfig(**gqa, tie_word_embeddings=True),
        "mistral": lambda: T.MistralConfig(**gqa, head_dim=8),
        "qwen2": lambda: T.Qwen2Config(**gqa),
        "qwen3": lambda: T.Qwen3Config(**gqa, head_dim=8),
        "gemma2": lambda: T.Gemma2Config(**gqa, head_dim=8),
        "gemma3": lambda: T.Gemma3TextConfig(**gqa, head_dim=8),
        "phi3": lambda: T.Phi3Config(**gqa, pad_token_id=0),
        "olmo2": lambda: T.Olmo2Config(**gqa),
    }
    if family not in builders:
        raise ValueError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    config = builders[family]()
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(config, key, None) is not None and getattr(config, key) >= vocab_size:
            setattr(config, key, None)  # GPT-2's 50256 etc. do not exist in a smaller vocabulary
    # Larger than the 0.02 default so that greedy outputs depend on the whole context (Gemma's scaled
    # embeddings and logit soft cap saturate above ~0.05).
    config.initializer_range = 0.05 if family.startswith("gemma") else 0.2
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def shipped_tokenizer() -> Any:
    """The real model's tokenizer (SmolLM2's), from the dequantized cache (built on first use)."""
    from transformers import AutoTokenizer

    directory, _ = _gguf_directory(gguf_path(MODELS["smollm2-135m"]), None, "smollm2-135m")
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def save_tiny_hf(family: str, directory: Path | str, *, seed: int = 0, n_layers: int = 2, **overrides: Any) -> Path:
    """Build a random model of a family and save it (safetensors, config, tokenizer) as a directory.

    Args:
        family: One of :data:`FAMILIES`.
        directory: Output directory (created).
        seed: Initialisation seed.
        n_layers: Blocks.
        **overrides: Config fields.

    Returns:
        The directory, loadable by :func:`circuits.model.load_model` and by plain ``transformers``.
    """
    from transformers import AutoModelForCausalLM

    tok = shipped_tokenizer()
    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(tiny_hf_config(family, vocab_size=len(tok), n_layers=n_layers, **overrides))
    directory = Path(directory)
    hf.save_pretrained(str(directory), safe_serialization=True)
    tok.save_pretrained(str(directory))
    return directory


def save_tiny_gguf(path: Path | str, *, seed: int = 0, n_layers: int = 2, vocab: int = 64) -> Path:
    """Write a tiny random Llama as a GGUF file (float32 tensors, a byte-level tokenizer of ``vocab`` tokens).

    About 100 kB; :func:`circuits.model.load_model` dequantizes and loads it in seconds, so tests (and
    the fuzz tests of GGUF loading) can damage a real GGUF file without the shipped model's 98 MB.

    Args:
        path: The ``.gguf`` file to write.
        seed: Seed of the random weights.
        n_layers: Blocks.
        vocab: Tokens (at least 8).

    Returns:
        The path.
    """
    import gguf
    import numpy as np

    d, heads, kv_heads, d_mlp = 32, 4, 2, 64
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(128)
    w.add_embedding_length(d)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(d_mlp)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(vocab - 4)] + ["<s>", "</s>", "<unk>", "\u0120"])
    w.add_token_types([1] * vocab)
    w.add_token_scores([0.0] * vocab)
    w.add_token_merges([])
    w.add_bos_token_id(vocab - 4)
    w.add_eos_token_id(vocab - 3)
    rng = np.random.default_rng(seed)

    def tensor(name: str, shape: tuple[int, ...]) -> None:
        w.add_tensor(name, (0.1 * rng.standard_normal(shape)).astype(np.float32))

    tensor("token_embd.weight", (vocab, d))
    tensor("output_norm.weight", (d,))
    tensor("output.weight", (vocab, d))
    d_kv = kv_heads * d // heads
    for i in range(n_layers):
        for name, shape in (("attn_norm", (d,)), ("ffn_norm", (d,)), ("attn_q", (d, d)), ("attn_k", (d_kv, d)), ("attn_v", (d_kv, d)),
                            ("attn_output", (d, d)), ("ffn_gate", (d_mlp, d)), ("ffn_up", (d_mlp, d)), ("ffn_down", (d, d_mlp))):
            tensor(f"blk.{i}.{name}.weight", shape)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def tiny_hf_model(
    family: str, *, seed: int = 0, n_layers: int = 2, dtype: str | None = None, prepend_bos: bool | None = None, **overrides: Any
) -> HookedLM:
    """A tiny random Hugging Face model of a family, in memory, with the shipped tokenizer.

    Args:
        family: One of :data:`FAMILIES`.
        seed: Initialisation seed (same seed → same weights).
        n_layers: Blocks.
        dtype: ``"float32"`` (default) or ``"bfloat16"``/``"float16"``.
        prepend_bos: Tokenization policy (``None``: the shipped tokenizer's own, which adds no BOS).
        **overrides: Config fields.

    Returns:
        The model; its recipe rebuilds it in another process.
    """
    from transformers import AutoModelForCausalLM

    tok = shipped_tokenizer()
    gen = torch.random.fork_rng()  # the global RNG is left as it was
    with gen:
        torch.manual_seed(seed)
        hf = AutoModelForCausalLM.from_config(tiny_hf_config(family, vocab_size=len(tok), n_layers=n_layers, **overrides))
    dt = resolve_dtype(dtype)
    recipe = {"loader": "tiny_hf_model", "family": family, "seed": seed, "n_layers": n_layers, "dtype": dtype, "prepend_bos": prepend_bos, **overrides}
    prov = Provenance(source=f"<tiny {family}>", kind="tiny", architecture=type(hf).__name__)
    return boot(hf.to(dt), tok, name=f"tiny-{family}", provenance=prov, recipe=recipe, dtype=dt, prepend_bos=prepend_bos)


def tiny_model(
    *,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    d_model: int = 32,
    d_head: int = 8,
    d_mlp: int = 64,
    d_vocab: int = 50,
    n_ctx: int = 64,
    seed: int = 0,
    gated_mlp: bool = True,
    normalization: str | None = "RMS",
    attn_only: bool = False,
    dtype: str | torch.dtype | None = None,
    name: str = "tiny",
) -> HookedLM:
    """Build a small random Llama-style TransformerLens-native model (no hub, no download) for tests.

    Uses TransformerLens' ``TransformerBridge.boot_native``: RMSNorm, rotary positions, a gated SiLU
    MLP and, when ``n_kv_heads < n_heads``, grouped-query attention, like SmolLM2.

    Args:
        n_layers: Number of blocks.
        n_heads: Query heads per block.
        n_kv_heads: Key/value heads per block; ``None`` means ``n_heads`` (no grouping).
        d_model: Residual width.
        d_head: Head width.
        d_mlp: MLP width.
        d_vocab: Vocabulary size.
        n_ctx: Maximum context length.
        seed: Initialisation seed (same seed → same weights).
        gated_mlp: Use a gated (SwiGLU) MLP as Llama does.
        normalization: ``"RMS"`` (Llama) or ``None`` (no norms: the logits are then linear in the last
            layer's outputs, which exactness tests use).
        attn_only: No MLPs (with ``normalization=None`` the logits are linear in the last layer's heads).
        dtype: Weight dtype (default float32).
        name: Name recorded in atlases and edits.

    Returns:
        An eval-mode model without a tokenizer.
    """
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    kwargs = {
        "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv_heads, "d_model": d_model, "d_head": d_head,
        "d_mlp": d_mlp, "d_vocab": d_vocab, "n_ctx": n_ctx, "seed": seed, "gated_mlp": gated_mlp,
        "normalization": normalization, "attn_only": attn_only,
    }
    cfg = TransformerBridgeConfig(
        d_model=d_model, d_head=d_head, n_layers=n_layers, n_ctx=n_ctx, n_heads=n_heads, d_vocab=d_vocab, d_mlp=d_mlp,
        act_fn="silu", normalization_type=normalization, attn_only=attn_only, gated_mlp=gated_mlp,
        n_key_value_heads=n_kv_heads, positional_embedding_type="rotary", seed=seed,
    )
    bridge = TransformerBridge.boot_native(cfg)
    dt = resolve_dtype(dtype)
    if dt != torch.float32:
        bridge.original_model.to(dt)
    bridge.eval()
    recipe = {"loader": "tiny_model", **kwargs, "dtype": None if dtype is None else str(dt).removeprefix("torch."), "name": name}
    prov = Provenance(source="<tiny>", kind="tiny", architecture="native")
    return HookedLM(bridge, None, name=name, provenance=prov, arch=NATIVE, recipe=recipe)
