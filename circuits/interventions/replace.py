"""Interventions that replace a site's activation: swap, zero, mean (and per-site means), resample."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from circuits.interventions.base import (
    Intervention,
    InterventionError,
    _as_column,
    _columns_step,
    _unit_site,
)
from circuits.model import HookedLM, WeightStep
from circuits.sites import Component, HeadRef


@dataclass(frozen=True)
class Swap(Intervention):
    """Replace with the counterfactual run's activation (denoising or noising)."""

    name: ClassVar[str] = "swap"

    def __call__(self, base: Tensor, source: Tensor | None, generator: torch.Generator | None) -> Tensor:
        if source is None:
            raise InterventionError("a swap needs a counterfactual run's activation")
        return source


@dataclass(frozen=True)
class Zero(Intervention):
    """Zero ablation. Weight form: the site's output columns set to zero."""

    name: ClassVar[str] = "zero"

    def __call__(self, base: Tensor, source: Tensor | None, generator: torch.Generator | None) -> Tensor:
        return torch.zeros_like(base)

    def weight_steps(self, site: Component, model: HookedLM) -> list[WeightStep] | None:
        return _columns_step(site, model, torch.zeros_like, None) if _unit_site(site) else None


@dataclass(frozen=True)
class Mean(Intervention):
    """Mean ablation: replace with a fixed reference value.

    Weight form (a whole head or neuron, one value for every position): the output columns are zeroed
    and their constant contribution ``W[:, cols] · value`` is folded into the output bias.

    Attributes:
        value: The site's slice without the batch axis (e.g. ``[d_head]``, or ``[pos, d_head]`` for
            per-position means); broadcast over the batch.
    """

    value: Tensor = field(repr=False)
    name: ClassVar[str] = "mean"

    def __call__(self, base: Tensor, source: Tensor | None, generator: torch.Generator | None) -> Tensor:
        return self.value.to(base.dtype).expand_as(base)

    def weight_steps(self, site: Component, model: HookedLM) -> list[WeightStep] | None:
        if not _unit_site(site) or self.value.ndim > (1 if isinstance(site, HeadRef) else 0):
            return None
        return _columns_step(site, model, torch.zeros_like, lambda w: w.float() @ _as_column(self.value))

    def tensors(self) -> dict[str, Tensor]:
        return {"value": self.value}


@dataclass(frozen=True)
class Resample(Intervention):
    """Resample ablation: each prompt gets the activation of a reference prompt (one draw per forward).

    With a ``bank`` (``[n, *slice]``, reference activations of a reference set) each prompt draws one
    row; without, each prompt takes another prompt's activation from the same batch (a seeded random
    derangement; the prompt keeps its own when the batch has one prompt). The draw is the same at every
    position of a prompt. No weight form: the value is random at every forward.
    """

    bank: Tensor | None = field(default=None, repr=False)
    name: ClassVar[str] = "resample"
    stochastic: ClassVar[bool] = True

    def __call__(self, base: Tensor, source: Tensor | None, generator: torch.Generator | None) -> Tensor:
        b = base.shape[0]
        if self.bank is not None:
            rows = torch.randint(self.bank.shape[0], (b,), generator=generator)
            drawn = self.bank[rows].to(base.dtype)
            return drawn.reshape(b, *([1] * (base.ndim - drawn.ndim)), *drawn.shape[1:]).expand_as(base)
        if b < 2:
            return base
        shift = int(torch.randint(1, b, (1,), generator=generator))
        order = torch.randperm(b, generator=generator)
        target = torch.empty(b, dtype=torch.long)
        target[order] = order.roll(shift)  # a random cyclic order: prompt i takes the one `shift` before it
        return base[target.to(base.device)]

    def tensors(self) -> dict[str, Tensor]:
        return {} if self.bank is None else {"bank": self.bank}


@dataclass(frozen=True)
class MeanOf:
    """Mean ablation of many sites from per-hook reference means: :meth:`at` gives each site's :class:`Mean`.

    What a sweep passes to the patching engine to mean-ablate every component in turn.

    Attributes:
        means: ``{hook_name: mean activation without the batch axis}`` (e.g. ``[pos, head, d_head]``
            for ``hook_z``), from :func:`circuits.probing.patching.mean_activations`.
        over_positions: The means are also averaged over positions (no position axis), so prompts of
            any length can share them (:func:`circuits.probing.patching.position_mean_activations`).
    """

    means: dict[str, Tensor] = field(repr=False)
    over_positions: bool = False
    name: ClassVar[str] = "mean"
    stochastic: ClassVar[bool] = False

    def at(self, hook: str, index: tuple[Any, ...]) -> Mean:
        """The :class:`Mean` of the site at ``index`` (after the batch axis) of ``hook``.

        Raises:
            InterventionError: No mean for ``hook``.
        """
        if hook not in self.means:
            raise InterventionError(f"mean ablation has no reference mean for {hook}")
        return Mean(self.means[hook][index[1:] if self.over_positions else index])

    def tensors(self) -> dict[str, Tensor]:
        """The reference means, by hook name."""
        return dict(self.means)


#: What the patching engine applies to every component of a sweep: one intervention, or a family that
#: gives each site its own (:class:`MeanOf`).
SweepIntervention = Intervention | MeanOf


def at_site(intervention: SweepIntervention, hook: str, index: tuple[Any, ...]) -> Intervention:
    """The intervention a sweep applies at one site."""
    return intervention.at(hook, index) if isinstance(intervention, MeanOf) else intervention


