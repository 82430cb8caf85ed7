"""Unrestricted baselines for the surgical trained edits: LoRA on every layer, and full fine-tuning.

Issue 22 ("Baselines", seed 004's comparison) asks whether surgical edits keep more capability at equal
harm reduction than edits that may change the whole network. Both baselines are trained by the same
loop as the surgical edits (:func:`circuits.editing.train.train_edit`): the same harm loss on the
suite's build split, the same KL preservation term on neutral text, the same step budget, validation
split, early stopping and seed. Only the set of trainable numbers differs; nothing is selected from
the atlas.

Edited matrices (:data:`TARGETS`), in every block ``L``, where the architecture has them as separate
projections (SmolLM2 has all seven):

* attention: ``blocks.L.attn.q.weight``, ``.k.weight``, ``.v.weight`` (the inputs) and
  ``blocks.L.attn.o.weight`` (the output, ``W_O``);
* MLP: ``blocks.L.mlp.gate.weight`` and ``blocks.L.mlp.in.weight`` (the inputs; gated MLPs only
  have ``gate``) and ``blocks.L.mlp.out.weight`` (the output, ``W_out``).

Frozen: the token (and position) embeddings, the unembedding, every normalisation's weights, and all
biases. Fused projections (GPT-2's fused query-key-value weight) are refused rather than silently skipped.

* :func:`lora_all_edit` — LoRA (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models")
  on every one of those matrices: ``W' = W + α B A``, ``A`` ``[r, in]`` Gaussian scaled by ``1/√in``,
  ``B`` ``[out, r]`` zero (so training starts at the unedited model), as the ``low_rank`` edit kind.
* :func:`full_ft_edit` — full fine-tuning of the same matrices, stored as a dense ``Δ`` per matrix
  (the ``weight_delta`` kind, ``W' = W + Δ``, ``Δ`` starting at 0).

Memory: Adam keeps two moments per trained number, and the loop keeps the best tensors, so full
fine-tuning holds about five copies of the edited weights (the edit, the live parameters, their
gradient, two moments) plus one for the best step: ≈ 6 × 4 bytes × 106 M ≈ 2.5 GB for SmolLM2-135M.
"""

from __future__ import annotations

import math

import torch

from circuits import model as M
from circuits.editing.build import new_edit
from circuits.editing.edit import Edit, EditError
from circuits.editing.objectives import Objective
from circuits.editing.train import TrainConfig, TrainingData, train_edit
from circuits.model import HookedLM
from circuits.sites import AttnRef, Component, MlpRef

#: The projections each baseline edits in every block (``blocks.L.{target}.weight``).
TARGETS: tuple[str, ...] = ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.in", "mlp.out")
#: Adam learning rate for full fine-tuning. The surgical kinds' 1e-2 moves every entry of every matrix
#: by ~1e-2 per step, the size of the weights themselves; 1e-4 is within the usual full fine-tuning
#: range for small language models (1e-5 … 1e-4) and fits a 40-step budget.
FULL_FT_LR = 1e-4
#: Adam learning rate for the unrestricted LoRA. With the surgical 1e-2 on all 210 matrices of SmolLM2-135M
#: the validation objective never improved on two of three seeds (the edit stayed the identity) and the
#: third raised perplexity by 55% (identity-harm-religion, 40 steps); at 1e-3 validation harm fell
#: 3.39 → 0.18 with a validation KL of 0.013 nats/token, best at the last step (measured, seed 0).
LORA_ALL_LR = 1e-3


def baseline_weights(model: HookedLM) -> list[str]:
    """The names of every matrix the baselines edit (see module docstring), block by block.

    Raises:
        EditError: The architecture fuses the attention input projections (no separate q/k/v).
    """
    n_layers = M.shape_of(model).n_layers
    missing = [f"attn.{p}" for p in "qkvo" if not M.has_weight(model, f"blocks.0.attn.{p}.weight")]
    if missing:
        raise EditError(f"{M.model_name(model)} has no separate {', '.join(missing)} projections (fused); the baselines edit each matrix")
    present = [t for t in TARGETS if M.has_weight(model, f"blocks.0.{t}.weight")]
    return [f"blocks.{layer}.{t}.weight" for layer in range(n_layers) for t in present]


def baseline_components(model: HookedLM) -> tuple[Component, ...]:
    """Every attention layer and MLP the baselines edit (``L0ATTN, L0MLP, L1ATTN, …``), for the manifest."""
    has_mlp = M.has_weight(model, "blocks.0.mlp.out.weight")
    return tuple(c for layer in range(M.shape_of(model).n_layers) for c in ((AttnRef(layer), MlpRef(layer)) if has_mlp else (AttnRef(layer),)))


