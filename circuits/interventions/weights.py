"""Interventions with a model-wide weight form: projecting a direction out, and low-rank and dense weight updates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.interventions.base import Intervention, InterventionError
from circuits.model import HookedLM, WeightStep, has_weight, read_weight
from circuits.sites import Component, ResidRef, writers


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
class WeightDelta(Intervention):
    """``W' = W + Δ`` on a named weight (``nn.Linear`` layout ``[out, in]``): a dense update, weights only.

    The unrestricted counterpart of :class:`LowRank`: the stored edit of full fine-tuning.

    Attributes:
        delta: ``Δ`` ``[out, in]``, the weight's shape.
    """

    delta: Tensor = field(repr=False)
    name: ClassVar[str] = "weight_delta"

    def __call__(self, base: Tensor, source: Tensor | None, generator: torch.Generator | None) -> Tensor:
        raise InterventionError("a dense weight delta has no activation (hook) form")

    def weight_step(self, weight: str, model: HookedLM) -> WeightStep:
        """The one weight step (``weight`` names the edited matrix).

        Raises:
            InterventionError: A delta whose shape is not the weight's.
        """
        w = read_weight(model, weight)
        d = self.delta
        if w is None or tuple(d.shape) != tuple(w.shape):
            raise InterventionError(f"weight delta for {weight} has shape {tuple(d.shape)}; weight is {None if w is None else tuple(w.shape)}")
        return (weight, lambda w: w + d.to(device=w.device, dtype=w.dtype))  # type: ignore[operator]

    def tensors(self) -> dict[str, Tensor]:
        return {"delta": self.delta}
