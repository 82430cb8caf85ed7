"""Export the hooked model's current (edited) weights as a plain Hugging Face model.

A fresh ``*ForCausalLM`` of the same class is built from a copy of the config and given the live
weights under their plain Hugging Face names (:func:`circuits.model.weights.hf_parameters`), so
``transformers`` alone loads what :func:`save_hf_pretrained` writes and reproduces the edited logits.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from circuits.io import atomic_directory
from circuits.model.hooked import HookedLM
from circuits.model.weights import ExportError, _tied, hf_parameters


def _keys(cls: type, config: Any) -> set[str]:
    """State-dict keys of a model class for a config (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        return set(cls(config).state_dict())


def hf_config(lm: HookedLM) -> Any:
    """A copy of the Hugging Face config fit for a plain model of the current (edited) weights.

    Quantization settings (a GGUF-loaded model counts as quantized) are dropped, the attention
    implementation is left to ``transformers``' default (TransformerLens forces ``eager``), the tie flag
    follows the current embeddings, and where an edit created a bias that the family stores only under
    a config flag (Llama's ``attention_bias``/``mlp_bias``), the flag is turned on.

    Raises:
        ValueError: A TransformerLens-native model.
        ExportError: An edit created a bias this family has no place for (Qwen 2's ``o_proj``, GPT-J's
            ``out_proj``, Phi-3): it is refused rather than silently dropped.
    """
    if not lm.is_hf:
        raise ValueError("only Hugging Face-backed models have a Hugging Face config")
    config = copy.deepcopy(lm.core.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.output_attentions = False
    config._attn_implementation = None
    tied = _tied(lm)
    config.tie_word_embeddings = tied
    head_key = f"{lm.arch.lm_head}.weight"
    live = [k for k in hf_parameters(lm) if not (tied and k == head_key)]
    keys = _keys(type(lm.core), config)  # once: building even a meta model is not free
    missing = [k for k in live if k not in keys]
    if not missing:
        return config
    arch = lm.arch
    attn = [f".{p}." for p in (arch.q, arch.k, arch.v, arch.o) if p]
    mlp = [f".{p}." for p in (arch.mlp_in, arch.mlp_gate, arch.mlp_out) if p]
    for flag, paths in ((arch.attn_bias_flag, attn), (arch.mlp_bias_flag, mlp)):
        if flag and any(any(p in k for p in paths) for k in missing):
            setattr(config, flag, True)
    keys = _keys(type(lm.core), config)
    unstorable = sorted(k for k in live if k not in keys)
    if unstorable:
        raise ExportError(
            f"cannot export: {type(lm.core).__name__} has no place for {unstorable[:3]} (an edit created a bias this "
            "family does not have); use a zero ablation, or keep the edit as a circuit-atlas edit applied at load"
        )
    return config


def hf_model_copy(lm: HookedLM) -> Any:
    """A fresh plain Hugging Face model holding the model's current weights (edits included).

    Biases of layers whose bias flag :func:`hf_config` turned on but that no edit created are zeros.

    Args:
        lm: A Hugging Face-backed model.

    Returns:
        The ``transformers`` model (eval mode), sharing no storage with ``lm``.

    Raises:
        ValueError: A TransformerLens-native model.
        ExportError: The weights do not fit the architecture.
    """
    config = hf_config(lm)
    live = hf_parameters(lm)
    tied = bool(config.tie_word_embeddings)
    head_key = f"{lm.arch.lm_head}.weight"
    fresh = type(lm.core)(config)
    state = {}
    for k, v in fresh.state_dict().items():
        if k in live:
            state[k] = live[k].detach().clone()
        elif k.endswith(".bias"):
            state[k] = torch.zeros_like(v)
        elif not (tied and k == head_key):
            raise ExportError(f"cannot export: {type(lm.core).__name__} expects {k!r}, which this model does not have")
    fresh.load_state_dict(state, strict=not tied)
    if tied:
        fresh.tie_weights()
    return fresh.to(device=lm.device, dtype=lm.dtype).eval()


def save_hf_pretrained(lm: HookedLM, directory: Path | str, *, extra_files: dict[str, str] | None = None) -> Path:
    """Save :func:`hf_model_copy` and the tokenizer as a plain Hugging Face model directory.

    ``transformers.AutoModelForCausalLM.from_pretrained(directory)`` then loads it without this
    project. The directory is filled under a temporary name and renamed into place as a whole
    (:func:`circuits.io.atomic_directory`), ``extra_files`` included: an interrupted export leaves no
    directory at all, and its temporary is removed by the next write there.

    Args:
        lm: A Hugging Face-backed model.
        directory: Output directory; must not exist or be empty.
        extra_files: Text files to write into the directory too (name → content).

    Raises:
        ValueError: A TransformerLens-native model, or an output directory that exists and is not empty.
        ExportError: The weights do not fit the architecture.
    """
    fresh = hf_model_copy(lm)
    with atomic_directory(directory) as tmp:
        fresh.save_pretrained(str(tmp), safe_serialization=True)
        if lm.tokenizer is not None:
            lm.tokenizer.save_pretrained(str(tmp))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return Path(directory)
