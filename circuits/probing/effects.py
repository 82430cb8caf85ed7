"""One result type for every probing method: effects per component (node or edge) and prompt, with unit and method.

As auto-circuit's ``PruneScores``, every method returns an :class:`Effects`: a ``[component, prompt]``
tensor over any kind of component id — nodes (:mod:`circuits.sites`: ``L9H6``, ``L7MLP``,
``L3RESID_POST@4``), edges (:class:`circuits.probing.graph.Edge`: ``L0H1->L1H2.k``) or the cells of a
causal-tracing grid (a residual, MLP or attention site at one position) — the unit its numbers are
in, the :class:`Method` that produced it (with its intervention, direction, noise level, window and
seeds), and, where the method has them, the unintervened metric per prompt, the raw metric after each
intervention, per-seed values of a stochastic method and per-component scores derived from the
effects. Nothing changes meaning with a flag, and nothing is filled in where a method has no value:
a field the method does not measure is ``None``.

Methods: exact activation patching (any intervention, denoising or noising), attribution patching,
EAP-IG, gradient sensitivity, edge attribution and exact edge patching, ROME causal tracing (one
prompt, or averaged over facts), head/neuron noise-restoration tracing (seed 004), the interventional
ACE of neurons (CARE), and the spurious-sensitivity scores of seeds 000/001 (nats).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, Literal, TypeVar

import torch
from jaxtyping import Float
from torch import Tensor

Direction = Literal["denoising", "noising"]
#: What the numbers of an :class:`Effects` are. ``normalised``: 0 = corrupted run, 1 = clean run
#: (:func:`circuits.probing.patching.normalise`); ``gradient_norm``: ``‖∂m/∂a‖₂``, metric units per
#: activation unit; otherwise the metric's own unit (:attr:`circuits.metrics.MetricInfo.unit`:
#: ``logits``, ``nats``, ``probability``, ``L2(prob)``, ``metric``).
Unit = str
MethodName = Literal[
    "activation_patching", "attribution_patching", "eap_ig", "gradient_sensitivity", "spurious_sensitivity", "causal_tracing",
    "edge_attribution_patching", "edge_patching", "average_causal_effect",
]
#: A component id: a node (:mod:`circuits.sites`), an edge, or a tracing cell — anything hashable with a string form.
C = TypeVar("C", bound=Hashable)


@dataclass(frozen=True)
class Method:
    """How effects were measured.

    Attributes:
        name: The method.
        intervention: What replaced each component's activation (``swap``, ``zero``, ``mean``,
            ``noise``, ``do``, ...).
        direction: ``denoising`` (intervene in the corrupted run) or ``noising`` (in the clean run).
        metric: The metric's name and unit (``"logit_diff (logits)"``).
        ig_steps: Interpolation steps (attribution methods).
        seeds: Seeds of stochastic interventions (the first is the one a single run used).
        noise_std: The Gaussian noise level of noise-based methods.
        window: Layers restored per cell (causal tracing of MLP / attention outputs).
        severed: Causal tracing with the MLP paths severed (ROME Figure 3).
        positions: Where a restoration acted (``"subject"``, ``"all"``), where that is a choice.
    """

    name: MethodName
    intervention: str = "swap"
    direction: Direction = "denoising"
    metric: str = ""
    ig_steps: int | None = None
    seeds: tuple[int, ...] = (0,)
    noise_std: float | None = None
    window: int | None = None
    severed: bool = False
    positions: str | None = None

    @property
    def seed(self) -> int:
        """The (first) seed."""
        return self.seeds[0]


@dataclass(frozen=True)
class Effects(Generic[C]):
    """Effects of each component on each prompt, from one method.

    Attributes:
        components: The component ids, in the order of the rows (nodes, edges or tracing cells).
        effects: ``[component, prompt]`` values in ``unit`` (for stochastic methods, the mean over seeds).
        unit: What the values are (see :data:`Unit`).
        method: How they were measured.
        clean_metric: The behaviour metric on each clean prompt, where the method runs one.
        corrupted_metric: The metric on each corrupted (or noised) prompt, where it runs one.
        patched: The metric after each intervention (metric units), for exact methods.
        per_seed: ``[seed, component, prompt]`` for methods run with several seeds.
        scores: Per-component scores derived from the effects (e.g. SSS, IDS, R), by name.
        graph: For edges, the graph they belong to (:class:`circuits.probing.graph.Graph`).
    """

    components: tuple[C, ...]
    effects: Float[Tensor, "component prompt"]
    unit: Unit
    method: Method
    clean_metric: Float[Tensor, " prompt"] | None = None
    corrupted_metric: Float[Tensor, " prompt"] | None = None
    patched: Float[Tensor, "component prompt"] | None = None
    per_seed: Float[Tensor, "seed component prompt"] | None = None
    scores: Mapping[str, Float[Tensor, " component"]] = field(default_factory=dict)
    graph: object | None = None

    def __post_init__(self) -> None:
        """Check that the rows match the components.

        Raises:
            ValueError: ``effects`` (or ``patched``/``per_seed``/a score) does not have one row per component.
        """
        n = len(self.components)
        if self.effects.ndim != 2 or self.effects.shape[0] != n:
            raise ValueError(f"effects must be [component, prompt] with {n} rows, got {tuple(self.effects.shape)}")
        for name, t in (("patched", self.patched), ("per_seed", None if self.per_seed is None else self.per_seed[0])):
            if t is not None and t.shape != self.effects.shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, effects {tuple(self.effects.shape)}")
        for name, v in self.scores.items():
            if v.shape != (n,):
                raise ValueError(f"score {name!r} has shape {tuple(v.shape)}, expected ({n},)")

    @property
    def n_prompts(self) -> int:
        """Prompts (columns)."""
        return int(self.effects.shape[1])

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

    def top(self, n: int, *, absolute: bool = True) -> list[tuple[C, float]]:
        """The ``n`` components with the largest mean effect (by magnitude unless ``absolute=False``)."""
        m = self.mean_effects
        order = (m.abs() if absolute else m).argsort(descending=True)[:n].tolist()
        return [(self.components[i], float(m[i])) for i in order]

    def select(self, components: Sequence[C]) -> Effects[C]:
        """The rows of ``components`` only, in that order.

        Raises:
            KeyError: A component not measured here.
        """
        where = {c: i for i, c in enumerate(self.components)}
        missing = [str(c) for c in components if c not in where]
        if missing:
            raise KeyError(f"not measured here: {missing[:5]}")
        idx = torch.tensor([where[c] for c in components], dtype=torch.long)
        return replace(
            self, components=tuple(components), effects=self.effects[idx], patched=None if self.patched is None else self.patched[idx],
            per_seed=None if self.per_seed is None else self.per_seed[:, idx], scores={k: v[idx] for k, v in self.scores.items()},
        )
