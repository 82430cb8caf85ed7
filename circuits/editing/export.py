"""Export edits for use without this project: a baked Hugging Face model, or a PEFT LoRA adapter.

* :func:`export_hf` applies edits in their weight form (:func:`~circuits.editing.apply.apply_edit`
  with ``form="weights"``: pruning for zero/mean ablation, column scaling, offsets and steering vectors
  folded into output biases, orthogonalized writers, ``W + αBA``) and saves a plain ``save_pretrained``
  directory; ``transformers.AutoModelForCausalLM.from_pretrained`` loads it and reproduces the
  edited logits.
* :func:`export_peft` writes a low-rank edit as a PEFT LoRA adapter (``lora_A = A``, ``lora_B = B``,
  ``lora_alpha = α·r`` so PEFT's scaling ``lora_alpha / r`` equals ``α``) that
  ``peft.PeftModel.from_pretrained`` loads onto the unedited Hugging Face model.
"""

from __future__ import annotations

import json
from pathlib import Path

from circuits import model as M
from circuits.editing.apply import apply_edit, verify_fingerprint
from circuits.editing.edit import Edit, EditError
from circuits.editing.kinds import low_rank_factors
from circuits.io import atomic_directory
from circuits.model import HookedLM


def export_hf(model: HookedLM, edits: tuple[Edit, ...] | list[Edit], directory: Path | str) -> Path:
    """Bake edits (in order) into the weights and save a plain Hugging Face model directory.

    The model itself is unchanged afterwards. The directory also gets ``circuits_edits.json`` naming
    the edits it contains; everything is written under a temporary name and renamed into place as a
    whole, so an interrupted export leaves no directory (and a rerun is not refused).

    Args:
        model: A Hugging Face-backed model.
        edits: Edits, applied in this order (may be empty: the unedited model).
        directory: Output directory; must not exist or be empty.

    Returns:
        The directory.

    Raises:
        EditError: An edit made for another model, or one with no weight form (resample ablation).
        ValueError: A TL-native model, or a non-empty output directory.
    """
    edits = tuple(edits)
    record = [
        {"kind": e.kind, "form": e.form, "objective": e.objective, "components": [str(c) for c in e.components], "hyperparameters": e.hyperparameters}
        for e in edits
    ]
    # Written inside the directory before it is renamed into place: an export is whole or absent.
    extra = {"circuits_edits.json": json.dumps({"base_fingerprint": M.fingerprint(model), "edits": record}, indent=2) + "\n"}
    if not edits:
        return M.save_hf_pretrained(model, directory, extra_files=extra)
    verify_fingerprint(model, *edits)
    with apply_edit(model, *edits, form="weights", check_fingerprint=False):
        return M.save_hf_pretrained(model, directory, extra_files=extra)


def export_peft(model: HookedLM, edit: Edit, directory: Path | str) -> Path:
    """Save a ``low_rank`` edit (any objective) as a PEFT LoRA adapter for the Hugging Face model.

    Args:
        model: The Hugging Face-backed model the edit was made for.
        edit: The low-rank edit.
        directory: Output directory; must not exist or be empty.

    Returns:
        The directory (``adapter_config.json``, ``adapter_model.safetensors``).

    Raises:
        EditError: Not a low-rank edit, factors of different ranks, or a model mismatch.
        ValueError: A TL-native model, or a non-empty output directory.
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    if edit.kind != "low_rank":
        raise EditError(f"only low_rank edits are LoRA adapters, not {edit.kind}")
    verify_fingerprint(model, edit)
    factors = low_rank_factors(edit)
    ranks = {a.shape[0] for a, _ in factors.values()}
    if len(ranks) != 1:
        raise EditError(f"PEFT needs one rank for all targets, got {sorted(ranks)}")
    (rank,) = ranks
    alpha = float(edit.hyperparameters.get("alpha", 1.0))
    modules = {M.hf_module_name(model, name): (a, b) for name, (a, b) in factors.items()}
    config = LoraConfig(r=rank, lora_alpha=alpha * rank, lora_dropout=0.0, bias="none", target_modules=sorted(modules), task_type="CAUSAL_LM")
    peft_model = get_peft_model(M.hf_model_copy(model), config)
    state = {}
    for module, (a, b) in modules.items():
        state[f"base_model.model.{module}.lora_A.weight"] = a.detach().float()
        state[f"base_model.model.{module}.lora_B.weight"] = b.detach().float()
    result = set_peft_model_state_dict(peft_model, state)
    if getattr(result, "unexpected_keys", None):
        raise EditError(f"PEFT did not accept adapter keys {result.unexpected_keys[:4]}")
    peft_model.peft_config["default"].base_model_name_or_path = M.hub_name(model)
    with atomic_directory(directory) as tmp:
        peft_model.save_pretrained(str(tmp))
    return Path(directory)