def _targets(names: list[str]) -> str:
    """The edited projections, for the manifest (``attn.q,attn.k,…``)."""
    return ",".join(dict.fromkeys(n.split(".", 2)[2].removesuffix(".weight") for n in names))


def lora_all_edit(
    model: HookedLM, data: TrainingData, *, rank: int = 4, alpha: float = 1.0, objective: Objective = "gap", config: TrainConfig = TrainConfig(lr=LORA_ALL_LR)
) -> Edit:
    """Unrestricted LoRA: ``W' = W + α B A`` on every block's q, k, v, o, gate, in and out weights, trained.

    The surgical :func:`~circuits.editing.train.low_rank_edit` with the same rank, scale, initialisation
    and loop, but on every matrix of :func:`baseline_weights` instead of the flagged components' output
    columns. Saves, applies, bakes and exports (PEFT) as any ``low_rank`` edit; its hyperparameters
    record ``baseline="lora_all"`` and the edited ``targets``.

    Args:
        model: The model (unchanged).
        data: Training data (:meth:`TrainingData.from_suite`).
        rank: LoRA rank ``r`` (default: the surgical ``low_rank`` recipe's 4).
        alpha: Scale ``α``.
        objective: ``"gap"`` (the baselines of issue 22) or ``"invariance"``.
        config: Loop settings (default Adam lr :data:`LORA_ALL_LR`); the seed also draws ``A``.

    Returns:
        The trained ``low_rank`` edit; ``n_parameters`` = ``r · Σ (in + out)`` over the edited matrices.

    Raises:
        EditError: ``rank < 1``, fused projections, or ``preservation_kind="weights"`` (seed 004's term
            reads the output projections' inputs only).
    """
    if rank < 1:
        raise EditError(f"rank must be >= 1, got {rank}")
    if config.preservation_kind != "kl":
        raise EditError("the lora_all baseline is trained with the KL preservation term (the weights term covers W_O/W_out only)")
    names = baseline_weights(model)
    gen = torch.Generator().manual_seed(config.seed)
    tensors = {}
    for name in names:
        out_f, in_f = M.read_weight(model, name).shape  # type: ignore[union-attr]
        tensors[f"{name}.lora_A"] = torch.randn(rank, in_f, generator=gen) / math.sqrt(in_f)
        tensors[f"{name}.lora_B"] = torch.zeros(out_f, rank)
    hp = {"rank": rank, "alpha": float(alpha), "baseline": "lora_all", "targets": _targets(names)}
    base = new_edit("low_rank", baseline_components(model), tensors, model, hp, form="weights")
    return train_edit(model, base, data, objective=objective, config=config)


def full_ft_edit(model: HookedLM, data: TrainingData, *, objective: Objective = "gap", config: TrainConfig = TrainConfig(lr=FULL_FT_LR)) -> Edit:
    """Full fine-tuning of every block's q, k, v, o, gate, in and out weights, stored as dense deltas.

    Every entry of every matrix of :func:`baseline_weights` trains (``Δ`` from 0) with the harm loss
    and the KL preservation term of the surgical edits; embeddings, unembedding, norms and biases stay
    frozen. Use a full fine-tuning learning rate (:data:`FULL_FT_LR`, the default here; recipes pass
    their own :class:`TrainConfig`).

    Args:
        model: The model (unchanged).
        data: Training data (:meth:`TrainingData.from_suite`).
        objective: ``"gap"`` (the baselines of issue 22) or ``"invariance"``.
        config: Loop settings.

    Returns:
        The trained ``weight_delta`` edit; ``n_parameters`` = ``Σ out · in`` over the edited matrices.

    Raises:
        EditError: Fused projections, or ``preservation_kind="weights"`` (defined for low-rank edits).
    """
    if config.preservation_kind != "kl":
        raise EditError("the full_ft baseline is trained with the KL preservation term (the weights term is for low-rank edits)")
    names = baseline_weights(model)
    tensors = {f"{n}.delta": torch.zeros(tuple(M.read_weight(model, n).shape)) for n in names}  # type: ignore[union-attr]
    base = new_edit("weight_delta", baseline_components(model), tensors, model, {"baseline": "full_ft", "targets": _targets(names)}, form="weights")
    return train_edit(model, base, data, objective=objective, config=config)
