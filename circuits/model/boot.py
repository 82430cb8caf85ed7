"""Booting a Hugging Face causal LM as a :class:`~circuits.model.hooked.HookedLM` (TransformerLens 4.3's bridge)."""

from __future__ import annotations

from typing import Any

import torch

from circuits.model.arch import arch_of
from circuits.model.hooked import HookedLM, Provenance
from circuits.model.sources import ModelLoadError
from circuits.model.tokens import tokenization_policy


def boot(
    hf: Any, tokenizer: Any, *, name: str, provenance: Provenance, recipe: dict[str, Any] | None, dtype: torch.dtype, prepend_bos: bool | None = None
) -> HookedLM:
    """Wrap an eval-mode Hugging Face ``*ForCausalLM`` in TransformerLens' ``TransformerBridge`` with its tokenization policy.

    Raises:
        ModelLoadError: No tokenizer, or a ``prepend_bos`` the tokenizer cannot honour.
        circuits.model.arch.UnsupportedArchitecture: A family the project cannot probe.
    """
    from transformer_lens.model_bridge import TransformerBridge  # noqa: PLC0415 - the heavy dependency, imported on first use

    arch = arch_of(type(hf).__name__)
    if tokenizer is None:
        raise ModelLoadError(f"model {name!r} has no tokenizer; pass tokenizer=")
    try:
        policy = tokenization_policy(tokenizer, prepend_bos)
    except ValueError as e:
        raise ModelLoadError(f"model {name!r}: {e}") from None
    hf.eval()
    if not getattr(hf.config, "architectures", None):
        hf.config.architectures = [type(hf).__name__]  # a model built from a config has none; TransformerLens reads it
    device = next(hf.parameters()).device
    bridge = TransformerBridge.boot_transformers(
        str(getattr(hf.config, "_name_or_path", "") or name), hf_model=hf, tokenizer=tokenizer, dtype=dtype, device=device
    )
    bridge.eval()
    return HookedLM(bridge, tokenizer, name=name, provenance=provenance, arch=arch, recipe=recipe, tokenization=policy)
