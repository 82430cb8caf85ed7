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
   (:class:`TokenSetLogProb`), averaged over draws, then over prompts (``E_{x~D}``).
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
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from circuits import model as M
from circuits.interventions import rome_noise_std
from circuits.probing.effects import Effects, Method
from circuits.probing.patching import TokenGroup
from circuits.sites import EMBED_HOOK, Component, HeadRef, NeuronRef, hook_name

Positions = Literal["subject", "all"]


@dataclass(frozen=True)
class TokenSetLogProb:
    """``log Σ_{t ∈ tokens} p(t)`` at the last position (nats): the log-probability that the next token is
    one of a set of single-token continuations, e.g. a suite's harmful continuations ``y_h``.

    Attributes:
        tokens: The token ids.
    """

    tokens: tuple[int, ...]
    positions: int = 1
    unit: str = "nats"

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, " batch"]:
        """Evaluate on logits."""
        if not self.tokens:
            raise ValueError("empty token set")
        return logits[:, -1, :].float().log_softmax(-1)[:, list(self.tokens)].logsumexp(-1)


@dataclass(frozen=True)
class ComponentTrace:
    """Head/neuron restoration effects and flags.

    Attributes:
        components: The traced components.
        delta: ``Δ log P(y_h)`` per seed, component and prompt (nats).
        clean: ``log P(y_h | x)`` per prompt.
        noised: ``log P(y_h | noised x)`` per seed and prompt (mean over draws).
        tau: The flag threshold τ (nats).
        seeds: Noise seeds.
        n_samples: Draws per seed.
        noise_std: ν.
        positions: Where components were restored.
    """

    components: tuple[Component, ...]
    delta: Float[Tensor, "seed component prompt"]
    clean: Float[Tensor, " prompt"]
    noised: Float[Tensor, "seed prompt"]
    tau: float
    seeds: tuple[int, ...]
    n_samples: int
    noise_std: float
    positions: Positions

    @property
    def mean_delta(self) -> Float[Tensor, " component"]:
        """``Δ_h`` averaged over seeds and prompts."""
        return self.delta.mean((0, 2))

    @property
    def flagged(self) -> list[bool]:
        """``Δ_h > τ`` in every seed."""
        return (self.delta.mean(-1) > self.tau).all(0).tolist()

    def effects(self) -> Effects:
        """Per-prompt ``Δ`` (mean over seeds) as the engine's :class:`Effects` (unit nats, unnormalised)."""
        values = self.delta.mean(0)
        method = Method("causal_tracing", intervention="noise", direction="denoising", seed=self.seeds[0])  # type: ignore[arg-type]
        return Effects(self.components, values, "nats", self.clean, self.noised.mean(0), method, values)


def _subject_mask(group: TokenGroup) -> Tensor:
    """``[batch, pos]``: where the clean and corrupted prompts differ (the subject, noised)."""
    mask = group.clean != group.corrupted
    if not mask.any(-1).all():
        raise ValueError("every pair must differ somewhere: the differing tokens are the subject to noise")
    return mask


