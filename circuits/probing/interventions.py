"""Interventions: what to put in place of a component's activation.

Each intervention is a small frozen class with one contract (after pyvene's ``Intervention``):
``intervention(base, source, generator) -> new`` where ``base`` is the component's slice of the running
activation (``[batch, ...]``), ``source`` the same slice from the counterfactual run (clean run when
denoising, corrupted run when noising), and ``generator`` a seeded ``torch.Generator`` for the
stochastic ones. The patching engine (:mod:`circuits.probing.patching`) slices, calls, and writes back.

* :class:`Swap` — activation patching proper: take the counterfactual activation (Meng et al. 2022;
  Heimersheim & Nanda 2024).
* :class:`Zero` — zero ablation (Olsson et al. 2022).
* :class:`Mean` — mean ablation over a reference set (Wang et al. 2023).
* :class:`Resample` — resample ablation: the activation of another prompt in the batch (Chan et al.
  2022, causal scrubbing).
* :class:`GaussianNoise` — add seeded Gaussian noise (ROME's corruption, Meng et al. 2022, uses 3× the
  embedding standard deviation; see :func:`rome_noise_std`).
* :class:`Scale` — multiply by α.
* :class:`Add` — add a vector (steering / activation addition, Turner et al. 2023; Rimsky et al. 2024).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from jaxtyping import Float
from torch import Tensor


class Intervention(Protocol):
    """``(base, source, generator) -> new activation slice`` (same shape as ``base``)."""

    name: str

    def __call__(self, base: Tensor, source: Tensor, generator: torch.Generator) -> Tensor: ...


@dataclass(frozen=True)
class Swap:
    """Replace with the counterfactual run's activation (denoising or noising)."""

    name: str = "swap"

    def __call__(self, base: Tensor, source: Tensor, generator: torch.Generator) -> Tensor:
        return source


@dataclass(frozen=True)
class Zero:
    """Zero ablation."""

    name: str = "zero"

    def __call__(self, base: Tensor, source: Tensor, generator: torch.Generator) -> Tensor:
        return torch.zeros_like(base)


@dataclass(frozen=True)
class Mean:
    """Mean ablation: replace with a reference mean.

    Attributes:
        means: ``{hook_name: mean activation without the batch axis}`` (e.g. ``[pos, head, d_head]`` for
            ``hook_z``), from :func:`circuits.probing.patching.mean_activations`. The engine passes the
            component's slice of it as ``source``; see :meth:`reference`.
        over_positions: The means are also averaged over positions (no position axis).
    """

    means: dict[str, Tensor] = field(repr=False)
    over_positions: bool = False
    name: str = "mean"

    def reference(self, hook: str, index: tuple[Any, ...]) -> Tensor:
        """The component's slice of the reference mean (no batch axis).

        With ``over_positions`` the means have no position axis either (one mean for every position,
        so prompts of any length can share them) and the component's position index is dropped.
        """
        if hook not in self.means:
            raise KeyError(f"mean ablation has no reference mean for {hook}")
        return self.means[hook][index[1:] if self.over_positions else index]

    def __call__(self, base: Tensor, source: Tensor, generator: torch.Generator) -> Tensor:
        return source.expand_as(base)


@dataclass(frozen=True)
class Resample:
    """Resample ablation: each prompt gets the activation of another prompt of the same run.

    The permutation is a seeded random derangement (no prompt keeps its own activation) when the
    batch has at least 2 prompts.
    """

    name: str = "resample"

    def __call__(self, base: Tensor, source: Tensor, generator: torch.Generator) -> Tensor:
        b = base.shape[0]
        if b < 2:
            return base
        shift = int(torch.randint(1, b, (1,), generator=generator))
        order = torch.randperm(b, generator=generator)
        # Derangement: a random cyclic order, each prompt takes the one `shift` places before it.
        target = torch.empty(b, dtype=torch.long)
        target[order] = order.roll(shift)
        return base[target]


@dataclass(frozen=True)
class GaussianNoise:
    """Add ``std · N(0, 1)`` noise, seeded."""

    std: float
    name: str = "noise"

    def __call__(self, base: Tensor, source: Tensor, generator: torch.Generator) -> Tensor:
        noise = torch.randn(base.shape, generator=generator, dtype=base.dtype)
        return base + self.std * noise


@dataclass(frozen=True)
class Scale:
    """Multiply by ``alpha`` (``alpha=0`` is zero ablation, ``alpha=1`` is no-op)."""

    alpha: float
    name: str = "scale"

    def __call__(self, base: Tensor, source: Tensor, generator: torch.Generator) -> Tensor:
        return base * self.alpha


@dataclass(frozen=True)
class Add:
    """Add a vector (steering): ``base + coefficient · vector``, broadcast over leading axes.

    Attributes:
        vector: ``Float[Tensor, "d"]`` matching the component's last axis.
        coefficient: Multiplier.
    """

    vector: Float[Tensor, " d"] = field(repr=False)
    coefficient: float = 1.0
    name: str = "add"

    def __call__(self, base: Tensor, source: Tensor, generator: torch.Generator) -> Tensor:
        if self.vector.shape[-1] != base.shape[-1]:
            raise ValueError(f"steering vector has width {self.vector.shape[-1]}, activation has {base.shape[-1]}")
        return base + self.coefficient * self.vector.to(base.dtype)


def rome_noise_std(embedding_matrix: Float[Tensor, "d_vocab d_model"], multiplier: float = 3.0) -> float:
    """ROME's noise level: ``multiplier`` × the standard deviation of token embeddings.

    Meng et al. 2022 corrupt subject embeddings with ``N(0, ν)``, ``ν = 3σ`` with σ the empirical
    standard deviation of embeddings.
    """
    return float(multiplier * embedding_matrix.float().std())
