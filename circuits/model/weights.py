"""Weights by architecture-independent name: read, replace, parametrize, fingerprint, export.

Names follow ``nn.Linear``: a ``*.weight`` is ``[out_features, in_features]`` and ``*.bias`` is
``[out_features]``, whatever the storage (GPT-2's ``Conv1D`` keeps ``[in, out]``; this module transposes).
``embed.weight`` is ``W_E`` ``[d_vocab, d_model]``, ``pos_embed.weight`` the learned position embedding
``[n_ctx, d_model]`` (GPT-2), ``unembed.weight`` is ``W_U`` transposed, ``[d_vocab, d_model]``. In block
``L``: ``blocks.L.attn.{q,k,v,o}.{weight,bias}`` (``o``'s input is the heads' ``z`` concatenated
head-major, so head ``h`` owns input columns ``h*d_head:(h+1)*d_head``) and
``blocks.L.mlp.{gate,in,out}.{weight,bias}`` (``out``'s input column ``n`` is neuron ``n``'s
``hook_post``). Where a family fuses projections (GPT-2's ``c_attn``, Phi-3's ``qkv_proj``), only the
unfused names exist. Module paths come from the architecture table (:mod:`circuits.model.arch`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils import parametrize

from circuits.model.hooked import HookedLM

_ATTN = ("q", "k", "v", "o")
_MLP = {"gate": "mlp_gate", "in": "mlp_in", "out": "mlp_out"}


class ExportError(ValueError):
    """The edited model cannot be written as a plain Hugging Face model of its class."""


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face module a TransformerLens bridge component wraps (itself if not wrapped)."""
    return getattr(module, "_original_component", module)


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def module_path(lm: HookedLM, name: str) -> tuple[str, str]:
    """``(dotted module path inside the core model, attribute)`` of a weight name.

    Raises:
        KeyError: Not a weight name, a layer out of range, or a projection this family fuses or lacks.
    """
    arch = lm.arch
    parts = name.split(".")
    attr = parts[-1]
    if attr not in ("weight", "bias"):
        raise KeyError(f"{name!r} is not a weight name (must end in .weight or .bias)")
    if parts[:-1] == ["embed"]:
        return _join(arch.base, arch.embed), attr
    if parts[:-1] == ["pos_embed"] and arch.pos_embed:
        return _join(arch.base, arch.pos_embed), attr
    if parts[:-1] == ["unembed"]:
        return arch.lm_head, attr
    if len(parts) == 5 and parts[0] == "blocks" and parts[1].isascii() and parts[1].isdigit():  # "²".isdigit() too
        layer, sub, lin = int(parts[1]), parts[2], parts[3]
        if not 0 <= layer < lm.shape.n_layers:
            raise KeyError(f"{name!r}: layer {layer} out of range for {lm.shape.n_layers} layers")
        rel = getattr(arch, lin) if sub == "attn" and lin in _ATTN else getattr(arch, _MLP[lin]) if sub == "mlp" and lin in _MLP else None
        if rel is None and ((sub == "attn" and lin in _ATTN) or (sub == "mlp" and lin in _MLP)):
            raise KeyError(f"{name!r}: {arch.name} has no separate {sub}.{lin} projection (fused or absent)")
        if rel is not None:
            return _join(arch.base, arch.layers, str(layer), rel), attr
    raise KeyError(f"{name!r} is not a weight name (e.g. blocks.3.attn.o.weight, blocks.3.mlp.out.bias, embed.weight)")


def _walk(root: torch.nn.Module, path: str, name: str) -> torch.nn.Module:
    module: Any = root
    for part in path.split(".") if path else []:
        module = unwrap(module)
        module = module[int(part)] if part.isdigit() else getattr(module, part, None)
        if module is None:
            raise KeyError(f"{name!r}: this model has no module {path!r}")
    return unwrap(module)