@torch.no_grad()
def trace_components(
    model: Any,
    groups: Sequence[TokenGroup],
    harmful: Sequence[int],
    components: Sequence[Component],
    *,
    tau: float = 0.1,
    seeds: Sequence[int] = (0, 1, 2),
    n_samples: int = 4,
    noise_std: float | None = None,
    positions: Positions = "subject",
    max_rows: int = 256,
    progress: bool = False,
) -> ComponentTrace:
    """Trace heads (``z``) and neurons (``hook_post``) by noise injection and restoration (module docstring).

    Args:
        model: The model.
        groups: Harmful prompts (``clean``) with their counterfactuals (``corrupted``, which only mark
            the subject positions).
        harmful: Token ids of the harmful continuation(s) ``y_h``.
        components: :class:`~circuits.sites.HeadRef` (``z``) and/or :class:`~circuits.sites.NeuronRef`.
        tau: Flag threshold on ``Δ`` (nats).
        seeds: Noise seeds (≥3 for the atlas's rule).
        n_samples: Draws per seed.
        noise_std: ν; default ROME's 3σ of the embeddings.
        positions: Restore at the subject positions or everywhere.
        max_rows: Bound on packed rows per forward.
        progress: Progress bar.

    Returns:
        The trace.

    Raises:
        ValueError: No components, a component that is not a head ``z`` or a neuron, or a pair that does
            not differ.
    """
    if not components or any(not isinstance(c, (HeadRef, NeuronRef)) or getattr(c, "act", "z") != "z" or c.pos is not None for c in components):
        raise ValueError(f"trace whole heads (z) and neurons, got {list(components)[:4]}")
    metric = TokenSetLogProb(tuple(int(t) for t in harmful))
    std = rome_noise_std(M.embedding_matrix(model)) if noise_std is None else noise_std
    d_model = M.shape_of(model).d_model
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
            gen = torch.Generator().manual_seed(seed * 1_000_003 + gi)
            noise = std * torch.randn(n_samples * b, g.clean.shape[1], d_model, generator=gen) * subj.repeat(n_samples, 1)[..., None]

            def add_noise(e: Tensor, hook: Any, noise: Tensor = noise) -> Tensor:
                return e + noise.to(e.dtype).to(e.device).repeat(e.shape[0] // noise.shape[0], 1, 1)

            resid = [hook_name("resid_pre", layer) for layer in layers]
            logits, cache = M.run_with_cache(model, g.clean.repeat(n_samples, 1), resid, [(EMBED_HOOK, add_noise)])
            base = metric(logits).cpu().view(n_samples, b)
            noised_lp[si, idx] = base.mean(0)
            rows = n_samples * b
            mask = where.repeat(n_samples, 1)
            for layer in layers:
                comp_idx = by_layer[layer]
                size = max(1, max_rows // rows)
                for start in range(0, len(comp_idx), size):
                    chunk = comp_idx[start : start + size]
                    hooks = _restore_hooks([components[i] for i in chunk], clean_cache, mask, n_samples, rows)
                    start_resid = cache[hook_name("resid_pre", layer)].repeat(len(chunk), 1, 1)
                    out = metric(M.run_from_layer(model, start_resid, layer, hooks, last=1)).cpu().view(len(chunk), n_samples, b)
                    for k, ci in enumerate(chunk):
                        delta[si, ci, idx] = (out[k] - base).mean(0)
                bar.update(1)
    bar.close()
    return ComponentTrace(tuple(components), delta, clean_lp, noised_lp, float(tau), tuple(seeds), n_samples, std, positions)


def _restore_hooks(chunk: list[Component], clean_cache: dict[str, Tensor], mask: Tensor, n_samples: int, rows: int) -> list[tuple[str, M.HookFn]]:
    """Copy ``k`` of the packed batch restores ``chunk[k]`` to its clean value where ``mask`` is set."""
    per_hook: dict[str, list[tuple[int, int]]] = {}
    for k, c in enumerate(chunk):
        unit = c.head if isinstance(c, HeadRef) else c.index  # type: ignore[union-attr]
        per_hook.setdefault(c.hook_name, []).append((k, unit))

    def make(name: str, targets: list[tuple[int, int]]) -> M.HookFn:
        clean = clean_cache[name].repeat(n_samples, *([1] * (clean_cache[name].ndim - 1)))  # [rows, pos, ...]

        def hook(act: Tensor, hook: Any) -> Tensor:
            act = act.clone()
            m = mask.to(act.device)
            for k, unit in targets:
                sl = slice(k * rows, (k + 1) * rows)
                cur, src = act[sl, :, unit], clean[:, :, unit].to(act.dtype).to(act.device)
                m_b = m.reshape(*m.shape, *([1] * (cur.ndim - 2)))
                act[sl, :, unit] = torch.where(m_b, src, cur)
            return act

        return hook

    return [(name, make(name, t)) for name, t in per_hook.items()]
