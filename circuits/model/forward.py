"""Forward passes of the hooked model: full, cached, from layer ``k``, and persistent hooks.

Hooks use TransformerLens' names and convention (``fn(activation, hook) -> activation | None``); the
names are built in :mod:`circuits.sites`. The partial forward :func:`run_from_layer` runs only blocks
``k..n_layers-1`` from a residual stream: on a Hugging Face model, the decoder layers before ``k`` are
swapped for pass-through modules for the duration of the call and block ``k`` receives the residual
(the injection TransformerLens 4.3's own ``forward(start_at_layer=k)`` does, without running the
blocks before it), so every family in the architecture table gets the same fast path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.model.hooked import HookedLM, HookFn, Overlay, WeightStep
from circuits.model.weights import _walk, unwrap


class _Skip(torch.nn.Module):
    """A decoder layer that passes its input through (for layers before a partial forward's start)."""

    def __init__(self, as_tuple: bool, capture: list[Tensor] | None = None):
        super().__init__()
        self.as_tuple = as_tuple
        self.capture = capture

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Any:
        if self.capture is not None:
            self.capture.append(hidden_states)
        return (hidden_states,) if self.as_tuple else hidden_states


def _stack(lm: HookedLM) -> tuple[torch.nn.Module, torch.nn.ModuleList]:
    base = _walk(lm.core, lm.arch.base, "decoder stack")
    return base, getattr(base, lm.arch.layers)


@contextlib.contextmanager
def _skipping(layers: torch.nn.ModuleList, upto: int, as_tuple: bool, capture: list[Tensor] | None = None) -> Iterator[None]:
    saved = [layers[i] for i in range(upto)]
    try:
        for i in range(upto):
            layers[i] = _Skip(as_tuple, capture if i == 0 else None)
        yield
    finally:
        for i, layer in enumerate(saved):
            layers[i] = layer


@contextlib.contextmanager
def _injecting(layer: torch.nn.Module, resid: Tensor) -> Iterator[None]:
    def pre(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (resid, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": resid}

    handle = layer.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _softcap(lm: HookedLM, logits: Tensor) -> Tensor:
    cap = getattr(lm.core.config, lm.arch.softcap, None) if lm.arch.softcap else None
    return logits if cap is None else torch.tanh(logits / cap) * cap


def _nan_except(part: Tensor, idx: Tensor, d_vocab: int) -> Tensor:
    """Full-vocabulary logits holding ``part`` at columns ``idx`` and NaN elsewhere (differentiable)."""
    out = torch.full((*part.shape[:-1], d_vocab), float("nan"), dtype=part.dtype, device=part.device)
    return out.index_copy(-1, idx, part)


def _unembed(head: torch.nn.Module, h: Tensor, vocab: Sequence[int] | None) -> Tensor:
    """``head(h)``, or only the ``vocab`` columns of it (the other logits NaN)."""
    if vocab is None:
        return head(h)
    linear = unwrap(head)
    idx = torch.as_tensor(list(vocab), dtype=torch.long, device=h.device)
    bias = None if getattr(linear, "bias", None) is None else linear.bias[idx]
    return _nan_except(torch.nn.functional.linear(h, linear.weight[idx], bias), idx, linear.weight.shape[0])


@torch.no_grad()
def run(lm: HookedLM, tokens: Int[Tensor, "batch pos"], hooks: Sequence[tuple[str, HookFn]] = ()) -> Float[Tensor, "batch pos d_vocab"]:
    """One forward pass with temporary forward hooks, returning logits.

    Args:
        lm: The model.
        tokens: Token ids.
        hooks: ``(hook_name, fn)`` pairs, active only during this pass.

    Returns:
        Logits.
    """
    tokens = tokens.to(lm.device)
    if hooks:
        return lm.bridge.run_with_hooks(tokens, fwd_hooks=list(hooks))
    return lm.bridge(tokens)


@torch.no_grad()
def run_with_cache(
    lm: HookedLM, tokens: Int[Tensor, "batch pos"], names: Sequence[str], hooks: Sequence[tuple[str, HookFn]] = ()
) -> tuple[Float[Tensor, "batch pos d_vocab"], dict[str, Tensor]]:
    """One forward pass caching only the named activations (after any ``hooks`` edited them).

    Args:
        lm: The model.
        tokens: Token ids.
        names: Hook names to cache.
        hooks: ``(hook_name, fn)`` pairs active during the pass.

    Returns:
        ``(logits, {hook_name: activation})``.

    Raises:
        KeyError: A name that is not a hook point of this model.
    """
    unknown = [n for n in names if n not in lm.bridge.hook_dict]
    if unknown:
        raise KeyError(f"not hook points of this model: {unknown[:3]}")
    wanted = set(names)
    with lm.bridge.hooks(fwd_hooks=list(hooks)):
        logits, cache = lm.bridge.run_with_cache(tokens.to(lm.device), names_filter=lambda n: n in wanted)
    return logits, {n: cache[n] for n in names}


def has_hook(lm: HookedLM, name: str) -> bool:
    """Whether ``name`` is a hook point of this model (parallel blocks have no ``hook_resid_mid``)."""
    return name in lm.bridge.hook_dict


def run_from_layer(
    lm: HookedLM,
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

    Args:
        lm: The model.
        resid: ``blocks.{start}.hook_resid_pre`` activations.
        start: First block to run.
        hooks: Forward hooks active during the pass.
        last: Unembed only the last ``last`` positions (``None``: all). The unembedding is a third of
            a partial forward's cost on SmolLM2, and most metrics read only the last position.
        vocab: Unembed only these token ids (``None``: all). The other logits are NaN, so a metric
            that reads them fails loudly instead of silently.

    Returns:
        Logits of the last ``last`` positions (all if ``None``), equal to the full forward's whose
        residual entering ``start`` is ``resid`` (at the ``vocab`` columns if given). Autograd
        follows the caller's grad mode.

    Raises:
        ValueError: ``start`` out of range, or ``vocab`` with a hook on the unembedding.
    """
    n_layers = lm.shape.n_layers
    if not 0 <= start < n_layers:
        raise ValueError(f"start={start} out of range for {n_layers} layers")
    if vocab is not None and any(name.startswith("unembed.") for name, _ in hooks):
        raise ValueError("vocab= skips the unembedding's hook points; drop vocab to hook unembed.*")
    with lm.bridge.hooks(fwd_hooks=list(hooks)):
        if not lm.is_hf:
            h = _native_blocks(lm, resid, start)
            return unembed(lm, lm.core.ln_out(h if last is None else h[:, -last:]), vocab)
        base, layers = _stack(lm)
        with _skipping(layers, start, lm.arch.layer_returns_tuple), _injecting(layers[start], resid):
            out = base(inputs_embeds=resid, use_cache=False)
        h = out[0]
        h = h if last is None else h[:, -last:]
        return unembed(lm, h, vocab)


def _native_blocks(lm: HookedLM, resid: Tensor, start: int) -> Tensor:
    """Blocks ``start..`` of a TransformerLens-native model on a residual stream (before the final norm)."""
    b, pos = resid.shape[:2]
    pid = torch.arange(pos, device=resid.device).unsqueeze(0).expand(b, -1)
    h = resid
    for block in lm.core.layers[start:]:
        (h,) = block(h, attention_mask=None, position_ids=pid)
    return h


def unembed(lm: HookedLM, h: Float[Tensor, "... d_model"], vocab: Sequence[int] | None = None) -> Float[Tensor, "... d_vocab"]:
    """Logits of final-norm outputs (:func:`final_residual`): the unembedding and any logit soft-cap.

    Args:
        lm: The model.
        h: Residual streams after the final normalisation, any leading shape.
        vocab: Unembed only these token ids (the other logits NaN), or ``None`` for all.

    Returns:
        Logits; autograd follows the caller's grad mode.
    """
    core = lm.core
    if not lm.is_hf:
        from transformer_lens.utilities.activation_functions import apply_softcap

        return apply_softcap(_unembed(core.head, h, vocab), core.output_logits_soft_cap)
    return _softcap(lm, _unembed(getattr(core, lm.arch.lm_head), h, vocab))


@torch.no_grad()
def final_residual(lm: HookedLM, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
    """The last block's output after the final normalisation — what the unembedding reads — with every applied edit.

    ``unembed(lm, final_residual(lm, tokens))`` equals :func:`run` (tested per family); a caller that
    needs the logits of a few positions, or of all positions a chunk at a time, unembeds only those,
    so no ``[batch, pos, d_vocab]`` tensor is ever made (the memory of an evaluation on a 262k-token
    vocabulary).

    Args:
        lm: The model.
        tokens: Token ids.

    Returns:
        The normalised residual stream.
    """
    tokens = tokens.to(lm.device)
    if not lm.is_hf:
        return lm.core.ln_out(_native_blocks(lm, embed(lm, tokens), 0))
    base, _ = _stack(lm)
    return base(input_ids=tokens, use_cache=False)[0]


@torch.no_grad()
def cache_from_layer(
    lm: HookedLM,
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

    logits = run_from_layer(lm, resid, start, [(n, make(n)) for n in names], last=last, vocab=vocab)
    return logits, store


@torch.no_grad()
def final_residual_with_prefix(
    lm: HookedLM, prefix: Int[Tensor, "batch pre"], tokens: Int[Tensor, "row pos"], rows: Int[Tensor, " row"]
) -> tuple[Float[Tensor, "batch pre d_model"], Float[Tensor, "row pos d_model"]]:
    """:func:`final_residual` of prefixes, and of continuations of them, running each prefix once (its KV cache).

    Row ``r`` of ``tokens`` continues prefix ``rows[r]``; its residual streams equal those of the
    concatenated sequence (up to float rounding: tested to 1e-5), with every applied edit (an edit acts
    at every position, so the prefix's cached keys and values carry it). This is how several answers to
    one prompt are scored for the cost of one prompt.

    Args:
        lm: A Hugging Face-backed model.
        prefix: Prefixes of one length.
        tokens: Continuations (right-padded rows; causal attention keeps padding out of earlier positions).
        rows: ``[row]`` the prefix each continuation follows.

    Returns:
        ``(prefix states, continuation states)``.

    Raises:
        ValueError: A TransformerLens-native model (no KV cache here; run the concatenation instead).
    """
    if not lm.is_hf:
        raise ValueError("prefix caching needs a Hugging Face-backed model")
    base, _ = _stack(lm)
    out = base(input_ids=prefix.to(lm.device), use_cache=True)
    cache = out.past_key_values
    cache.reorder_cache(rows.to(lm.device))
    return out[0], base(input_ids=tokens.to(lm.device), past_key_values=cache, use_cache=True)[0]


def embed(lm: HookedLM, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
    """The residual stream entering block 0 (token embeddings, plus learned positions where a family has them).

    Autograd is off. Every decoder layer is skipped, so this costs an embedding lookup.
    """
    with torch.no_grad():
        if not lm.is_hf:
            return lm.bridge.embed(tokens)
        base, layers = _stack(lm)
        seen: list[Tensor] = []
        with _skipping(layers, len(layers), lm.arch.layer_returns_tuple, seen):
            base(input_ids=tokens.to(lm.device), use_cache=False)
        return seen[0]


def logit_lens(lm: HookedLM, resid: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits read off a residual stream: the final normalisation, then the unembedding.

    On the last block's ``hook_resid_post`` this equals the model's logits. Used for direct logit
    attribution (the logit lens of nostalgebraist 2020; Elhage et al. 2021).

    Returns:
        Logits. Autograd follows the caller's grad mode.
    """
    if not lm.is_hf:
        return lm.bridge.unembed(lm.bridge.ln_final(resid))
    norm = _walk(lm.core, ".".join(p for p in (lm.arch.base, lm.arch.final_norm) if p), "final norm")
    return _softcap(lm, _walk(lm.core, lm.arch.lm_head, "unembed")(norm(resid)))


def add_persistent_hook(lm: HookedLM, name: str, fn: HookFn) -> Callable[[], None]:
    """Attach a forward hook that stays until removed (survives ``reset_hooks``).

    Args:
        lm: The model.
        name: Hook name (from :mod:`circuits.sites`).
        fn: The hook.

    Returns:
        A function that removes exactly this hook.

    Raises:
        KeyError: ``name`` is not a hook point of this model.
    """
    if name not in lm.bridge.hook_dict:
        raise KeyError(f"{name!r} is not a hook point of this model")
    point = lm.bridge.hook_dict[name]
    handle = point.add_hook(fn, dir="fwd", is_permanent=True)

    def remove() -> None:
        handle.hook.remove()
        point.fwd_hooks = [h for h in point.fwd_hooks if h is not handle]

    return remove


def attach_overlay(lm: HookedLM, hooks: Sequence[tuple[str, HookFn]], fold: Callable[[], list[WeightStep]] | None) -> Callable[[], None]:
    """Place persistent hooks that together form one edit, recorded for generation.

    Generation (:func:`circuits.model.generation.generate`) runs a plain Hugging Face model with its KV
    cache; it applies ``fold`` (the same function as weights) where given, else places the hooks on the
    Hugging Face modules.

    Args:
        lm: The model.
        hooks: ``(hook name, fn)`` pairs.
        fold: Builds the weight steps that compute the same function, or ``None`` if there are none.

    Returns:
        A function that removes the hooks and the record (idempotent).

    Raises:
        KeyError: A name that is not a hook point (nothing stays attached).
    """
    overlay = Overlay(hooks=list(hooks), fold=fold)
    try:
        for name, fn in hooks:
            overlay.removers.append(add_persistent_hook(lm, name, fn))
    except KeyError:
        for r in reversed(overlay.removers):
            r()
        raise
    lm.overlays.append(overlay)

    def remove() -> None:
        if overlay in lm.overlays:
            lm.overlays.remove(overlay)
            for r in reversed(overlay.removers):
                r()

    return remove