def _is_conv1d(module: torch.nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"


def weight_module(lm: HookedLM, name: str, *, root: torch.nn.Module | None = None) -> tuple[torch.nn.Module, str]:
    """The ``torch.nn`` module that owns a named weight, and the attribute (``"weight"``/``"bias"``).

    Args:
        lm: The model (its architecture decides the path).
        name: Weight name.
        root: Walk this model instead of ``lm``'s (a plain Hugging Face copy of the same architecture).

    Raises:
        KeyError: Unknown name, or the architecture has no such module.
    """
    path, attr = module_path(lm, name)
    return _walk(lm.core if root is None else root, path, name), attr


def has_weight(lm: HookedLM, name: str) -> bool:
    """Whether a weight name exists in this model (an absent bias counts as absent)."""
    try:
        module, attr = weight_module(lm, name)
    except KeyError:
        return False
    return getattr(module, attr, None) is not None


def read_weight(lm: HookedLM, name: str, *, root: torch.nn.Module | None = None) -> Tensor | None:
    """A named weight's current value (detached, ``nn.Linear`` layout), or ``None`` for an absent bias.

    Raises:
        KeyError: Unknown name.
    """
    module, attr = weight_module(lm, name, root=root)
    value = getattr(module, attr, None)
    if value is None:
        return None
    return value.detach().T if attr == "weight" and _is_conv1d(module) else value.detach()


def replace_weight(
    lm: HookedLM, name: str, value: Tensor, *, root: torch.nn.Module | None = None, share: bool = False
) -> Callable[[], None]:
    """Install a new value for a named weight, returning a function that restores the original.

    The weight is replaced by a *new* parameter rather than written in place, so a weight shared with
    another module (SmolLM2 ties ``embed`` and ``unembed``) is untied for the edit and re-tied on
    restore, and a missing bias (Llama has none) is created and removed again. Restoring reinstalls
    the original parameter object: the model is bit-for-bit what it was.

    Args:
        lm: The model.
        name: Weight name.
        value: New value in ``nn.Linear`` layout (for an absent bias: ``[out_features]``).
        root: Replace in this plain Hugging Face copy instead of ``lm``'s own model.
        share: Use ``value``'s storage instead of a copy (it must already have the weight's dtype and
            device; for values this package computed and keeps, e.g. cached weight forms).

    Returns:
        The restore function (idempotent).

    Raises:
        KeyError: Unknown name.
        ValueError: ``value`` has the wrong shape or is not finite.
    """
    module, attr = weight_module(lm, name, root=root)
    old = getattr(module, attr, None)
    conv = attr == "weight" and _is_conv1d(module)
    if old is not None:
        expected = tuple(old.T.shape) if conv else tuple(old.shape)
    elif attr == "bias" and isinstance(getattr(module, "weight", None), Tensor):
        expected = (module.weight.shape[1] if _is_conv1d(module) else module.weight.shape[0],)  # type: ignore[union-attr]
    else:
        raise KeyError(f"{name!r} does not exist in this model")
    if tuple(value.shape) != expected:
        raise ValueError(f"{name}: new value has shape {tuple(value.shape)}, expected {expected}")
    if not share and not torch.isfinite(value).all():  # shared values were checked when first installed
        raise ValueError(f"{name}: new value has NaN or infinite entries")
    ref = old if old is not None else module.weight  # type: ignore[union-attr]
    new = (value.T if conv else value).detach().to(dtype=ref.dtype, device=ref.device)
    new = new if share and new.is_contiguous() else new.contiguous().clone()
    setattr(module, attr, torch.nn.Parameter(new, requires_grad=False))
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


class _Step(torch.nn.Module):
    """A weight step as a ``torch.nn.utils.parametrize`` parametrization (differentiable in the edit)."""

    def __init__(self, fn: Callable[[Tensor], Tensor], transposed: bool):
        super().__init__()
        self.fn = fn
        self.transposed = transposed

    def forward(self, w: Tensor) -> Tensor:
        return self.fn(w.T).T if self.transposed else self.fn(w)


def parametrize_weight(lm: HookedLM, name: str, fn: Callable[[Tensor], Tensor]) -> Callable[[], None]:
    """Compute a named weight as ``fn(original)`` on every forward, keeping autograd (for training edits).

    Args:
        lm: The model.
        name: Weight name (must exist).
        fn: ``nn.Linear``-layout value → new value, differentiable in whatever it closes over.

    Returns:
        A function that removes the parametrization (the original weight is kept unchanged).

    Raises:
        KeyError: Unknown or absent weight.
    """
    module, attr = weight_module(lm, name)
    if getattr(module, attr, None) is None:
        raise KeyError(f"cannot train an edit of the absent weight {name}")
    parametrize.register_parametrization(module, attr, _Step(fn, attr == "weight" and _is_conv1d(module)))

    def remove() -> None:
        if parametrize.is_parametrized(module, attr):
            parametrize.remove_parametrizations(module, attr, leave_parametrized=False)

    return remove


def _hf_named(module: torch.nn.Module, prefix: str = "", *, buffers: bool = False) -> Iterator[tuple[str, Tensor]]:
    """Parameters (or buffers) of a bridged Hugging Face model under their plain HF names."""
    module = unwrap(module)
    items = module.named_buffers(recurse=False) if buffers else module.named_parameters(recurse=False)
    for n, p in items:
        yield prefix + n, p
    for n, child in module.named_children():
        if n == "_original_component" or child is None:
            continue
        if type(child).__module__.startswith("transformer_lens") and not hasattr(child, "_original_component"):
            continue  # a bridge-only module (hook points), not part of the Hugging Face model
        yield from _hf_named(child, f"{prefix}{n}.", buffers=buffers)


def hf_parameters(lm: HookedLM) -> dict[str, Tensor]:
    """The live parameters of a Hugging Face-backed model under plain Hugging Face names (tied ones once).

    Raises:
        ValueError: A TransformerLens-native model.
    """
    if not lm.is_hf:
        raise ValueError("a TransformerLens-native model has no Hugging Face parameters")
    return dict(_hf_named(lm.core))


def hf_buffers(lm: HookedLM) -> dict[str, Tensor]:
    """The buffers of a Hugging Face-backed model under plain Hugging Face names (e.g. rotary ``inv_freq``)."""
    return dict(_hf_named(lm.core, buffers=True))


def fingerprint(lm: HookedLM) -> str:
    """A sha256 of the model's weights: names, dtypes, shapes and bytes, in sorted name order.

    Tied parameters are counted once. Any change to any weight (including a permanently applied
    weight edit) changes the fingerprint. The hash is cached until a parameter is replaced or
    written in place (tracked by parameter identity and PyTorch's version counter).

    Args:
        lm: The model.

    Returns:
        ``"sha256:<64 hex digits>"``.
    """
    state = lm.core.state_dict(keep_vars=True)
    key = hash(tuple((n, id(t), t._version) for n, t in state.items()))
    cached = lm._fingerprint
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = hashlib.sha256()
    seen: set[int] = set()
    for name, tensor in sorted(state.items()):
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    value = "sha256:" + digest.hexdigest()
    lm._fingerprint = (key, value)
    return value


def weight_parameters(lm: HookedLM) -> list[torch.nn.Parameter]:
    """The model's weights (for training planted models)."""
    return list(lm.core.parameters())


def weights_state(lm: HookedLM) -> dict[str, Tensor]:
    """A copy of the model's weights by state-dict name (for saving with safetensors)."""
    return {k: v.detach().clone().contiguous() for k, v in lm.core.state_dict().items()}


def load_weights(lm: HookedLM, state: dict[str, Tensor]) -> None:
    """Load weights saved by :func:`weights_state` into a model of the same shape.

    Raises:
        RuntimeError: Missing, unexpected or mis-shaped tensors.
    """
    lm.core.load_state_dict(state, strict=True)


@contextlib.contextmanager
def frozen_parameters(lm: HookedLM) -> Iterator[None]:
    """Turn off ``requires_grad`` on every weight for a block (gradients w.r.t. activations only).

    Attribution methods need ``∂metric/∂activation``; not computing weight gradients halves the
    backward's cost and memory. The previous flags are restored on exit.
    """
    params = list(lm.core.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def hf_module_name(lm: HookedLM, name: str) -> str:
    """The Hugging Face module path of a weight's module (``model.layers.3.self_attn.o_proj``), for PEFT.

    Raises:
        KeyError: Unknown name.
        ValueError: A TransformerLens-native model.
    """
    if not lm.is_hf:
        raise ValueError("a TransformerLens-native model has no Hugging Face module names")
    return module_path(lm, name)[0]


def _tied(lm: HookedLM) -> bool:
    return weight_module(lm, "unembed.weight")[0].weight is weight_module(lm, "embed.weight")[0].weight
