"""Interventions of AIFS (seed 002, "Adaptive Invariant Feature Extraction using Synthetic Interventions").

* :class:`MaskedNoise` — the seed's latent intervention ``z + λ (m ⊗ ε)``, ``ε ~ N(0, I)`` (§ Technical
  Components 1): Gaussian noise gated per feature by a mask ``m ∈ [0, 1]^d``. Training-time only; no
  weight form (the noise is redrawn at every forward).
* :class:`Gate` — a per-feature affine map ``g ⊙ z + b``: what a trained AIFS edit applies at inference
  (features whose gate training drove towards 0 are suppressed). Weight form on a whole head: its
  output columns ``W_O[:, cols] · diag(g)``, and ``W_O[:, cols] · b`` added to the output bias.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.interventions.base import (
    Intervention,
    InterventionError,
    _as_column,
    _columns_step,
    _unit_site,
)
from circuits.model import HookedLM, WeightStep
from circuits.sites import Component


def _check_width(name: str, v: Tensor, base: Tensor) -> None:
    if v.shape[-1] != base.shape[-1]:
        raise InterventionError(f"{name} has width {v.shape[-1]}, activation has {base.shape[-1]}")


@dataclass(frozen=True)
class MaskedNoise(Intervention):
    """``z + lam · (mask ⊗ ε)``, ``ε ~ N(0, I)`` drawn from the seeded generator (AIFS, seed 002 §1).

    Attributes:
        mask: ``[d]`` per-feature noise gate in ``[0, 1]`` (``d`` the slice's last axis).
        lam: Intervention strength λ (the seed's default 0.5).
    """

    mask: Float[Tensor, " d"] = field(repr=False)
    lam: float = 0.5
    name: ClassVar[str] = "masked_noise"
    stochastic: ClassVar[bool] = True

    def __call__(self, base: Tensor, source: Tensor | None, generator: torch.Generator | None) -> Tensor:
        _check_width("mask", self.mask, base)
        eps = torch.randn(base.shape, generator=generator, dtype=torch.float32).to(base.device, base.dtype)
        return base + self.lam * self.mask.to(base.dtype) * eps

    def tensors(self) -> dict[str, Tensor]:
        return {"mask": self.mask}


@dataclass(frozen=True)
class Gate(Intervention):
    """Per-feature affine map ``scale ⊙ z + shift`` (trainable: both may hold ``torch.nn.Parameter``).

    Attributes:
        scale: ``[d]`` gate ``g`` (1 = keep, 0 = suppress the feature).
        shift: ``[d]`` offset ``b``.
    """

    scale: Float[Tensor, " d"] = field(repr=False)
    shift: Float[Tensor, " d"] = field(repr=False)
    name: ClassVar[str] = "gate"

    def __call__(self, base: Tensor, source: Tensor | None, generator: torch.Generator | None) -> Tensor:
        _check_width("scale", self.scale, base)
        _check_width("shift", self.shift, base)
        return base * self.scale.to(base.dtype) + self.shift.to(base.dtype)

    def weight_steps(self, site: Component, model: HookedLM) -> list[WeightStep] | None:
        if not _unit_site(site) or self.scale.ndim != 1:
            return None
        return _columns_step(site, model, lambda w: w * self.scale.to(w.dtype), lambda w: w.float() @ _as_column(self.shift))

    def tensors(self) -> dict[str, Tensor]:
        return {"scale": self.scale, "shift": self.shift}
