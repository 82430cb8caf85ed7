"""Noise-injection-and-restoration tracing at head and neuron granularity (seed 004, §2.3).

Seed 004 ("Surgical Circuit Interventions for Targeted Harm Reduction") locates harmful circuits by
ROME's causal tracing (Meng et al. 2022) at the granularity of single attention heads and MLP neurons:

1. **Inject noise**: the token embeddings of the *subject* of a harmful prompt ``x`` get Gaussian
   noise ``N(0, ν²)``, ``ν`` = 3σ of the embedding matrix (ROME), ``n_samples`` draws per seed.
2. **Restore** one component: in the noised run, one head's output ``z`` (or one neuron's
   ``hook_post``) is set back to its clean value at the subject positions (``positions="subject"``,
   the default) or at every position (``positions="all"``).
3. **Measure** ``Δ_h = log P(y_h | noised, h restored) − log P(y_h | noised)``, ``y_h`` the harmful
   continuation: the log-probability that the next token is one of the harmful tokens
   (:class:`circuits.metrics.TokenSetLogProb`), averaged over draws, then over prompts (``E_{x~D}``).
4. **Flag** components with ``Δ_h > τ``, in every one of ≥3 noise seeds (the atlas's rule for
   noise-based methods).

Interpretation (seed 004 writes ``Δ = E[log P(y_h | do(a = ã)) − log P(y_h | x)]``): the baseline is
the *noised* run, whose harmful output the restoration recovers (the "Measure Recovery" step); with the
clean ``x`` as baseline, restoring a clean value inside a noised run could only lower ``log P(y_h)``
and ``Δ > τ`` would flag nothing. The subject of a suite pair is the set of positions where its clean
and corrupted prompts differ (e.g. the hostile adjective of the toxicity suite).

Batching as in :mod:`circuits.probing.causal_tracing`: draws × prompts × restored components are packed
along the batch, and each pack starts at its layer from the cached noised residual
(:func:`circuits.model.run_from_layer`); the noise is shared by every component (common random numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from circuits import model as M
from circuits.interventions import GaussianNoise, Swap, apply_where, rome_noise_std
from circuits.metrics import TokenSetLogProb
from circuits.model import HookedLM
from circuits.probing.effects import Effects, Method
from circuits.probing.patching import TokenGroup
from circuits.sites import EMBED_HOOK, Component, HeadRef, NeuronRef, hook_name

Positions = Literal["subject", "all"]


def traced_flags(trace: Effects, tau: float) -> list[bool]:
    """Seed 004's flag: ``Δ_h > τ`` (mean over prompts) in every seed of a :func:`trace_components` result.

    Raises:
        ValueError: A result without per-seed values.
    """
    if trace.per_seed is None:
        raise ValueError("tracing flags need the per-seed values of trace_components")
    return (trace.per_seed.mean(-1) > tau).all(0).tolist()


def _subject_mask(group: TokenGroup) -> Tensor:
    """``[batch, pos]``: where the clean and corrupted prompts differ (the subject, noised)."""
    mask = group.clean != group.corrupted
    if not mask.any(-1).all():
        raise ValueError("every pair must differ somewhere: the differing tokens are the subject to noise")
    return mask


@torch.no_grad()
def trace_components(
    model: HookedLM,
    groups: Sequence[TokenGroup],
    harmful: Sequence[int],
    components: Sequence[Component],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    n_samples: int = 4,
    noise_std: float | None = None,
    positions: Positions = "subject",
    max_rows: int = 256,
    progress: bool = False,
) -> Effects:
    """Trace heads (``z``) and neurons (``hook_post``) by noise injection and restoration (module docstring).

    The noise is :class:`~circuits.interventions.GaussianNoise` on the subject tokens' embeddings; a
    restoration is a :class:`~circuits.interventions.Swap` of the component's clean activation into the
    noised run, where ``positions`` says.

    Args:
        model: The model.
        groups: Harmful prompts (``clean``) with their counterfactuals (``corrupted``, which only mark
            the subject positions).
        harmful: Token ids of the harmful continuation(s) ``y_h``.
        components: :class:`~circuits.sites.HeadRef` (``z``) and/or :class:`~circuits.sites.NeuronRef`.
        seeds: Noise seeds (≥3 for the atlas's rule).
        n_samples: Draws per seed.
        noise_std: ν; default ROME's 3σ of the embeddings.
        positions: Restore at the subject positions or everywhere.
        max_rows: Bound on packed rows per forward.
        progress: Progress bar.

    Returns:
        :class:`Effects` in nats: ``per_seed[s, c, p]`` is ``Δ log P(y_h)`` of component ``c`` on prompt
        ``p`` under seed ``s`` (mean over draws), ``effects`` its mean over seeds, ``clean_metric``
        ``log P(y_h | x)``, ``corrupted_metric`` ``log P(y_h | noised x)`` (mean over seeds);
        :func:`traced_flags` applies the threshold τ.

    Raises:
        ValueError: No components, a component that is not a head ``z`` or a neuron, or a pair that does
            not differ.
    """
    if not components or any(not isinstance(c, (HeadRef, NeuronRef)) or getattr(c, "act", "z") != "z" or c.pos is not None for c in components):
        raise ValueError(f"trace whole heads (z) and neurons, got {list(components)[:4]}")
    metric = TokenSetLogProb(tuple(int(t) for t in harmful))
    std = rome_noise_std(M.embedding_matrix(model)) if noise_std is None else noise_std
    n = sum(len(g.indices) for g in groups)
    delta = torch.zeros(len(seeds), len(components), n)
    clean_lp, noised_lp = torch.zeros(n), torch.zeros(len(seeds), n)
    names = sorted({c.hook_name for c in components})
    layers = sorted({c.layer for c in components})
    by_layer = {layer: [i for i, c in enumerate(components) if c.layer == layer] for layer in layers}
    bar = tqdm(total=len(seeds) * len(groups) * len(layers), desc="component tracing", disable=not progress, leave=False)
    for gi, g in enumerate(groups):
        idx = torch.tensor(g.indices)
        b = g.clean.shape[0]
        subj = _subject_mask(g)
        where = subj if positions == "subject" else torch.ones_like(subj)
        clean_logits, clean_cache = M.run_with_cache(model, g.clean, names)
        clean_lp[idx] = metric(clean_logits).cpu()
        for si, seed in enumerate(seeds):
            mask = subj.repeat(n_samples, 1)

            def add_noise(e: Tensor, hook: Any, mask: Tensor = mask, seed: int = seed) -> Tensor:
                return apply_where(GaussianNoise(std), e, mask, None, torch.Generator().manual_seed(seed * 1_000_003 + gi))

            resid = [hook_name("resid_pre", layer) for layer in layers]
            logits, cache = M.run_with_cache(model, g.clean.repeat(n_samples, 1), resid, [(EMBED_HOOK, add_noise)])
            base = metric(logits).cpu().view(n_samples, b)
            noised_lp[si, idx] = base.mean(0)
            rows = n_samples * b
            restore_at = where.repeat(n_samples, 1)
            for layer in layers:
                comp_idx = by_layer[layer]
                size = max(1, max_rows // rows)
                for start in range(0, len(comp_idx), size):
                    chunk = comp_idx[start : start + size]
                    hooks = _restore_hooks([components[i] for i in chunk], clean_cache, restore_at, n_samples, rows)
                    start_resid = cache[hook_name("resid_pre", layer)].repeat(len(chunk), 1, 1)
                    out = metric(M.run_from_layer(model, start_resid, layer, hooks, last=1)).cpu().view(len(chunk), n_samples, b)
                    for k, ci in enumerate(chunk):
                        delta[si, ci, idx] = (out[k] - base).mean(0)
                bar.update(1)
    bar.close()
    method = Method(
        "causal_tracing", intervention="noise", direction="denoising", metric=metric.info.describe(), seeds=tuple(seeds), noise_std=std,
        positions=positions,
    )
    return Effects(tuple(components), delta.mean(0), "nats", method, clean_metric=clean_lp, corrupted_metric=noised_lp.mean(0), per_seed=delta)


def _restore_hooks(chunk: list[Component], clean_cache: dict[str, Tensor], mask: Tensor, n_samples: int, rows: int) -> list[tuple[str, M.HookFn]]:
    """Copy ``k`` of the packed batch swaps in ``chunk[k]``'s clean value where ``mask`` is set."""
    per_hook: dict[str, list[tuple[int, int]]] = {}
    for k, c in enumerate(chunk):
        unit = c.head if isinstance(c, HeadRef) else c.index  # type: ignore[union-attr]
        per_hook.setdefault(c.hook_name, []).append((k, unit))

    def make(name: str, targets: list[tuple[int, int]]) -> M.HookFn:
        clean = clean_cache[name].repeat(n_samples, *([1] * (clean_cache[name].ndim - 1)))  # [rows, pos, ...]

        def hook(act: Tensor, hook: Any) -> Tensor:
            act = act.clone()
            for k, unit in targets:
                sl = slice(k * rows, (k + 1) * rows)
                src = clean[:, :, unit].to(act.dtype).to(act.device)
                act[sl, :, unit] = apply_where(Swap(), act[sl, :, unit], mask, src, None)
            return act

        return hook

    return [(name, make(name, t)) for name, t in per_hook.items()]
