"""The intervention contract and the weight-form helpers every intervention shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from circuits.model import HookedLM, WeightStep, read_weight
from circuits.sites import Component, HeadRef, NeuronRef, output_columns


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


def apply_where(intervention: Intervention, act: Tensor, mask: Tensor, source: Tensor | None, generator: torch.Generator | None) -> Tensor:
    """The activation with ``intervention`` applied where ``mask`` is set (e.g. at a prompt's subject positions).

    Args:
        intervention: The intervention.
        act: The activation ``[batch, pos, ...]``.
        mask: ``[batch, pos]`` (or broadcastable) where to intervene.
        source: The counterfactual activation, same shape as ``act``, or ``None``.
        generator: Seeded generator for stochastic interventions (drawn over the whole ``act``).

    Returns:
        A new tensor: ``intervention(act, source)`` where ``mask``, ``act`` elsewhere.
    """
    m = mask.to(act.device).reshape(*mask.shape, *([1] * (act.ndim - mask.ndim)))
    return torch.where(m, intervention(act, source, generator), act)
