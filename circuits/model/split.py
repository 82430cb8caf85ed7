"""Per-reader residual inputs for edge-level probing: each head's query, key and value, and each MLP.

An *edge* of the computational graph (Elhage et al. 2021, "A mathematical framework for transformer
circuits"; Conmy et al. 2023, ACDC; Hanna et al. 2024, EAP-IG) runs from one component's write into the
residual stream to one other component's *input*. To patch or differentiate one edge, every reader
needs its own copy of the residual stream: TransformerLens' ``use_split_qkv_input`` gives each head's
query, key and value projection its own copy (``blocks.{L}.hook_q_input`` ``[batch, pos, head,
d_model]``, before the block's first norm; key/value copies per key/value head under grouped-query
attention) and ``use_hook_mlp_in`` exposes the residual the MLP reads (``blocks.{L}.hook_mlp_in``).
:func:`split_inputs` turns both on for the duration of a block and restores the model afterwards.

TransformerLens 4.3 forks the residual for Hugging Face attention bridges only. For TransformerLens-native
models (the tiny and planted test models) the same fork is built here: the residual entering the block
is copied per head, passed through the same ``hook_q_input``/``hook_k_input``/``hook_v_input`` hook
points, normalised by the block's first norm and projected by that head's rows of ``W_Q``/``W_K``/``W_V``
(the ``hook_q``/``hook_k``/``hook_v`` outputs are replaced by the per-head result, which equals the
unsplit one when no hook edits the copies).

Refused, with the reason (:class:`~circuits.model.arch.UnsupportedArchitecture`): families with
post-sublayer norms (Gemma 2/3, OLMo 2), where a head's output is normalised together with the other
heads' before it reaches the residual stream, so per-head writes do not add up to the stream; and GPT-J,
whose attention bridge has no per-head fork and whose MLP reads the shared normalised input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.model.arch import UnsupportedArchitecture
from circuits.model.forward import add_persistent_hook
from circuits.model.hooked import HookedLM
from circuits.model.weights import read_weight

_FLAGS = ("use_split_qkv_input", "use_hook_mlp_in")


def edge_support(lm: HookedLM) -> str | None:
    """Why edge-level probing is not exact on this model, or ``None`` when it is supported."""
    if lm.arch.post_norm:
        return (
            f"{lm.arch.name} normalises each sublayer's output before the residual add (post-norm), so a head's "
            "write into the residual stream depends on the other heads' and per-head edges are not additive"
        )
    if lm.arch.name == "gptj":
        return "gptj: TransformerLens 4.3 has no per-head q/k/v fork for its attention, and its MLP reads the shared normalised input"
    return None


def is_parallel(lm: HookedLM) -> bool:
    """Whether attention and MLP read the same residual (then a layer's heads do not feed its MLP)."""
    return lm.arch.is_parallel(lm.core.config) if lm.is_hf else lm.arch.is_parallel(None)


def head_writes(lm: HookedLM, layer: int, z: Float[Tensor, "batch pos head d_head"]) -> Float[Tensor, "batch pos head d_model"]:
    """Each head's write into the residual stream, ``z_h W_O^h`` (the output bias is no head's).

    Args:
        lm: The model.
        layer: Block index.
        z: ``blocks.{layer}.attn.hook_z``.

    Returns:
        Per-head outputs; their sum plus ``b_O`` is the attention output.
    """
    w_o = read_weight(lm, f"blocks.{layer}.attn.o.weight")  # [d_model, head·d_head]
    assert w_o is not None
    n_heads, d_head = z.shape[-2], z.shape[-1]
    return torch.einsum("bphe,mhe->bphm", z, w_o.to(z.dtype).view(w_o.shape[0], n_heads, d_head))


def _native_fork(lm: HookedLM) -> list[Any]:
    """Persistent hooks that build the per-head q/k/v fork on a TransformerLens-native model."""
    shape = lm.shape
    removers = []
    for layer in range(shape.n_layers):
        block = lm.core.layers[layer]
        norm = getattr(block, "ln1", None)
        attn = block.attn
        resid: dict[str, Tensor] = {}

        def keep(act: Tensor, hook: Any, resid: dict[str, Tensor] = resid) -> None:
            resid["x"] = act

        def make(act_name: str, n: int, layer: int = layer, norm: Any = norm, attn: Any = attn, resid: dict[str, Tensor] = resid) -> Any:
            point = getattr(attn, f"hook_{act_name}_input")

            def fork(act: Tensor, hook: Any) -> Tensor:
                x = resid["x"]
                copies = point(x[:, :, None, :].expand(x.shape[0], x.shape[1], n, x.shape[-1]).clone())
                normed = copies if norm is None else norm(copies)
                w = read_weight(lm, f"blocks.{layer}.attn.{act_name}.weight")
                b = read_weight(lm, f"blocks.{layer}.attn.{act_name}.bias")
                assert w is not None
                out = torch.einsum("bphm,hem->bphe", normed, w.to(normed.dtype).view(n, -1, w.shape[-1]))
                return out if b is None else out + b.to(out.dtype).view(n, -1)

            return fork

        removers.append(add_persistent_hook(lm, f"blocks.{layer}.hook_resid_pre", keep))
        for act_name, n in (("q", shape.n_heads), ("k", shape.n_kv_heads), ("v", shape.n_kv_heads)):
            removers.append(add_persistent_hook(lm, f"blocks.{layer}.attn.hook_{act_name}", make(act_name, n)))
    return removers


@contextlib.contextmanager
def split_inputs(lm: HookedLM) -> Iterator[None]:
    """Give every head's q/k/v and every MLP its own residual input hook for the duration of the block.

    Inside the block ``blocks.{L}.hook_q_input`` / ``hook_k_input`` / ``hook_v_input`` fire with
    ``[batch, pos, head, d_model]`` (key/value: ``n_kv_heads``) and ``blocks.{L}.hook_mlp_in`` with
    ``[batch, pos, d_model]``; without hooks the logits are unchanged (to float rounding).

    Raises:
        UnsupportedArchitecture: The family's residual writes are not per-head additive, or it has no
            per-head fork (:func:`edge_support` gives the reason).
    """
    reason = edge_support(lm)
    if reason is not None:
        raise UnsupportedArchitecture(f"edge-level probing is not supported: {reason}")
    bridge, cfg = lm.bridge, lm.bridge.cfg
    saved = {f: bool(getattr(cfg, f, False)) for f in _FLAGS}
    removers: list[Any] = []
    try:
        if lm.is_hf:
            bridge.set_use_split_qkv_input(True)
        else:
            # The native attention bridge has the hook points but no fork: build it here, and set the
            # flag the bridge checks before it accepts hooks on them.
            cfg._set_bridge_managed_hook_flag("use_split_qkv_input", True)
            removers = _native_fork(lm)
        bridge.set_use_hook_mlp_in(True)
        yield
    finally:
        for r in reversed(removers):
            r()
        if lm.is_hf:
            bridge.set_use_split_qkv_input(saved["use_split_qkv_input"])
        else:
            cfg._set_bridge_managed_hook_flag("use_split_qkv_input", saved["use_split_qkv_input"])
        bridge.set_use_hook_mlp_in(saved["use_hook_mlp_in"])
