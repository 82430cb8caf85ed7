"""Interventional average causal effect (ACE) of MLP neurons — the localisation step of CARE (seed 003).

CARE (Sun et al. 2022, "Causality-based Neural Network Repair", ICSE; surveyed in seed
003_62b44637ff78707b, § Mechanism 2) ranks hidden neurons by their average causal effect on the
property being repaired, measured by intervening, not by gradients. Following the ACE of Chattopadhyay et
al. 2019 ("Neural network attributions: a causal perspective", eq. 3), the effect of setting neuron ``n``
to ``α`` is ``E_x[y | do(n = α)] − E_α'[E_x[y | do(n = α')]]``, the baseline being the interventional
mean over the neuron's value range.

Here ``y`` is the pair's gap ``y_p = m(clean_p) − m(corrupted_p)`` (the behaviour metric's change under the
counterfactual word: for a spurious or biased behaviour, the unfairness of pair ``p``), and the
intervention ``do(n = α)`` sets the neuron's ``hook_post`` to ``α`` at every position in both runs.
``α`` runs over ``n_values`` evenly spaced values between the ``quantiles`` of the neuron's observed
values on these prompts. The effect of pair ``p`` is

    ACE_p(n) = y_p − (1 / |A|) Σ_{α ∈ A} y_p(do(n = α)),

the pair's observed gap minus its interventional baseline: how much of the gap the neuron's actual
values cause. Its mean over pairs is the neuron's ACE; the ranking is by ``|mean|``. Each ``(neuron,
α)`` costs one forward of the blocks from the neuron's layer on (:func:`circuits.model.run_from_layer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from circuits import model as M
from circuits.interventions import Mean, apply_at
from circuits.metrics import Metric, MetricLike, as_metric, call_metric
from circuits.model import HookedLM
from circuits.probing.effects import Effects, Method
from circuits.probing.pairs import TokenGroup
from circuits.sites import NeuronRef, ResidRef, activation_index


def ace_from_interventions(observed: Float[Tensor, " prompt"], under_do: Float[Tensor, "value prompt"]) -> Float[Tensor, " prompt"]:
    """``ACE_p = y_p − mean_α y_p(do(n = α))`` per prompt (module docstring)."""
    return observed - under_do.mean(0)


def _set(neuron: NeuronRef, value: float, shape: M.ModelShape) -> M.HookFn:
    """``do(n = value)``: :class:`~circuits.interventions.Mean` with a fixed value at the neuron, every position."""
    index = activation_index(NeuronRef(neuron.layer, neuron.index), shape.n_heads, shape.n_kv_heads)

    def hook(act: Tensor, hook: Any) -> Tensor:
        return apply_at(Mean(torch.tensor(value)), act, index, None, None)

    return hook


def _gap(model: HookedLM, group: TokenGroup, resid: tuple[Tensor, Tensor], start: int, metric: Metric, hooks: list[tuple[str, M.HookFn]]) -> Tensor:
    idx = torch.tensor(group.indices)
    clean = call_metric(metric, M.run_from_layer(model, resid[0], start, hooks, last=1), idx)
    corr = call_metric(metric, M.run_from_layer(model, resid[1], start, hooks, last=1), idx)
    return (clean - corr).float().cpu()


@torch.no_grad()
def neuron_values(model: HookedLM, groups: Sequence[TokenGroup], neurons: Sequence[NeuronRef]) -> dict[NeuronRef, Tensor]:
    """Every observed value of each neuron (all positions of the clean and corrupted prompts)."""
    names = sorted({n.hook_name for n in neurons})
    acts: dict[str, list[Tensor]] = {h: [] for h in names}
    for g in groups:
        for toks in (g.clean, g.corrupted):
            _, cache = M.run_with_cache(model, toks, names)
            for h in names:
                acts[h].append(cache[h].reshape(-1, cache[h].shape[-1]).float())
    cat = {h: torch.cat(v) for h, v in acts.items()}
    return {n: cat[n.hook_name][:, n.index] for n in neurons}


@torch.no_grad()
def average_causal_effect(
    model: HookedLM,
    groups: Sequence[TokenGroup],
    metric: MetricLike,
    neurons: Sequence[NeuronRef],
    *,
    n_values: int = 5,
    quantiles: tuple[float, float] = (0.05, 0.95),
    progress: bool = True,
) -> Effects:
    """Interventional ACE of each neuron on each pair's gap (module docstring).

    Args:
        model: The model.
        groups: Prompt pairs (clean/corrupted), grouped by length.
        metric: The behaviour metric (logits → one value per row).
        neurons: Neurons (whole: ``pos`` is ignored; the intervention acts at every position).
        n_values: Intervention values per neuron.
        quantiles: The range of values, as quantiles of the neuron's observed values.
        progress: Show a progress bar.

    Returns:
        :class:`Effects` with ``effects[n, p] = ACE_p(n)`` (the metric's unit), ``patched[n, p]`` the
        interventional baseline ``mean_α y_p(do(n = α))``, method ``average_causal_effect``.

    Raises:
        ValueError: No groups or neurons, or ``n_values < 2``.
    """
    if not groups or not neurons:
        raise ValueError("ACE needs prompt pairs and neurons")
    metric = as_metric(metric)
    if n_values < 2:
        raise ValueError(f"n_values must be >= 2, got {n_values}")
    n_prompts = 1 + max(i for g in groups for i in g.indices)
    start = min(n.layer for n in neurons)
    resid_name = ResidRef(start, None).hook_name
    resid = []
    clean_m, corr_m = torch.zeros(n_prompts), torch.zeros(n_prompts)
    for g in groups:
        idx = torch.tensor(g.indices)
        lc, cc = M.run_with_cache(model, g.clean, [resid_name])
        lx, cx = M.run_with_cache(model, g.corrupted, [resid_name])
        clean_m[idx], corr_m[idx] = call_metric(metric, lc, idx).float().cpu(), call_metric(metric, lx, idx).float().cpu()
        resid.append((cc[resid_name], cx[resid_name]))
    observed = clean_m - corr_m
    values = neuron_values(model, groups, neurons)
    patched = torch.zeros(len(neurons), n_prompts)
    for i, n in enumerate(tqdm(neurons, desc="ACE", disable=not progress, leave=False)):
        lo, hi = torch.quantile(values[n], torch.tensor(quantiles)).tolist()
        under = torch.zeros(n_values, n_prompts)
        for j, a in enumerate(torch.linspace(lo, hi, n_values).tolist()):
            hooks = [(n.hook_name, _set(n, a, M.shape_of(model)))]
            for g, r in zip(groups, resid):
                under[j, torch.tensor(g.indices)] = _gap(model, g, r, start, metric, hooks)
        patched[i] = under.mean(0)
    effects = torch.stack([ace_from_interventions(observed, patched[i : i + 1]) for i in range(len(neurons))])
    return Effects(
        components=tuple(NeuronRef(n.layer, n.index) for n in neurons), effects=effects, unit=metric.info.unit,
        method=Method("average_causal_effect", intervention="do", metric=metric.info.describe()), clean_metric=clean_m, corrupted_metric=corr_m,
        patched=patched,
    )


def rank_by_ace(effects: Effects, k: int) -> list[NeuronRef]:
    """The ``k`` neurons with the largest ``|mean ACE|``, strongest first."""
    order = effects.mean_effects.abs().argsort(descending=True)[:k].tolist()
    return [effects.components[i] for i in order]  # type: ignore[misc]
