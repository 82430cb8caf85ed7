"""Component scores of intervention-based causal pruning (ICP), as the seed proposals write them.

Sources: seed 000 ("Intervention-Based Causal Pruning for Spurious Feature Removal", §Causal Effect
Quantification, §Structural Pruning, §Implementation) and seed 001 ("ICP for Enhancing Reliability",
§2.1, §2.2). Notation: ``f`` the model, ``x`` a prompt, ``x'`` its counterfactual (only the spurious
feature changed), ``p = f(x)``, ``p' = f(x')`` the next-token distributions at the answer position,
``h`` a component (a head's ``z`` or a neuron's ``hook_post`` at every position).

* **Causal effect** (seed 001 §2.1): ``CE(h, m) = E_x[ m(f(x)) − m(f(x | do(h = v))) ]`` per
  intervention (``v`` = 0, ``α·h``, ``h(x')``) and metric. :func:`causal_effect`.
* **Spurious sensitivity score** (seed 000): ``SSS(h) = E_{x,x'}[ KL(p ‖ p_do(h=0)) +
  KL(p' ‖ p'_do(h↔x')) ]``. :func:`spurious_sensitivity` adds the two per-prompt terms and averages.
  Interpretations: (a) the KL is over the **full next-token distribution at the answer position**
  (the last prompt position): the seed's ``p = f(x)`` is the model's output distribution, and
  restricting it to two label tokens would ignore probability moved to any other token (and is
  undefined for a generative suite without a label set); (b) ``p'_do(h↔x')`` is the run on ``x'`` in
  which ``h`` takes its value from ``x`` (the swap exchanges ``h`` between the two runs; the prime marks
  the ``x'`` run). The other reading, ``f(x | h ← h(x'))`` compared with ``p'``, is largest for
  components that carry *nothing* (the whole ``x``/``x'`` difference remains), which is no sensitivity.
  In the engine's terms the first term is *noising* with :class:`~circuits.interventions.Zero`, the
  second *denoising* with :class:`~circuits.interventions.Swap` (:mod:`circuits.probing.spurious`).
* **Invariance disruption score** (seed 000): ``IDS(h) = E_{x,d}[ ‖f(x) − f(do(h = mask(x_d)))‖₂ ]``.
  Interpretation: ``f`` is the next-token probability vector at the answer position; ``mask(x_d)``
  is ``x`` with its domain-specific tokens (the positions where ``x`` and ``x'`` differ) masked by
  zeroing their token embeddings, and ``do(h = mask(x_d))`` sets ``h`` to its activation on that
  masked input while the rest of the run sees ``x``; ``E_{x,d}`` averages prompts within each domain
  ``d`` (a template or a suite group), then domains with equal weight. :func:`invariance_disruption`.
  (The earlier RMS-of-effects-across-templates "invariance deviation" is gone: one IDS everywhere.)
* **Aggregate** (seed 000): ``R(h) = β S(h) + (1 − β) I(h)``, ``β = 0.5`` by default, on the raw
  scores as written; ``scale="minmax"`` first maps each to [0, 1] across components (an option, since
  nats and probability L2 have different units). High ``R`` = strongly spurious. :func:`combined_score`.
  Pruning priority: the top ``k%`` by ``R``, ``k ∈ {10, 30, 50}`` (seed 000 §Implementation),
  :func:`top_rate`.
* **Reliability score** (seed 001 §2.1): ``S(h) = 1/(|I||M||X|) Σ_I Σ_{m∈M} Σ_{X} w_I w_m |CE_{I,m,X}(h)|``
  over interventions ``I`` (masking, scaling with ``0 < α < 1``, swapping), metrics ``M`` and data sets
  ``X`` (in- and out-of-distribution). Interpretation: the innermost sum runs over *data sets* (the
  seed computes ``CE`` as an expectation over ``x ~ X`` and then "across multiple datasets"), so
  ``|CE|`` is the absolute mean effect on one data set; weights default to 1 (the seed names no
  values). :func:`reliability_score`. Components with ``S > τ`` are pruned structurally
  (``θ_{l+1,j,i} = 0 ∀j``, seed 001 §2.2: the component's output columns zeroed):
  :func:`above_threshold`.
* **Inverse-variance variant** ``S_w`` (not in the seeds; kept for the atlas): weights
  ``1 / (SE² + ε)`` per setting. :func:`weighted_spuriousness`.
* **Significance** across ≥3 noise seeds: :func:`significant_across_seeds`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.stats import Summary

#: Seed 000's default mixing weight of SSS and IDS in ``R``.
BETA = 0.5
#: Seed 000's pruning rates (fractions of the scored components).
PRUNING_RATES = (0.10, 0.30, 0.50)


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
    """Inverse-variance-weighted mean of ``|CE|`` over settings (``S_w``; see module docstring).

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


def _check_kl(*kls: Tensor) -> None:
    for kl in kls:
        if (kl < -1e-5).any():
            raise ValueError("KL values must be >= 0")


