"""Edge attribution patching (EAP) and EAP-IG: every edge's patching effect from gradients.

The first-order estimate of patching edge ``u → v`` (:mod:`circuits.probing.edge_patching`) in the
corrupted run with the clean write of ``u`` is (Syed et al. 2023, "Attribution patching outperforms
automated circuit discovery"; Nanda 2023)

    ``m(patched) − m(corrupted) ≈ Σ_{pos, d} (w_u(clean) − w_u(corrupted)) · ∂m/∂x_v |_corrupted``

where ``x_v`` is ``v``'s own copy of the residual stream. One forward and one backward give
``∂m/∂x_v`` for every receiver at once; one clean forward gives every ``w_u(clean)``; the score matrix is
one batched product ``[sender, pos·d] × [pos·d, receiver]`` per prompt.

**EAP-IG** (Hanna et al. 2024, "Have faith in faithfulness", and their ``attribute.py``): the gradient is
averaged over ``k`` runs whose *input embeddings* lie on the straight line from the corrupted to the
clean input (``α = j/k``, ``j = 0..k−1``, a left Riemann sum; ``α = 0`` is the corrupted run itself,
which also supplies ``w_u(corrupted)``), so ``ig_steps=1`` is exactly EAP. Hanna et al. score the
*noising* direction from the clean run; here the estimate is of *denoising* (restore one edge into the
corrupted run), like the node-level :func:`circuits.probing.attribution.attribution_patching`, and it is
normalised the same way (0 = corrupted run, 1 = clean run), so it compares directly with
:func:`circuits.probing.edge_patching.edge_patching`.

Cost: ``1 + 2k`` forward-pass equivalents per batch, plus the score products (``batch · senders ·
receivers · pos · d_model`` multiply-adds). Memory: the receiver gradients, ``batch · pos · receivers ·
d_model`` floats, plus one backward graph; ``batch_size`` bounds both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from circuits import model as M
from circuits.metrics import Metric, MetricLike, as_metric, call_metric
from circuits.model import HookedLM
from circuits.probing.edge_patching import (
    _as_groups,
    _writer_hooks,
    graph_of,
    sender_writes,
)
from circuits.probing.effects import Effects, Method
from circuits.probing.graph import Edge, Graph
from circuits.probing.patching import TokenGroup, normalise
from circuits.suites import PromptPair


def _grad_hooks(graph: Graph, store: dict[str, torch.Tensor]) -> list[tuple[str, M.HookFn]]:
    """Hooks that make each reader's input a tensor whose gradient is kept (as attribution's capture)."""

    def make(name: str) -> M.HookFn:
        def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
            out = act.clone() if act.requires_grad else act.detach().clone().requires_grad_(True)
            if act.requires_grad:
                out.retain_grad()
            store[name] = out
            return out

        return hook

    return [(r.name, make(r.name)) for r in graph.readers]


def _batch_scores(model: HookedLM, graph: Graph, clean: torch.Tensor, corrupted: torch.Tensor, metric: Metric, prompts: torch.Tensor, ig_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``([batch, sender, receiver] raw estimates, clean metric, corrupted metric)`` for one batch."""
    clean_w, clean_m = sender_writes(model, graph, clean, metric, prompts)
    e_clean, e_corr = M.embed(model, clean), M.embed(model, corrupted)
    grads: dict[str, torch.Tensor] = {}
    corr_w, corr_m = None, None
    last, vocab = metric.info.positions, metric.info.vocab
    for j in range(ig_steps):
        store: dict[str, torch.Tensor] = {}
        captured: list[torch.Tensor] = []
        hooks = _grad_hooks(graph, store) + (_writer_hooks(model, graph, captured, detach=True) if j == 0 else [])
        x = e_corr + (j / ig_steps) * (e_clean - e_corr)
        with torch.enable_grad(), M.frozen_parameters(model), M.split_inputs(model):
            logits = M.run_from_layer(model, x.detach(), 0, hooks, last=last, vocab=vocab)
            values = call_metric(metric, logits, prompts)
            values.sum().backward()
        if j == 0:
            corr_w, corr_m = torch.cat(captured, dim=2), values.detach().float().cpu()
        for r in graph.readers:
            g = store[r.name].grad
            g = torch.zeros_like(store[r.name]) if g is None else g.detach()
            grads[r.name] = grads.get(r.name, 0) + g / ig_steps
    assert corr_w is not None and corr_m is not None
    delta = clean_w - corr_w  # [batch, pos, sender, d_model]
    raw = torch.zeros(clean.shape[0], *graph.adjacency.shape)
    for r in graph.readers:
        g = grads[r.name] if r.per_head else grads[r.name][:, :, None]
        raw[:, :, list(r.receivers)] = torch.einsum("bpsd,bprd->bsr", delta.float(), g.float()).cpu()
    return raw * graph.adjacency, clean_m, corr_m


def edge_attribution(
    model: HookedLM,
    pairs: Sequence[PromptPair] | Sequence[TokenGroup],
    metric: MetricLike,
    *,
    graph: Graph | None = None,
    ig_steps: int = 1,
    batch_size: int = 8,
    progress: bool = True,
) -> Effects[Edge]:
    """EAP (``ig_steps=1``) or EAP-IG scores of every edge of the graph.

    Args:
        model: The model.
        pairs: Prompt pairs or token groups (clean/corrupted aligned token for token).
        metric: Differentiable behaviour metric.
        graph: The edge graph (default: the model's, :func:`~circuits.probing.edge_patching.graph_of`).
        ig_steps: Interpolation steps (1: EAP).
        batch_size: Prompts per forward/backward (bounds memory).
        progress: Show a progress bar.

    Returns:
        Estimated normalised denoising effects of every edge (``method.name``: ``edge_attribution_patching``
        or ``eap_ig``), with the graph recorded.

    Raises:
        PairError: Empty or misaligned pairs.
        ValueError: ``ig_steps < 1`` or no behaviour to normalise.
        UnsupportedArchitecture: Families without per-head additive writes (:func:`circuits.model.edge_support`).
    """
    if ig_steps < 1:
        raise ValueError(f"ig_steps must be >= 1, got {ig_steps}")
    metric = as_metric(metric)
    graph = graph or graph_of(model)
    groups = _as_groups(model, pairs)
    n = sum(len(g.indices) for g in groups)
    raw, clean_m, corr_m = torch.zeros(graph.n_edges, n), torch.zeros(n), torch.zeros(n)
    batches = [(g, s) for g in groups for s in range(0, len(g.indices), batch_size)]
    for g, s in tqdm(batches, desc="edge attribution", disable=not progress, leave=False):
        idx = torch.tensor(g.indices[s : s + batch_size])
        r, clean_m[idx], corr_m[idx] = _batch_scores(
            model, graph, g.clean[s : s + batch_size], g.corrupted[s : s + batch_size], metric, idx, ig_steps
        )
        raw[:, idx] = r[:, graph.adjacency].T
    raw, clean_m, corr_m = (metric.to_pairs(x) for x in (raw, clean_m, corr_m))
    name = "edge_attribution_patching" if ig_steps == 1 else "eap_ig"
    effects = normalise(raw + corr_m, clean_m, corr_m)
    method = Method(name, metric=metric.info.describe(), ig_steps=ig_steps)  # type: ignore[arg-type]
    return Effects(tuple(graph.edges()), effects, "normalised", method, clean_metric=clean_m, corrupted_metric=corr_m, graph=graph)
