"""Exact edge patching: replace what chosen edges carry, and nothing else.

Every receiver reads its own copy of the residual stream (:func:`circuits.model.split_inputs`), which
is the sum of every sender's write plus constants (biases). Patching the edge ``u → v`` with a *source*
value of ``u`` gives ``v`` the input

    ``x_v = x_v(current run) − w_u(current run) + w_u(source)``

while every other reader, including the residual stream itself, is untouched; the change propagates
downstream as it would in the model. This is path patching (Wang et al. 2023, "Interpretability in the
wild", §3; Goldowsky-Dill et al. 2023, "Localizing model behavior with path patching") with one
receiver per edge, and the edge ablation of ACDC (Conmy et al. 2023) and auto-circuit (Miller et al.
2024) when the source is the corrupted or mean run.

Two identities make it hand-checkable (tests): patching *every* edge with the clean writes in a
corrupted run gives every reader its clean input, hence the clean run; patching every out-edge of one
sender equals activation patching of that sender (its write replaced in the residual stream).

Cost: one forward per edge set. :func:`edge_patching` packs several single-edge patches along the batch
(each row has its own edge mask), so per-edge ground truth costs ``n_edges / edges_per_pass`` forwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from circuits import model as M
from circuits.interventions import Intervention, Swap
from circuits.metrics import Metric, MetricLike, as_metric, call_metric
from circuits.model import HookedLM
from circuits.probing.effects import Effects, Method
from circuits.probing.graph import Edge, Graph, build_graph
from circuits.probing.patching import PairError, TokenGroup, normalise, tokenize_pairs
from circuits.sites import hook_name
from circuits.suites import PromptPair


def graph_of(model: HookedLM) -> Graph:
    """The edge graph of a model (:func:`~circuits.probing.graph.build_graph` with its shape)."""
    s = M.shape_of(model)
    has_mlp = M.has_hook(model, hook_name("mlp_out", 0))
    return build_graph(s.n_layers, s.n_heads, s.n_kv_heads, has_mlp=has_mlp, parallel=M.is_parallel(model))


def _writer_hooks(model: HookedLM, graph: Graph, captured: list[Tensor], *, detach: bool) -> list[tuple[str, M.HookFn]]:
    """Hooks appending each sender group's writes ``[batch, pos, n, d_model]`` to ``captured`` in forward order."""

    def put(x: Tensor) -> None:
        captured.append(x.detach() if detach else x)

    def on_input(act: Tensor, hook: Any) -> None:
        put(act[:, :, None])

    def on_z(layer: int) -> M.HookFn:
        def hook(act: Tensor, hook: Any) -> None:
            put(M.head_writes(model, layer, act))

        return hook

    def on_mlp(act: Tensor, hook: Any) -> None:
        put(act[:, :, None])

    hooks: list[tuple[str, M.HookFn]] = [(hook_name("resid_pre", 0), on_input)]
    for layer in range(graph.n_layers):
        hooks.append((hook_name("z", layer), on_z(layer)))
        if graph.has_mlp:
            hooks.append((hook_name("mlp_out", layer), on_mlp))
    return hooks


def _run(model: HookedLM, tokens: Tensor, metric: Metric, hooks: list[tuple[str, M.HookFn]], prompts: Tensor) -> Tensor:
    with M.split_inputs(model):
        logits = M.run_from_layer(model, M.embed(model, tokens), 0, hooks, last=metric.info.positions, vocab=metric.info.vocab)
    return call_metric(metric, logits, prompts).float().cpu()


@torch.no_grad()
def sender_writes(model: HookedLM, graph: Graph, tokens: Int[Tensor, "batch pos"], metric: MetricLike, prompts: Tensor) -> tuple[Float[Tensor, "batch pos sender d_model"], Tensor]:
    """Every sender's write into the residual stream on ``tokens``, and the metric of that run.

    Returns:
        ``(writes [batch, pos, sender, d_model], metric [batch])``.
    """
    captured: list[Tensor] = []
    values = _run(model, tokens, as_metric(metric), _writer_hooks(model, graph, captured, detach=True), prompts)
    return torch.cat(captured, dim=2), values


def _reader_hooks(graph: Graph, captured: list[Tensor], source: Tensor, mask: Tensor, intervention: Intervention) -> list[tuple[str, M.HookFn]]:
    """Hooks giving each receiver ``x_v + Σ_u mask[u, v] · (iv(w_u, w_u(source)) − w_u)``: the edge's write replaced."""

    def make(cols: list[int], per_head: bool) -> M.HookFn:
        def hook(act: Tensor, hook: Any) -> Tensor:
            current = torch.cat(captured, dim=2)
            s = current.shape[2]
            m = mask[:, :s, cols].to(current.dtype)
            if not bool(m.any()):
                return act
            replaced = intervention(current, source[:, :, :s].to(current.dtype), None)
            add = torch.einsum("bpsd,bsr->bprd", replaced - current, m)
            return act + (add if per_head else add[:, :, 0])

        return hook

    return [(r.name, make(list(r.receivers), r.per_head)) for r in graph.readers]


