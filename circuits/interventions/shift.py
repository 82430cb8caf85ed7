"""Interventions that move a site's activation: Gaussian noise, scaling, adding a vector."""

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
from circuits.model import HookedLM, WeightStep, has_weight
from circuits.sites import Component, ResidRef


@dataclass(frozen=True)
class GaussianNoise(Intervention):
    """Add ``std · N(0, 1)`` noise, seeded."""

    std: float
    name: ClassVar[str] = "noise"
    stochastic: ClassVar[bool] = True

    def __call__(self, base: Tensor, source: Tensor | None, generator: torch.Generator | None) -> Tensor:
        noise = torch.randn(base.shape, generator=generator, dtype=base.dtype)
        return base + self.std * noise.to(base.device)


@dataclass(frozen=True)
class Scale(Intervention):
    """Multiply by ``alpha`` (0 is zero ablation, 1 a no-op). Weight form: output columns × alpha.

    Attributes:
        alpha: A number, or a scalar tensor (trainable: CARE-style neuron repair).
    """

    alpha: float | Tensor
    name: ClassVar[str] = "scale"

    def __call__(self, base: Tensor, source: Tensor | None, generator: torch.Generator | None) -> Tensor:
        a = self.alpha.to(base.dtype) if isinstance(self.alpha, Tensor) else self.alpha
        return base * a

    def weight_steps(self, site: Component, model: HookedLM) -> list[WeightStep] | None:
        if not _unit_site(site):
            return None
        return _columns_step(site, model, lambda w: w * (self.alpha.to(w.dtype) if isinstance(self.alpha, Tensor) else self.alpha), None)

    def tensors(self) -> dict[str, Tensor]:
        return {"alpha": self.alpha} if isinstance(self.alpha, Tensor) else {}


@dataclass(frozen=True)
class Add(Intervention):
    """Add ``coefficient · vector``, broadcast over leading axes (an offset, or a steering vector).

    Weight form: on a head or neuron, ``W[:, cols] · vector`` added to the output bias; on a whole
    ``resid_pre`` site, the vector added to the bias of the writer just before it (layer ``L−1``'s MLP
    output, or attention output in attention-only models) or to every embedding row at layer 0. Only
    where sublayer outputs reach the residual stream unnormalised (not Gemma 2/3 or OLMo 2).

    Attributes:
        vector: ``[d]`` matching the slice's last axis (``d_head``, ``()`` for a neuron, ``d_model``).
        coefficient: Multiplier.
    """

    vector: Float[Tensor, "..."] = field(repr=False)
    coefficient: float = 1.0
    name: ClassVar[str] = "add"

    def __call__(self, base: Tensor, source: Tensor | None, generator: torch.Generator | None) -> Tensor:
        if self.vector.ndim and self.vector.shape[-1] != base.shape[-1]:
            raise InterventionError(f"vector has width {self.vector.shape[-1]}, activation has {base.shape[-1]}")
        return base + self.coefficient * self.vector.to(base.dtype)

    def weight_steps(self, site: Component, model: HookedLM) -> list[WeightStep] | None:
        if _unit_site(site):
            return _columns_step(site, model, lambda w: w, lambda w: w.float() @ (self.coefficient * _as_column(self.vector)))
        if not (isinstance(site, ResidRef) and site.site == "resid_pre" and site.pos is None and model.arch.residual_writes_foldable()):
            return None
        v = self.coefficient * self.vector.float()
        if site.layer == 0:
            return [("embed.weight", lambda w: w + v.to(w.dtype))]  # type: ignore[operator]
        attn_only = not has_weight(model, "blocks.0.mlp.out.weight")
        lin = f"blocks.{site.layer - 1}.{'attn.o' if attn_only else 'mlp.out'}"
        return [(f"{lin}.bias", lambda b: v.to(torch.float32) if b is None else b + v.to(b.dtype))]

    def tensors(self) -> dict[str, Tensor]:
        return {"vector": self.vector}


