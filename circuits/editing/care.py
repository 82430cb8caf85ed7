"""CARE neuron repair (seed 003): neurons ranked by interventional ACE, scales optimised by particle swarm,
and the accuracy-vs-fairness front by NSGA-III.

Seed 003 (a survey of causality-driven repair, § Mechanism 2) describes CARE (Sun et al. 2022,
"Causality-based Neural Network Repair", ICSE): localise the neurons with the largest average causal
effect on the failure, then optimise their weights with particle swarm optimisation (PSO; Kennedy &
Eberhart 1995) "while preserving overall accuracy"; and CCBR's NSGA-III (Deb & Jain 2014) for the
multi-objective version. Here:

1. **Localise**: candidates (e.g. the neurons of the atlas's flagged MLP layers) are ranked by
   :func:`circuits.probing.ace.average_causal_effect` on the pairs' gaps; the top ``k`` are repaired.
2. **Repair variables**: one output scale ``s_n ∈ bounds`` per repaired neuron (the ``neuron_repair``
   kind: ``W_out[:, n] · s_n``).
3. **Objectives** (on the build prompts): unfairness ``U(s)`` = mean ``|y_p|`` over pairs, ``y_p`` the
   pair's gap (metric units); error ``E(s)`` = 1 − accuracy on labelled prompts (label tokens'
   argmax at the last position).
4. **PSO** (``pymoo.algorithms.soo.nonconvex.pso.PSO``) minimises CARE's weighted fitness
   ``(1 − w) · U(s) / U(1) + w · E(s)`` (``w`` = ``accuracy_weight``; U normalised by the unrepaired
   model's so the two terms share a scale — our reading, the seed gives no formula). Its best particle is
   the edit.
5. **NSGA-III** (``pymoo.algorithms.moo.nsga3.NSGA3``, Das-Dennis reference directions) minimises
   ``(U, E)`` jointly; its non-dominated set is the accuracy-vs-fairness front, recorded with the edit.

From an atlas (:func:`care_edit`, the ``care`` recipe of :mod:`circuits.editing.recipes`, the driver of
``scripts/headline.py``'s CARE rows): ``max_pairs`` build pairs spread over the split; the candidates
are the neurons of the behaviour's flagged MLP layers with the largest attribution-patching effect on
them (an AtP screen, :func:`circuits.editing.build.select_components`); the labelled prompts are both
prompts of every pair, labelled with the pair's answer (:func:`circuits.editing.aifs.labelled_prompts`).

Both optimisers start from a population that contains the identity (every ``s_n = 1``), so the repair is
never worse than no repair on its own objective. ACE of the repaired neurons is measured before and
after (after: in the repaired model, over the repaired neuron's own value range, so a neuron scaled to 0
has ACE 0) and recorded in the edit's ``evaluation``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from circuits import model as M
from circuits.atlas.schema import Atlas
from circuits.editing.aifs import LabelledBatch, labelled_prompts, spread_pairs
from circuits.editing.apply import apply_edit
from circuits.editing.build import new_edit, select_components, suite_record
from circuits.editing.edit import Edit
from circuits.metrics import Metric, call_metric
from circuits.model import HookedLM
from circuits.probing.ace import average_causal_effect, rank_by_ace
from circuits.probing.effects import Effects
from circuits.probing.pairs import TokenGroup, prepare
from circuits.sites import NeuronRef, ResidRef
from circuits.suites import Suite


@dataclass(frozen=True)
class CareConfig:
    """Hyperparameters of the repair.

    Attributes:
        k: Neurons repaired (top ``k`` by ``|ACE|``).
        bounds: Range of each output scale.
        accuracy_weight: ``w`` of the PSO fitness.
        pop_size: Particles (PSO) and population (NSGA-III).
        generations: Iterations of each optimiser.
        n_partitions: Das-Dennis partitions of the NSGA-III reference directions (``None``: ``pop_size − 1``,
            one direction per individual).
        n_values: ACE intervention values per neuron.
        seed: Seed of both optimisers.
        progress: Show progress bars.
    """

    k: int = 4
    bounds: tuple[float, float] = (0.0, 1.5)
    accuracy_weight: float = 0.5
    pop_size: int = 10
    generations: int = 6
    n_partitions: int | None = None
    n_values: int = 5
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class CareResult:
    """A CARE repair.

    Attributes:
        edit: The ``neuron_repair`` edit (PSO's best scales), ACE before/after in ``edit.evaluation``.
        ace: ACE of every candidate on the unrepaired model.
        ace_after: ACE of the repaired neurons in the repaired model.
        front: ``[n, 2]`` NSGA-III non-dominated ``(unfairness, error)``.
        front_scales: ``[n, k]`` the scales of each front point.
    """

    edit: Edit
    ace: Effects
    ace_after: Effects
    front: np.ndarray
    front_scales: np.ndarray


class _Objectives:
    """``s → (U(s), E(s))``, running the blocks from the first repaired layer on cached residuals."""

    def __init__(self, model: HookedLM, groups: Sequence[TokenGroup], metric: Metric, labelled: Sequence[LabelledBatch], label_ids: Sequence[int], neurons: Sequence[NeuronRef]):
        self.model, self.groups, self.metric, self.neurons = model, list(groups), metric, list(neurons)
        self.labelled, self.ids = list(labelled), list(label_ids)
        self.start = min(n.layer for n in neurons)
        name = ResidRef(self.start, None).hook_name
        cache = lambda t: M.run_with_cache(model, t, [name])[1][name]  # noqa: E731
        self.pair_resid = [(cache(g.clean), cache(g.corrupted)) for g in self.groups]
        self.label_resid = [cache(b.tokens) for b in self.labelled]
        self.calls = 0

    def _hooks(self, scales: np.ndarray) -> list[tuple[str, M.HookFn]]:
        by_hook: dict[str, list[tuple[int, float]]] = {}
        for n, s in zip(self.neurons, scales.tolist()):
            by_hook.setdefault(n.hook_name, []).append((n.index, s))

        def make(items: list[tuple[int, float]]) -> M.HookFn:
            idx, sc = torch.tensor([i for i, _ in items]), torch.tensor([s for _, s in items])

            def hook(act: Tensor, hook: Any) -> Tensor:
                out = act.clone()
                out[..., idx] = act[..., idx] * sc.to(act.dtype)
                return out

            return hook

        return [(h, make(items)) for h, items in by_hook.items()]

    @torch.no_grad()
    def __call__(self, scales: np.ndarray) -> tuple[float, float]:
        self.calls += 1
        hooks, gaps, correct, total = self._hooks(np.asarray(scales, dtype=np.float64)), [], 0, 0
        for g, (rc, rx) in zip(self.groups, self.pair_resid):
            idx = torch.tensor(g.indices)
            a = call_metric(self.metric, M.run_from_layer(self.model, rc, self.start, hooks, last=1), idx)
            b = call_metric(self.metric, M.run_from_layer(self.model, rx, self.start, hooks, last=1), idx)
            gaps.append((a - b).abs().float())
        for batch, r in zip(self.labelled, self.label_resid):
            logits = M.run_from_layer(self.model, r, self.start, hooks, last=1, vocab=self.ids)[:, -1, self.ids]
            correct += int((logits.argmax(-1).cpu() == batch.labels).sum())
            total += len(batch.labels)
        return float(torch.cat(gaps).mean()), 1.0 - correct / max(total, 1)


def _initial(k: int, pop: int, bounds: tuple[float, float], seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(bounds[0], bounds[1], size=(pop, k))
    x[0] = np.clip(1.0, *bounds)  # the identity (no repair)
    return x


def _optimise(f: _Objectives, k: int, config: CareConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(PSO's best scales, NSGA-III front F, front X)``."""
    from pymoo.algorithms.moo.nsga3 import NSGA3
    from pymoo.algorithms.soo.nonconvex.pso import PSO
    from pymoo.core.problem import ElementwiseProblem
    from pymoo.optimize import minimize
    from pymoo.util.ref_dirs import get_reference_directions

    u0, _ = f(np.ones(k))
    w = config.accuracy_weight

    class Single(ElementwiseProblem):
        def __init__(self) -> None:
            super().__init__(n_var=k, n_obj=1, xl=config.bounds[0], xu=config.bounds[1])

        def _evaluate(self, x: np.ndarray, out: dict, *args: Any, **kwargs: Any) -> None:
            u, e = f(x)
            out["F"] = [(1 - w) * u / max(u0, 1e-12) + w * e]

    class Front(ElementwiseProblem):
        def __init__(self) -> None:
            super().__init__(n_var=k, n_obj=2, xl=config.bounds[0], xu=config.bounds[1])

        def _evaluate(self, x: np.ndarray, out: dict, *args: Any, **kwargs: Any) -> None:
            out["F"] = list(f(x))

    init = _initial(k, config.pop_size, config.bounds, config.seed)
    pso = minimize(Single(), PSO(pop_size=config.pop_size, sampling=init), ("n_gen", config.generations), seed=config.seed, verbose=False)
    ref = get_reference_directions("das-dennis", 2, n_partitions=config.n_partitions or config.pop_size - 1)
    nsga = minimize(Front(), NSGA3(ref_dirs=ref, pop_size=config.pop_size, sampling=init), ("n_gen", config.generations), seed=config.seed, verbose=False)
    return np.atleast_1d(pso.X).astype(np.float64), np.atleast_2d(nsga.F), np.atleast_2d(nsga.X)


def care_repair(
    model: HookedLM,
    groups: Sequence[TokenGroup],
    metric: Metric,
    candidates: Sequence[NeuronRef],
    labelled: Sequence[LabelledBatch],
    label_ids: Sequence[int],
    *,
    config: CareConfig = CareConfig(),
    suite: dict[str, str | int] | None = None,
) -> CareResult:
    """Rank ``candidates`` by ACE, repair the top ``k`` with PSO, and trace the front with NSGA-III.

    Args:
        model: The model (unchanged).
        groups: Build prompt pairs (the unfairness objective and the ACE).
        metric: The behaviour metric.
        candidates: Neurons to rank.
        labelled: Labelled prompts (the accuracy objective), class ``c`` ↔ ``label_ids[c]``.
        label_ids: Label tokens.
        config: Hyperparameters.
        suite: Provenance (recorded in the manifest).

    Returns:
        The :class:`CareResult`.

    Raises:
        ValueError: No candidates, pairs or labelled prompts, or ``k < 1``.
    """
    if config.k < 1 or not candidates or not labelled:
        raise ValueError("CARE needs k >= 1, candidate neurons and labelled prompts")
    t0 = time.perf_counter()
    ace = average_causal_effect(model, groups, metric, candidates, n_values=config.n_values, progress=config.progress)
    top = rank_by_ace(ace, min(config.k, len(candidates)))
    f = _Objectives(model, groups, metric, labelled, label_ids, top)
    u_before, e_before = f(np.ones(len(top)))
    best, front, front_x = _optimise(f, len(top), config)
    u_after, e_after = f(best)
    hp = {"k": len(top), "optimiser": "pso", "accuracy_weight": config.accuracy_weight, "scale_min": config.bounds[0], "scale_max": config.bounds[1],
          "pop_size": config.pop_size, "generations": config.generations, "seed": config.seed, "ranking": "average_causal_effect"}
    edit = new_edit("neuron_repair", tuple(top), {str(n): torch.tensor(float(s)) for n, s in zip(top, best)}, model, hp, suite, objective="care")
    with apply_edit(model, edit):
        ace_after = average_causal_effect(model, groups, metric, top, n_values=config.n_values, progress=config.progress)
    before = {str(c): float(v) for c, v in zip(ace.components, ace.mean_effects)}
    evaluation: dict[str, float | int | str] = {f"ace_before.{n}": before[str(n)] for n in top}
    evaluation |= {f"ace_after.{n}": float(v) for n, v in zip(top, ace_after.mean_effects)}
    evaluation |= {"unfairness_before": u_before, "unfairness_after": u_after, "accuracy_before": 1 - e_before, "accuracy_after": 1 - e_after,
                   "front_size": int(front.shape[0])}
    training = {"objective_evaluations": f.calls, "seconds": round(time.perf_counter() - t0, 2), "candidates": len(candidates)}
    edit = Edit(**{**edit.__dict__, "evaluation": evaluation, "training": training})
    return CareResult(edit, ace, ace_after, front, front_x)


def care_edit(
    model: HookedLM, atlas: Atlas, suite: Suite, behaviour: str, *, candidates: int = 24, max_pairs: int = 40, config: CareConfig = CareConfig()
) -> CareResult:
    """CARE from an atlas: AtP screens the flagged MLP layers' neurons, ACE ranks them, PSO repairs (module docstring).

    Args:
        model: The model the atlas was measured on (unchanged).
        atlas: The atlas.
        suite: The behaviour's suite (its build split).
        behaviour: Behaviour name in the atlas.
        candidates: Neurons kept by the attribution-patching screen, then ranked by ACE.
        max_pairs: Build pairs used (spread over the split).
        config: CARE's settings.

    Returns:
        The :class:`CareResult` (its ``edit``: objective ``care``, the pairs' provenance in ``suite``).

    Raises:
        EditError: Pairs without two answers (CARE's accuracy objective needs labels).
        AtlasError: The behaviour flags no MLP layer.
    """
    pairs = spread_pairs(suite.pairs("build"), max_pairs)
    data = labelled_prompts(model, pairs)
    prepared = prepare(model, pairs, suite.metric)
    screened = select_components(model, atlas, behaviour, k=candidates, granularity="neuron", groups=prepared.groups, metric=prepared.metric)
    return care_repair(
        model, prepared.groups, prepared.metric, screened, data.batches, data.label_ids, config=config, suite=suite_record(suite, "build", pairs)
    )
