"""Component scores for harmful and spurious behaviours, from the causal-pruning literature.

Notation: ``M`` the model, ``x`` a prompt, ``m`` a behaviour metric, ``do(h)`` an intervention on
component ``h`` (zero / mean / resample ablation, or swapping in the counterfactual activation),
``x'`` the counterfactual of ``x`` in which only the spurious feature changed.

* **Causal effect** (intervention-based causal pruning):
  ``CE(h, m) = E_x[ m(M(x)) − m(M(x | do(h))) ]`` — how much the behaviour drops when ``h`` is
  intervened on, per intervention kind and metric. :func:`causal_effect`.
* **Weighted spuriousness score** (reliability variant): over settings ``k`` = interventions × metrics
  × data sets, ``S_w(h) = Σ_k w_k(h) |CE_k(h)| / Σ_k w_k(h)`` with reliability weights
  ``w_k(h) = 1 / (SE_k(h)² + ε)``, the inverse squared standard error of ``CE_k(h)`` over prompts, so
  noisy settings count less. :func:`weighted_spuriousness`.
* **Spurious sensitivity score** (causal pruning for spurious feature removal):
  ``SSS(h) = E_x[ KL( p(·|x) ‖ p(·|x, h ← h(x')) ) ]`` — how much the output distribution moves when
  only ``h`` sees the spurious swap. Computed by noising activation patching with a KL metric;
  :func:`spurious_sensitivity` averages it.
* **Invariance deviation score**: ``IDS(h) = sqrt( (1/D) Σ_d (e_d(h) − ē(h))² )``, the L2 variation
  of ``h``'s mean effect ``e_d(h)`` across ``D`` domains (here: templates), ``ē`` their mean; a
  component whose role changes with the domain is not an invariant mechanism. :func:`invariance_deviation`.
* **Combined score** ``R(h) = β Ŝ(h) + (1 − β) Î(h)``, β = 0.5 by default, where ``Ŝ`` and ``Î`` are SSS
  and IDS min-max scaled to [0, 1] across the scored components so the two are commensurable.
  :func:`combined_score`.
* **Significance** τ: a component counts only where its 95% CI excludes 0 (or p < 0.05); where noise is
  involved, in each of at least 3 seeds, with one sign. :func:`significant_across_seeds`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.stats import Summary


def causal_effect(
    clean_metric: Float[Tensor, " prompt"], intervened_metric: Float[Tensor, "component prompt"]
) -> Float[Tensor, "component prompt"]:
    """Per-prompt ``m(M(x)) − m(M(x | do(h)))``; its mean over prompts is ``CE(h, m)``.

    Raises:
        ValueError: Shapes disagree.
    """
    if intervened_metric.shape[-1] != clean_metric.shape[-1]:
        raise ValueError(f"{intervened_metric.shape[-1]} intervened prompts vs {clean_metric.shape[-1]} clean")
    return clean_metric[None, :] - intervened_metric


def weighted_spuriousness(
    ce: Float[Tensor, "setting component prompt"], *, eps: float = 1e-6
) -> Float[Tensor, " component"]:
    """Reliability-weighted mean of ``|CE|`` over settings (see module docstring).

    Args:
        ce: Per-prompt causal effects for each setting (intervention × metric × data set), all with
            the same prompts; a setting with fewer prompts can be padded with NaN.
        eps: Floor on the squared standard error.

    Returns:
        ``S_w(h)`` for each component.
    """
    n = (~ce.isnan()).sum(-1).clamp(min=1)
    mean = ce.nanmean(-1)
    var = ((ce - mean[..., None]) ** 2).nan_to_num(0.0).sum(-1) / (n - 1).clamp(min=1)
    weight = 1.0 / (var / n + eps)
    return (weight * mean.abs()).sum(0) / weight.sum(0)


def spurious_sensitivity(kl: Float[Tensor, "component prompt"]) -> Float[Tensor, " component"]:
    """``SSS(h)``: mean KL (nats) between the output and the output with ``h`` swapped to ``x'``.

    Raises:
        ValueError: Negative KL values (not a KL).
    """
    if (kl < -1e-6).any():
        raise ValueError("KL values must be >= 0")
    return kl.mean(-1)


def invariance_deviation(effects_by_domain: Float[Tensor, "component domain"]) -> Float[Tensor, " component"]:
    """``IDS(h)``: root mean squared deviation of per-domain mean effects from their mean.

    Raises:
        ValueError: Fewer than 2 domains.
    """
    if effects_by_domain.shape[-1] < 2:
        raise ValueError("IDS needs at least 2 domains")
    centred = effects_by_domain - effects_by_domain.mean(-1, keepdim=True)
    return centred.pow(2).mean(-1).sqrt()


def _minmax(x: Tensor) -> Tensor:
    span = x.max() - x.min()
    return torch.zeros_like(x) if span <= 0 else (x - x.min()) / span


def combined_score(
    sss: Float[Tensor, " component"], ids: Float[Tensor, " component"], *, beta: float = 0.5
) -> Float[Tensor, " component"]:
    """``R = β Ŝ + (1 − β) Î`` with min-max scaled SSS and IDS (see module docstring).

    Raises:
        ValueError: ``beta`` outside [0, 1] or shapes differ.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if sss.shape != ids.shape:
        raise ValueError(f"SSS {tuple(sss.shape)} and IDS {tuple(ids.shape)} differ in shape")
    return beta * _minmax(sss) + (1.0 - beta) * _minmax(ids)


def significant_across_seeds(per_seed: Sequence[Sequence[Summary]], *, min_seeds: int = 3, alpha: float = 0.05) -> list[bool]:
    """τ for noise-based methods: significant (CI excludes 0 or p < alpha) in every seed, one sign.

    Args:
        per_seed: ``per_seed[s][c]`` is component ``c``'s summary under seed ``s``.
        min_seeds: Required number of seeds.
        alpha: p-value threshold.

    Returns:
        One flag per component.

    Raises:
        ValueError: Fewer than ``min_seeds`` seeds, or seeds with different numbers of components.
    """
    if len(per_seed) < min_seeds:
        raise ValueError(f"significance needs >= {min_seeds} seeds, got {len(per_seed)}")
    n = {len(s) for s in per_seed}
    if len(n) != 1:
        raise ValueError("every seed must summarise the same components")
    out = []
    for c in range(n.pop()):
        runs = [s[c] for s in per_seed]
        sig = all((r.ci_low > 0 or r.ci_high < 0 or r.p_value < alpha) for r in runs)
        signs = {r.mean > 0 for r in runs}
        out.append(sig and len(signs) == 1)
    return out
