"""Interventions: what replaces a site's activation — one set of classes for probing, editing and training.

An intervention acts on one *site* (a component's slice of a TransformerLens activation, e.g. head
``h``'s ``z`` or neuron ``n``'s ``hook_post``; :mod:`circuits.sites`), after pyvene's
``Intervention``. Every intervention has

* a **hook form**, ``new = intervention(base, source, generator)``: ``base`` is the running activation
  slice ``[batch, *slice]``, ``source`` the same slice from a counterfactual run (clean when denoising,
  corrupted when noising; ``None`` in edits, which have none) and ``generator`` a seeded
  ``torch.Generator`` for the stochastic ones;
* a **weight form** where one exists, :meth:`Intervention.weight_steps`: weight changes that compute
  the same function (a head's or neuron's output columns of ``W_O``/``W_out`` and the layer's output
  bias; the bias of the residual writer before a ``resid_pre`` site; the writers of the residual
  stream for a projection), from the weight references of :func:`circuits.sites.writers`;
* its **tensors** (:meth:`Intervention.tensors`): what an edit stores, and what training optimises
  (the same classes hold ``torch.nn.Parameter`` values during training, so both forms stay
  differentiable in them).

The patching engine (:mod:`circuits.probing.patching`), edits (:mod:`circuits.editing`), training,
faithfulness and the planted-model recovery all use these classes.

* :class:`Swap` — activation patching proper: the counterfactual activation (Meng et al. 2022;
  Heimersheim & Nanda 2024).
* :class:`Zero` — zero ablation (Olsson et al. 2022).
* :class:`Mean` — mean ablation: a fixed reference value (Wang et al. 2023).
* :class:`Resample` — resample ablation: each prompt takes the activation of a reference prompt,
  from a stored bank or, without one, from another prompt of the batch (Chan et al. 2022).
* :class:`GaussianNoise` — add seeded Gaussian noise (ROME's corruption, Meng et al. 2022; 3× the
  embedding standard deviation, :func:`rome_noise_std`).
* :class:`Scale` — multiply by α (Michel et al. 2019); per-neuron scales are CARE's repair.
* :class:`Add` — add a vector: an offset of a head or neuron, or a steering vector on the residual
  stream (Turner et al. 2023; Rimsky et al. 2024).
* :class:`ProjectOut` — remove the component along a unit direction (directional ablation, Arditi et
  al. 2024); its weight form is weight orthogonalization.
* :class:`LowRank` — a weight-only intervention ``W + α B A`` on a named weight (LoRA, Hu et al. 2022).
* :class:`WeightDelta` — a weight-only dense update ``W + Δ`` on a named weight (full fine-tuning).
* :class:`MaskedNoise` — mask-gated Gaussian noise ``z + λ (m ⊗ ε)`` (AIFS, seed 002); :class:`Gate` — a
  per-feature affine map ``g ⊙ z + b``, what a trained AIFS edit applies.
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from circuits.interventions.base import (
    Intervention,
    InterventionError,
    apply_at,
    apply_where,
)
from circuits.interventions.masked import Gate, MaskedNoise
from circuits.interventions.replace import (
    Mean,
    MeanOf,
    Resample,
    Swap,
    SweepIntervention,
    Zero,
    at_site,
)
from circuits.interventions.shift import Add, GaussianNoise, Scale
from circuits.interventions.weights import LowRank, ProjectOut, WeightDelta

__all__ = [
    "Add", "GaussianNoise", "Gate", "Intervention", "InterventionError", "LowRank", "MaskedNoise", "Mean", "MeanOf", "ProjectOut", "Resample",
    "Scale", "Swap", "SweepIntervention", "WeightDelta", "Zero", "apply_at", "apply_where", "at_site", "rome_noise_std",
]


def rome_noise_std(embedding_matrix: Float[Tensor, "d_vocab d_model"], multiplier: float = 3.0) -> float:
    """ROME's noise level: ``multiplier`` × the standard deviation of token embeddings.

    Meng et al. 2022 corrupt subject embeddings with ``N(0, ν)``, ``ν = 3σ`` with σ the empirical
    standard deviation of embeddings.
    """
    return float(multiplier * embedding_matrix.float().std())