@torch.no_grad()
def run_with_edges(
    model: HookedLM,
    graph: Graph,
    tokens: Int[Tensor, "batch pos"],
    metric: MetricLike,
    prompts: Int[Tensor, " batch"],
    source: Float[Tensor, "batch pos sender d_model"],
    replaced: Bool[Tensor, "sender receiver"] | Bool[Tensor, "batch sender receiver"],
    intervention: Intervention = Swap(),
) -> Float[Tensor, " batch"]:
    """The metric of a run on ``tokens`` in which the ``replaced`` edges carry the ``source`` writes.

    What a replaced edge carries is ``intervention(current write, source write)`` — by default
    :class:`~circuits.interventions.Swap`, the source run's write (path patching); any intervention of
    :mod:`circuits.interventions` acts on edge writes the same way (e.g. ``Zero`` for zero ablation).

    Args:
        model: The model.
        graph: Its edge graph.
        tokens: The run's input.
        metric: Behaviour metric.
        prompts: Each row's prompt index (metric context).
        source: Sender writes to carry along replaced edges (another run's, or means), one row per row.
        replaced: Edges to replace, one mask for all rows or one per row (non-edges are ignored).
        intervention: What a replaced edge carries (default: the source write).

    Returns:
        The metric per row.
    """
    mask = replaced & graph.adjacency
    mask = mask.expand(tokens.shape[0], *graph.adjacency.shape) if mask.dim() == 2 else mask
    captured: list[Tensor] = []
    hooks = _writer_hooks(model, graph, captured, detach=False) + _reader_hooks(graph, captured, source, mask, intervention)
    return _run(model, tokens, as_metric(metric), hooks, prompts)


def edge_patching(
    model: HookedLM,
    pairs: Sequence[PromptPair] | Sequence[TokenGroup],
    metric: MetricLike,
    *,
    graph: Graph | None = None,
    edges: Sequence[Edge] | None = None,
    edges_per_pass: int = 16,
    progress: bool = True,
) -> Effects[Edge]:
    """Exact denoising effect of each single edge: the corrupted run with that edge carrying the clean write.

    Args:
        model: The model.
        pairs: Prompt pairs or token groups.
        metric: Behaviour metric.
        graph: The edge graph (default: :func:`graph_of`).
        edges: Edges to measure (default: all).
        edges_per_pass: Edges packed along the batch per forward.
        progress: Show a progress bar.

    Returns:
        Normalised effects (0 = corrupted run, 1 = clean run), unit ``normalised``.

    Raises:
        PairError: Empty or misaligned pairs.
        ValueError: No behaviour to normalise.
    """
    metric = as_metric(metric)
    graph = graph or graph_of(model)
    edges = list(edges) if edges is not None else graph.edges()
    groups = _as_groups(model, pairs)
    n = sum(len(g.indices) for g in groups)
    patched, clean_m, corr_m = torch.zeros(len(edges), n), torch.zeros(n), torch.zeros(n)
    bar = tqdm(total=len(groups) * -(-len(edges) // edges_per_pass), desc="edge patching", disable=not progress, leave=False)
    for g in groups:
        idx = torch.tensor(g.indices)
        clean_w, clean_m[idx] = sender_writes(model, graph, g.clean, metric, idx)
        _, corr_m[idx] = sender_writes(model, graph, g.corrupted, metric, idx)
        b = len(g.indices)
        for start in range(0, len(edges), edges_per_pass):
            chunk = edges[start : start + edges_per_pass]
            mask = torch.zeros(len(chunk), b, *graph.adjacency.shape, dtype=torch.bool)
            for i, e in enumerate(chunk):
                mask[(i, slice(None), *graph.index(e))] = True
            k = len(chunk)
            values = run_with_edges(
                model, graph, g.corrupted.repeat(k, 1), metric, idx.repeat(k), clean_w.repeat(k, 1, 1, 1), mask.flatten(0, 1)
            )
            patched[start : start + k, idx] = values.view(k, b)
            bar.update(1)
    bar.close()
    patched, clean_m, corr_m = (metric.to_pairs(x) for x in (patched, clean_m, corr_m))
    method = Method("edge_patching", metric=metric.info.describe())
    return Effects(
        tuple(edges), normalise(patched, clean_m, corr_m), "normalised", method, clean_metric=clean_m, corrupted_metric=corr_m, patched=patched,
        graph=graph,
    )


def _as_groups(model: HookedLM, pairs: Sequence[PromptPair] | Sequence[TokenGroup]) -> list[TokenGroup]:
    """``pairs`` tokenised (:func:`~circuits.probing.patching.tokenize_pairs`), or as given if already groups.

    The one input normalisation of every probing method that takes pairs or groups (edge patching, EAP,
    discovery, attribution patching, gradient sensitivity).

    Raises:
        PairError: No pairs.
    """
    if not pairs:
        raise PairError("no prompt pairs given")
    if isinstance(pairs[0], TokenGroup):
        return list(pairs)  # type: ignore[arg-type]
    return tokenize_pairs(model, pairs)  # type: ignore[arg-type]