def spurious_sensitivity(
    kl_zero: Float[Tensor, "component prompt"], kl_swap: Float[Tensor, "component prompt"]
) -> Float[Tensor, " component"]:
    """``SSS(h) = E[KL(p ‖ p_do(h=0)) + KL(p' ‖ p'_do(h↔x'))]`` (nats; seed 000, see module docstring).

    Args:
        kl_zero: Per-prompt ``KL(f(x) ‖ f(x | h = 0))`` over the full next-token distribution.
        kl_swap: Per-prompt ``KL(f(x') ‖ f(x' | h ← h(x)))``, same prompts.

    Raises:
        ValueError: Negative KL values, or shapes differ.
    """
    if kl_zero.shape != kl_swap.shape:
        raise ValueError(f"zero-term {tuple(kl_zero.shape)} and swap-term {tuple(kl_swap.shape)} KLs differ in shape")
    _check_kl(kl_zero, kl_swap)
    return (kl_zero + kl_swap).mean(-1)


def invariance_disruption(
    l2: Float[Tensor, "component prompt"], domains: Sequence[str] | None = None
) -> Float[Tensor, " component"]:
    """``IDS(h) = E_{x,d}‖f(x) − f(do(h = mask(x_d)))‖₂`` (seed 000): domain-balanced mean of per-prompt L2.

    Args:
        l2: Per-prompt L2 distance between the next-token probability vectors of ``x`` and of ``x``
            with ``h`` set to its value on the masked input (:func:`circuits.probing.spurious.masked_l2`).
        domains: Each prompt's domain (e.g. template); ``None``: one domain. Each domain counts once.

    Raises:
        ValueError: Negative distances, or a domain list of the wrong length.
    """
    if (l2 < 0).any():
        raise ValueError("L2 distances must be >= 0")
    if domains is None:
        return l2.mean(-1)
    if len(domains) != l2.shape[-1]:
        raise ValueError(f"{len(domains)} domain labels for {l2.shape[-1]} prompts")
    names = sorted(set(domains))
    per = [l2[:, [i for i, d in enumerate(domains) if d == n]].mean(-1) for n in names]
    return torch.stack(per, -1).mean(-1)


def _minmax(x: Tensor) -> Tensor:
    span = x.max() - x.min()
    return torch.zeros_like(x) if span <= 0 else (x - x.min()) / span


def combined_score(
    sss: Float[Tensor, " component"], ids: Float[Tensor, " component"], *, beta: float = BETA, scale: str = "none"
) -> Float[Tensor, " component"]:
    """``R = β S + (1 − β) I`` (seed 000). ``scale="minmax"`` maps S and I to [0, 1] first.

    Raises:
        ValueError: ``beta`` outside [0, 1], an unknown ``scale``, or shapes differ.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if sss.shape != ids.shape:
        raise ValueError(f"SSS {tuple(sss.shape)} and IDS {tuple(ids.shape)} differ in shape")
    if scale not in ("none", "minmax"):
        raise ValueError(f"scale must be 'none' or 'minmax', got {scale!r}")
    if scale == "minmax":
        sss, ids = _minmax(sss), _minmax(ids)
    return beta * sss + (1.0 - beta) * ids


def top_rate(scores: Float[Tensor, " component"], rate: float) -> list[int]:
    """Indices of the top ``rate`` fraction of components by score (seed 000's pruning rate ``k%``).

    ``round(rate · n)`` components, at least 1; ties broken by index.

    Raises:
        ValueError: ``rate`` outside (0, 1].
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"a pruning rate is a fraction in (0, 1], got {rate}")
    k = max(1, round(rate * scores.numel()))
    return sorted(torch.argsort(-scores, stable=True)[:k].tolist(), key=lambda i: -float(scores[i]))


def reliability_score(
    ce: Float[Tensor, "intervention metric dataset component"],
    *,
    w_intervention: Sequence[float] | None = None,
    w_metric: Sequence[float] | None = None,
) -> Float[Tensor, " component"]:
    """Seed 001's ``S(h) = 1/(|I||M||X|) Σ_I Σ_m Σ_X w_I w_m |CE_{I,m,X}(h)|`` (see module docstring).

    Args:
        ce: Mean causal effect of each component per intervention × metric × data set.
        w_intervention: ``w_I`` per intervention (default 1).
        w_metric: ``w_m`` per metric (default 1).

    Raises:
        ValueError: Weight lists of the wrong length or negative weights.
    """
    n_i, n_m, n_x = ce.shape[:3]
    wi = torch.tensor(w_intervention if w_intervention is not None else [1.0] * n_i, dtype=ce.dtype)
    wm = torch.tensor(w_metric if w_metric is not None else [1.0] * n_m, dtype=ce.dtype)
    if wi.numel() != n_i or wm.numel() != n_m:
        raise ValueError(f"{wi.numel()} intervention / {wm.numel()} metric weights for a {n_i}×{n_m} grid")
    if (wi < 0).any() or (wm < 0).any():
        raise ValueError("weights must be >= 0")
    weighted = wi[:, None, None, None] * wm[None, :, None, None] * ce.abs()
    return weighted.sum((0, 1, 2)) / (n_i * n_m * n_x)


def above_threshold(scores: Float[Tensor, " component"], tau: float) -> list[int]:
    """Indices with ``S(h) > τ`` (seed 001 §2.2: these are pruned structurally), largest first."""
    idx = [i for i in range(scores.numel()) if float(scores[i]) > tau]
    return sorted(idx, key=lambda i: -float(scores[i]))


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
