"""The measurements behind the ICP scores: SSS's two KL terms, IDS's masked-input L2, and the
reliability grid of causal effects (interventions × metrics × data sets).

The formulas and every interpretation are in :mod:`circuits.probing.scores` (seeds 000 and 001); this
module runs them with the patching engine (:func:`circuits.probing.patching.patch_groups`):

* ``KL(f(x) ‖ f(x | h = 0))``: *noising* with :class:`~circuits.interventions.Zero`, metric
  :class:`~circuits.metrics.KLToReference` against the clean run's full next-token distribution;
* ``KL(f(x') ‖ f(x' | h ← h(x)))``: *denoising* with :class:`~circuits.interventions.Swap` (the
  corrupted run is the base), against the corrupted run's distribution;
* ``‖f(x) − f(x | h ← h(mask(x)))‖₂``: the masked input zeroes the token embeddings where ``x`` and
  ``x'`` differ (the domain-specific tokens); its activations are swapped into the clean run one
  component at a time, packed along the batch as the engine does (:func:`masked_l2`);
* ``CE_{I,m,X}(h) = mean_x m(f(x)) − m(f(x | do_I(h)))`` for ``I`` ∈ masking (zero), scaling (``α``,
  ``0 < α < 1`` by default 0.5, its own setting), swapping (noising with ``h(x')``): :func:`reliability_grid`.

:func:`icp_scores` is the one entry point the scan, notebook 05, the ICP loop and the seeds script use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuits import model as M
from circuits.interventions import Scale, Swap, SweepIntervention, Zero, apply_where
from circuits.metrics import (
    KLToReference,
    Metric,
    ProbL2ToReference,
    call_metric,
    kl_divergence,
)
from circuits.model import HookedLM
from circuits.probing import scores as S
from circuits.probing.effects import Effects, Method
from circuits.probing.executor import Executor
from circuits.probing.patching import (
    TokenGroup,
    patch_from_source,
    patch_groups,
    sweep_cache_names,
)
from circuits.sites import EMBED_HOOK, Component


@torch.no_grad()
def last_logprobs(model: HookedLM, groups: Sequence[TokenGroup], side: str = "clean") -> Float[Tensor, "prompt d_vocab"]:
    """Full next-token log-probabilities at the last position of every prompt, in pair order."""
    n = sum(len(g.indices) for g in groups)
    out: Tensor | None = None
    for g in groups:
        lp = M.run(model, getattr(g, side))[:, -1].float().log_softmax(-1).cpu()
        if out is None:
            out = torch.zeros(n, lp.shape[-1])
        out[torch.tensor(g.indices)] = lp
    assert out is not None
    return out


def behaviour_kl(model: HookedLM, groups: Sequence[TokenGroup]) -> Float[Tensor, " prompt"]:
    """Per-prompt symmetric ``KL(f(x) ‖ f(x')) + KL(f(x') ‖ f(x))`` of the next-token distributions (nats).

    The size of a spurious behaviour: how far the counterfactual word moves the whole prediction.
    """
    p, q = last_logprobs(model, groups, "clean"), last_logprobs(model, groups, "corrupted")
    return kl_divergence(p, q) + kl_divergence(q, p)


def _embedding_mask_hook(mask: Tensor) -> M.HookFn:
    def hook(e: Tensor, hook: Any) -> Tensor:
        return apply_where(Zero(), e, mask, None, None)

    return hook


@torch.no_grad()
def masked_l2(
    model: HookedLM, groups: Sequence[TokenGroup], components: Sequence[Component], *, max_rows: int = 192, progress: bool = False
) -> Float[Tensor, "component prompt"]:
    """``‖f(x) − f(x | h ← h(mask(x)))‖₂`` per component and prompt (see module docstring).

    The masked input is :class:`~circuits.interventions.Zero` on the embeddings of the tokens where
    ``x`` and ``x'`` differ; its activations are swapped into the clean run one component at a time.

    Raises:
        ValueError: A pair whose clean and corrupted prompts are identical (no domain-specific token).
    """
    n = sum(len(g.indices) for g in groups)
    out = torch.zeros(len(components), n)
    names = sweep_cache_names(components)
    ref = last_logprobs(model, groups).exp()
    metric = ProbL2ToReference(ref)
    for gi, g in enumerate(groups):
        mask = g.clean != g.corrupted
        if not mask.any(-1).all():
            raise ValueError("every pair must differ somewhere: the differing tokens are the domain-specific input to mask")
        _, clean_cache = M.run_with_cache(model, g.clean, names)
        _, masked_cache = M.run_with_cache(model, g.clean, names, [(EMBED_HOOK, _embedding_mask_hook(mask))])
        idx = torch.tensor(g.indices)
        out[:, idx] = patch_from_source(model, clean_cache, masked_cache, metric, list(components), Swap(), max_rows, 0, gi, None, idx)
    return out


def sss_terms(
    model: HookedLM,
    groups: Sequence[TokenGroup],
    components: Sequence[Component],
    *,
    max_rows: int = 192,
    checkpoint_dir: Path | None = None,
    executor: Executor | None = None,
    progress: bool = False,
) -> tuple[Effects, Effects]:
    """SSS's two KL sweeps (seed 000): ``KL(f(x) ‖ f(x | h = 0))`` and ``KL(f(x') ‖ f(x' | h ← h(x)))`` per prompt (nats).

    Returns:
        ``(zero, swap)``: noising with :class:`~circuits.interventions.Zero` against the clean run's full
        next-token distribution, and denoising with :class:`~circuits.interventions.Swap` against the
        corrupted run's (unnormalised :class:`Effects` in nats).
    """
    ref_clean, ref_corr = last_logprobs(model, groups, "clean"), last_logprobs(model, groups, "corrupted")
    kw: dict[str, Any] = dict(max_rows=max_rows, progress=progress, executor=executor, normalised=False)
    ck = (lambda tag: None) if checkpoint_dir is None else (lambda tag: Path(checkpoint_dir) / tag)
    zero = patch_groups(model, groups, KLToReference(ref_clean), components, direction="noising", intervention=Zero(), checkpoint_dir=ck("sss-zero"), **kw)
    swap = patch_groups(model, groups, KLToReference(ref_corr), components, direction="denoising", intervention=Swap(), checkpoint_dir=ck("sss-swap"), **kw)
    return zero, swap


def icp_scores(
    model: HookedLM,
    groups: Sequence[TokenGroup],
    components: Sequence[Component],
    *,
    domains: Sequence[str] | None = None,
    beta: float = S.BETA,
    max_rows: int = 192,
    checkpoint_dir: Path | None = None,
    executor: Executor | None = None,
    progress: bool = False,
) -> Effects:
    """SSS, IDS and R of seed 000 for every component (see :mod:`circuits.probing.scores`).

    Args:
        model: The model.
        groups: Counterfactual pairs ``(x, x')`` differing only in the spurious feature.
        components: Heads / neurons / MLP layers to score.
        domains: Each prompt's domain, in pair order (``None``: one domain).
        beta: Seed 000's β.
        max_rows: Packed batch bound.
        checkpoint_dir: Per-layer checkpoints of the two KL sweeps.
        executor: Where the KL sweeps' work units run.
        progress: Progress bars.

    Returns:
        :class:`Effects` in nats (method ``spurious_sensitivity``): per prompt, the sum of SSS's two
        terms (:func:`sss_terms`); ``scores``: ``SSS``, ``IDS`` (:func:`masked_l2`, probability L2),
        ``R = β SSS + (1 − β) IDS``, ``R_minmax`` (after min-max scaling), ``SSS[zero]``, ``SSS[swap]``.
        There is no clean/corrupted metric: the behaviour's size is :func:`behaviour_kl`.
    """
    zero, swap = sss_terms(model, groups, components, max_rows=max_rows, checkpoint_dir=checkpoint_dir, executor=executor, progress=progress)
    l2 = masked_l2(model, groups, components, max_rows=max_rows)
    sss = S.spurious_sensitivity(zero.effects.clamp_min(0), swap.effects.clamp_min(0))
    ids = S.invariance_disruption(l2, domains)
    scores = {
        "SSS": sss, "IDS": ids, "R": S.combined_score(sss, ids, beta=beta), "R_minmax": S.combined_score(sss, ids, beta=beta, scale="minmax"),
        "SSS[zero]": zero.effects.mean(-1), "SSS[swap]": swap.effects.mean(-1),
    }
    method = Method("spurious_sensitivity", intervention="zero+swap", direction="noising", metric="KL (nats), full next-token distribution")
    return Effects(tuple(components), zero.effects + swap.effects, "nats", method, scores=scores)


#: Seed 001's three intervention types; scaling with 0 < α < 1 is its own setting (α = 0 is masking).
def default_interventions(alpha: float = 0.5) -> dict[str, SweepIntervention]:
    """``{"masking": Zero(), "scaling(α)": Scale(α), "swapping": Swap()}``.

    Raises:
        ValueError: ``alpha`` not in (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"the scaling setting shrinks a feature: 0 < alpha < 1, got {alpha}")
    return {"masking": Zero(), f"scaling({alpha:g})": Scale(alpha), "swapping": Swap()}


def reliability_grid(
    model: HookedLM,
    datasets: Mapping[str, tuple[Sequence[TokenGroup], Mapping[str, Metric]]],
    components: Sequence[Component],
    *,
    interventions: Mapping[str, SweepIntervention] | None = None,
    max_rows: int = 192,
) -> tuple[Float[Tensor, "intervention metric dataset component"], dict[str, list[str]]]:
    """``CE_{I,m,X}(h)`` for seed 001's reliability score (:func:`circuits.probing.scores.reliability_score`).

    Every intervention acts on the clean prompt ``x`` (noising); swapping takes ``h(x')``.

    Args:
        model: The model.
        datasets: ``{name: (pairs, {metric name: metric})}``; every data set names the same metrics.
        components: Components.
        interventions: ``{name: intervention}``; default :func:`default_interventions`.
        max_rows: Packed batch bound.

    Returns:
        ``(ce, axes)``: the grid and the names along its first three axes.

    Raises:
        ValueError: Data sets with different metric names.
    """
    interventions = dict(interventions or default_interventions())
    metric_names = [list(m) for _, m in datasets.values()]
    if any(names != metric_names[0] for names in metric_names):
        raise ValueError(f"every data set must name the same metrics, got {metric_names}")
    ce = torch.zeros(len(interventions), len(metric_names[0]), len(datasets), len(components))
    for x, (groups, metrics) in enumerate(datasets.values()):
        for m, metric in enumerate(metrics.values()):
            for i, iv in enumerate(interventions.values()):
                r = patch_groups(model, groups, metric, components, direction="noising", intervention=iv, max_rows=max_rows, progress=False, normalised=False)
                ce[i, m, x] = S.causal_effect(r.clean_metric, r.patched).mean(-1)
    return ce, {"intervention": list(interventions), "metric": metric_names[0], "dataset": list(datasets)}


def metric_on(model: HookedLM, groups: Sequence[TokenGroup], metric: Metric, side: str = "clean") -> Float[Tensor, " prompt"]:
    """A metric on every prompt of one side, in pair order (no intervention)."""
    n = sum(len(g.indices) for g in groups)
    out = torch.zeros(n)
    with torch.no_grad():
        for g in groups:
            idx = torch.tensor(g.indices)
            out[idx] = call_metric(metric, M.run(model, getattr(g, side)), idx).float().cpu()
    return out
