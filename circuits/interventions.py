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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.model import HookedLM, WeightStep, has_weight, read_weight
from circuits.sites import Component, HeadRef, NeuronRef, ResidRef, output_columns, writers


class InterventionError(ValueError):
    """An intervention does not fit its site (wrong shape, no weight form)."""


class Intervention:
    """Base class: a hook form, optionally a weight form, and named tensors."""

    name: ClassVar[str] = "intervention"
    stochastic: ClassVar[bool] = False

    def __call__(self, base: Tensor, source: Tensor | None, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def weight_steps(self, site: Component, model: HookedLM) -> list[WeightStep] | None:
        """Weight changes computing the same function at ``site``, or ``None`` where there are none."""
        return None

    def tensors(self) -> dict[str, Tensor]:
        """The tensors this intervention carries (stored by edits, optimised by training)."""
        return {}


def _columns_step(site: Component, model: HookedLM, new: Callable[[Tensor], Tensor], bias: Callable[[Tensor], Tensor] | None) -> list[WeightStep]:
    """Rewrite the site's input columns of its output weight (and add ``bias(columns)`` to the output bias).

    The bias step comes first: it reads the columns before they change.
    """
    lin, cols = output_columns(site, model.shape)
    steps: list[WeightStep] = []
    if bias is not None:
        def add(b: Tensor | None) -> Tensor:
            w = read_weight(model, f"{lin}.weight")
            assert w is not None
            delta = bias(w[:, cols])
            return delta if b is None else b + delta.to(b.dtype)

        steps.append((f"{lin}.bias", add))

    def rewrite(w: Tensor | None) -> Tensor:
        assert w is not None
        out = w.clone()
        out[:, cols] = new(w[:, cols]).to(w.dtype)
        return out

    steps.append((f"{lin}.weight", rewrite))
    return steps


def _unit_site(site: Component) -> bool:
    return isinstance(site, (HeadRef, NeuronRef)) and site.pos is None and getattr(site, "act", "z") == "z"


def _as_column(value: Tensor) -> Tensor:
    """A head's ``[d_head]`` or a neuron's scalar value as a column vector for ``W[:, cols] @ value``."""
    return value.reshape(-1).to(torch.float32)


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


@dataclass(frozen=True)
class ProjectOut(Intervention):
    """Remove the component along a unit direction: ``x − (x · r̂) r̂`` (directional ablation).

    Weight form at a whole residual site: every weight that writes to the residual stream since the
    previous residual site (:func:`circuits.sites.writers`) is projected, ``W ← W − r̂ r̂ᵀ W`` (rows of
    embeddings, columns of ``W_O``/``W_out``, and their biases). Applied at every residual site, the
    two forms are the same function (Arditi et al. 2024's weight orthogonalization).

    Attributes:
        direction: ``[d_model]``, normalised on use.
    """

    direction: Float[Tensor, " d_model"] = field(repr=False)
    name: ClassVar[str] = "project_out"

    def unit(self) -> Tensor:
        """The direction normalised (float64), refusing a zero or non-finite vector."""
        r = self.direction.double()
        norm = r.norm()
        if not torch.isfinite(norm) or norm < 1e-6:
            raise InterventionError(f"direction has norm {float(norm):.3g}; it must be a nonzero finite vector")
        return r / norm

    def __call__(self, base: Tensor, source: Tensor | None, generator: torch.Generator | None) -> Tensor:
        r = self.unit().to(base.dtype).to(base.device)
        return base - (base @ r)[..., None] * r

    def weight_steps(self, site: Component, model: HookedLM) -> list[WeightStep] | None:
        if not (isinstance(site, ResidRef) and site.pos is None and model.arch.residual_writes_foldable()):
            return None
        r = self.unit()

        def project(name: str) -> Callable[[Tensor | None], Tensor]:
            def step(w: Tensor | None) -> Tensor:
                assert w is not None
                wd = w.double()
                if name.endswith("embed.weight"):  # rows are residual vectors
                    out = wd - (wd @ r)[:, None] * r[None, :]
                elif name.endswith(".bias"):
                    out = wd - (wd @ r) * r
                else:  # [d_model, in]: columns are residual vectors
                    out = wd - r[:, None] * (r @ wd)[None, :]
                return out.to(w.dtype)

            return step

        parallel = model.arch.is_parallel(model.core.config) if model.is_hf else False
        names = writers(site, model.shape, attn_only=not has_weight(model, "blocks.0.mlp.out.weight"), parallel=parallel)
        present = [n for n in names if n == "embed.weight" or has_weight(model, n)]
        if site.layer == 0 and site.site == "resid_pre" and has_weight(model, "pos_embed.weight"):
            present.append("pos_embed.weight")
        return [(n, project(n)) for n in present]

    def tensors(self) -> dict[str, Tensor]:
        return {"direction": self.direction}


@dataclass(frozen=True)
class LowRank(Intervention):
    """``W' = W + α B A`` on a named weight (``nn.Linear`` layout ``[out, in]``): weights only.

    Attributes:
        a: ``A`` ``[rank, in]``.
        b: ``B`` ``[out, rank]``.
        alpha: Scale.
    """

    a: Tensor = field(repr=False)
    b: Tensor = field(repr=False)
    alpha: float = 1.0
    name: ClassVar[str] = "low_rank"

    def __call__(self, base: Tensor, source: Tensor | None, generator: torch.Generator | None) -> Tensor:
        raise InterventionError("a low-rank weight edit has no activation (hook) form")

    def weight_step(self, weight: str, model: HookedLM) -> WeightStep:
        """The one weight step (``weight`` names the edited matrix).

        Raises:
            InterventionError: Factors that do not fit the weight.
        """
        w = read_weight(model, weight)
        a, b = self.a, self.b
        if w is None or a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1] or (b.shape[0], a.shape[1]) != tuple(w.shape):
            raise InterventionError(
                f"low-rank factors for {weight} have shapes A {tuple(a.shape)}, B {tuple(b.shape)}; weight is {None if w is None else tuple(w.shape)}"
            )
        return (weight, lambda w: w + (self.alpha * (b.double() @ a.double())).to(w.dtype))  # type: ignore[operator]

    def tensors(self) -> dict[str, Tensor]:
        return {"lora_A": self.a, "lora_B": self.b}


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


def rome_noise_std(embedding_matrix: Float[Tensor, "d_vocab d_model"], multiplier: float = 3.0) -> float:
    """ROME's noise level: ``multiplier`` × the standard deviation of token embeddings.

    Meng et al. 2022 corrupt subject embeddings with ``N(0, ν)``, ``ν = 3σ`` with σ the empirical
    standard deviation of embeddings.
    """
    return float(multiplier * embedding_matrix.float().std())


def apply_at(intervention: Intervention, act: Tensor, index: tuple[Any, ...], source: Tensor | None, generator: torch.Generator | None) -> Tensor:
    """The activation with ``intervention`` applied to the slice ``act[(slice(None), *index)]`` (a copy).

    Args:
        intervention: The intervention.
        act: The hooked activation ``[batch, ...]``.
        index: The site's index after the batch axis (:func:`circuits.sites.activation_index`).
        source: The counterfactual activation's slice (``[batch, *slice]``) or ``None``.
        generator: Seeded generator for stochastic interventions.

    Returns:
        A new activation tensor.
    """
    out = act.clone()
    where = (slice(None), *index)
    out[where] = intervention(act[where], source, generator)
    return out
