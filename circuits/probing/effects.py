"""One result type for every probing method: effects per component and prompt, with unit and method.

As auto-circuit's ``PruneScores``, every method — exact activation patching (any intervention,
denoising or noising), attribution patching, EAP-IG, gradient sensitivity, the spurious-sensitivity
label KL — returns an :class:`Effects`: a ``[component, prompt]`` tensor, the unit its numbers are in,
the unpatched baselines per prompt, and the :class:`Method` that produced it. Nothing changes meaning
with a flag: the unit says whether values are normalised effects, metric units, nats or gradient norms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jaxtyping import Float
from torch import Tensor

from circuits.sites import Component

Direction = Literal["denoising", "noising"]
#: What the numbers of an :class:`Effects` are.
#: ``normalised``: 0 = corrupted run, 1 = clean run (:func:`circuits.probing.patching.normalise`);
#: ``metric``: the behaviour metric's own units after the intervention; ``nats``: a KL divergence;
#: ``gradient_norm``: ``‖∂m/∂a‖₂``, metric units per activation unit.
Unit = Literal["normalised", "metric", "nats", "gradient_norm"]
MethodName = Literal["activation_patching", "attribution_patching", "eap_ig", "gradient_sensitivity", "spurious_sensitivity", "causal_tracing", "edge_attribution_patching", "edge_patching", "average_causal_effect"]  # edges: circuits.probing.graph.EdgeEffects


@dataclass(frozen=True)
class Method:
    """How effects were measured.

    Attributes:
        name: The method.
        intervention: What replaced each component's activation (``swap``, ``zero``, ``mean``, ...).
        direction: ``denoising`` (corrupted run ← intervention) or ``noising`` (clean run ← intervention).
        ig_steps: Interpolation steps (attribution methods).
        seed: Seed of stochastic interventions.
    """

    name: MethodName
    intervention: str = "swap"
    direction: Direction = "denoising"
    ig_steps: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class Effects:
    """Effects of each component on each prompt, from one method.

    Attributes:
        components: The components, in the order of the rows.
        effects: ``[component, prompt]`` values in ``unit``.
        unit: What the values are (see :data:`Unit`).
        clean_metric: The behaviour metric on each clean prompt (metric units).
        corrupted_metric: The behaviour metric on each corrupted prompt.
        method: How they were measured.
        patched: For exact methods, the metric after each intervention (metric units), else ``None``.
    """

    components: tuple[Component, ...]
    effects: Float[Tensor, "component prompt"]
    unit: Unit
    clean_metric: Float[Tensor, " prompt"]
    corrupted_metric: Float[Tensor, " prompt"]
    method: Method
    patched: Float[Tensor, "component prompt"] | None = None

    @property
    def mean_effects(self) -> Float[Tensor, " component"]:
        """Mean over prompts."""
        return self.effects.mean(dim=1)

    @property
    def normalised(self) -> bool:
        """Whether values are normalised effects (0 = corrupted, 1 = clean)."""
        return self.unit == "normalised"

    @property
    def direction(self) -> Direction:
        """The method's direction."""
        return self.method.direction

    @property
    def intervention(self) -> str:
        """The method's intervention name."""
        return self.method.intervention
