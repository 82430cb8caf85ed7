"""Circuit discovery from edge scores, and the faithfulness and completeness of a circuit.

A *circuit* is a set of edges. It is chosen from edge scores (:mod:`circuits.probing.eap`,
:mod:`circuits.probing.edge_patching`) by the top ``n`` by magnitude (Hanna et al. 2024) or by an
absolute threshold on the scores (:func:`threshold_edges`), or by pruning with exact ablations, one edge
at a time: :func:`acdc` (Conmy et al. 2023, Algorithm 1: receivers from the logits back, each incoming
edge removed if the normalised metric drops by less than ``τ``) and :func:`greedy_prune` (remove the
lowest-scored edges first while faithfulness stays at or above a target). Pruning costs one forward
pass of the pairs per edge tried, so on a real model it starts from a candidate set (the top edges by
EAP-IG), as is usual for ACDC on large graphs.

**Faithfulness** (Wang et al. 2023 §4; Conmy et al. 2023; Hanna et al. 2024): run the *clean* prompts
with every edge outside the circuit *ablated* (it carries the sender's ``corrupted``-run write, its
``mean`` write over the clean and corrupted prompts at that position, or — ``resample``, the resample
ablation of causal scrubbing, Chan et al. 2022 — its write on *another* clean prompt of the same token
length: a fixed derangement of the prompts, seeded) and the circuit's edges carrying
what the senders compute in that run (:func:`circuits.probing.edge_patching.run_with_edges`). With
``m(C)`` the mean metric of that run, ``m(M)`` the full model's (nothing ablated) and ``m(∅)`` every edge
ablated:

* ``ratio = m(C) / m(M)`` (the brief form), and
* ``faithfulness = (m(C) − m(∅)) / (m(M) − m(∅))`` (normalised: 1 = the circuit alone recovers the
  model, 0 = no better than ablating everything). With corrupted ablation ``m(∅)`` is exactly the
  corrupted run's metric.

**Completeness** (Wang et al. 2023 §4 compare ``C∖K`` with ``M∖K``; here the ``K = C`` case, as in Marks
et al. 2024): ablate the circuit's edges and keep the rest; ``completeness = 1 − (m(M∖C) − m(∅)) / (m(M) −
m(∅))``. 1 means nothing outside the circuit carries the behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool
from torch import Tensor

from circuits.metrics import Metric, MetricLike, as_metric
from circuits.model import HookedLM
from circuits.probing.edge_patching import (
    _as_groups,
    graph_of,
    run_with_edges,
    sender_writes,
)
from circuits.probing.effects import Effects
from circuits.probing.graph import Edge, Graph, graph_of_effects
from circuits.probing.patching import TokenGroup
from circuits.sites import HeadRef, MlpRef
from circuits.suites import PromptPair

Ablation = Literal["corrupted", "mean", "resample"]
#: The ablation types (what an ablated edge carries); see the module docstring.
ABLATIONS: tuple[Ablation, ...] = ("corrupted", "mean", "resample")


def top_edges(scores: Effects[Edge], n: int) -> frozenset[Edge]:
    """The ``n`` edges with the largest mean score magnitude."""
    return frozenset(e for e, _ in scores.top(n))


def threshold_edges(scores: Effects[Edge], tau: float) -> frozenset[Edge]:
    """Every edge whose mean score magnitude is at least ``tau``."""
    return frozenset(e for e, v in zip(scores.components, scores.mean_effects.abs().tolist()) if v >= tau)


@dataclass(frozen=True)
class Faithfulness:
    """How much of the behaviour a circuit carries alone, and how much is left without it.

    Attributes:
        n_edges: Edges in the circuit.
        ablation: What ablated edges carry (``corrupted``, ``mean`` or ``resample`` sender writes).
        circuit: ``m(C)``, mean metric with only the circuit's edges intact.
        full: ``m(M)``, the unablated model.
        empty: ``m(∅)``, every edge ablated.
        complement: ``m(M∖C)``, the circuit's edges ablated.
        ratio: ``m(C) / m(M)``.
        faithfulness: ``(m(C) − m(∅)) / (m(M) − m(∅))``.
        completeness: ``1 − (m(M∖C) − m(∅)) / (m(M) − m(∅))``.
    """

    n_edges: int
    ablation: Ablation
    circuit: float
    full: float
    empty: float
    complement: float
    ratio: float
    faithfulness: float
    completeness: float


def resample_order(n: int, seed: int = 0) -> Tensor:
    """A seeded derangement of ``range(n)``: prompt ``i`` takes its ablated writes from prompt ``order[i] ≠ i``.

    Raises:
        ValueError: ``n < 2`` (no other prompt to resample from).
    """
    if n < 2:
        raise ValueError(f"resample ablation needs at least 2 prompts of the same token length, got {n}; use corrupted or mean ablation, or more pairs")
    shuffled = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    order = torch.empty(n, dtype=torch.long)
    order[shuffled] = shuffled.roll(-1)  # a cycle through the shuffle: nobody keeps their own prompt
    return order


def _ablation_source(model: HookedLM, graph: Graph, g: TokenGroup, metric: Metric, idx: Tensor, ablation: Ablation) -> Tensor:
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {', '.join(ABLATIONS)}, got {ablation!r}")
    if ablation == "resample":
        order = resample_order(g.clean.shape[0])  # checked before running anything
        clean, _ = sender_writes(model, graph, g.clean, metric, idx)
        return clean[order]
    corr, _ = sender_writes(model, graph, g.corrupted, metric, idx)
    if ablation == "corrupted":
        return corr
    clean, _ = sender_writes(model, graph, g.clean, metric, idx)
    return torch.cat([clean, corr]).mean(0, keepdim=True).expand_as(corr)


class _Ablated:
    """The clean runs of some pairs with chosen edges ablated; ablation sources computed once."""

    def __init__(self, model: HookedLM, pairs: Sequence[PromptPair] | Sequence[TokenGroup], metric: MetricLike, graph: Graph, ablation: Ablation) -> None:
        self.model, self.metric, self.graph = model, as_metric(metric), graph
        self.groups = _as_groups(model, pairs)
        self.n = sum(len(g.indices) for g in self.groups)
        self.sources = [_ablation_source(model, graph, g, self.metric, torch.tensor(g.indices), ablation) for g in self.groups]

    def bounds(self) -> tuple[float, float]:
        """``(m(M), m(∅))``: the full model's mean metric and every edge ablated's.

        Raises:
            ValueError: They are equal (nothing for a circuit to recover).
        """
        full, empty = self(self.graph.adjacency), self(torch.zeros_like(self.graph.adjacency))
        if abs(full - empty) < 1e-9:
            raise ValueError("the full model and the fully ablated one have the same metric; nothing to prune for")
        return full, empty

    def __call__(self, keep: Bool[Tensor, "sender receiver"]) -> float:
        """Mean metric with every edge outside ``keep`` ablated."""
        out = torch.zeros(self.n)
        for g, source in zip(self.groups, self.sources):
            idx = torch.tensor(g.indices)
            out[idx] = run_with_edges(self.model, self.graph, g.clean, self.metric, idx, source, self.graph.adjacency & ~keep)
        return float(self.metric.to_pairs(out[None]).mean(1)[0])


def circuit_metrics(
    model: HookedLM,
    pairs: Sequence[PromptPair] | Sequence[TokenGroup],
    metric: MetricLike,
    masks: Sequence[Bool[Tensor, "sender receiver"]],
    *,
    graph: Graph | None = None,
    ablation: Ablation = "corrupted",
) -> Tensor:
    """Mean metric (over pairs) of the clean run with every edge *outside* each mask ablated.

    Returns:
        ``[len(masks)]`` mean metric values.
    """
    run = _Ablated(model, pairs, metric, graph or graph_of(model), ablation)
    return torch.tensor([run(keep) for keep in masks])


def faithfulness(
    model: HookedLM,
    pairs: Sequence[PromptPair] | Sequence[TokenGroup],
    metric: MetricLike,
    circuit: frozenset[Edge] | set[Edge],
    *,
    graph: Graph | None = None,
    ablation: Ablation = "corrupted",
) -> Faithfulness:
    """Faithfulness and completeness of ``circuit`` (see module docstring).

    Raises:
        ValueError: The full and empty runs have the same metric (nothing to recover).
    """
    graph = graph or graph_of(model)
    keep = graph.mask(list(circuit))
    empty_mask = torch.zeros_like(graph.adjacency)
    m_c, m_full, m_empty, m_comp = circuit_metrics(
        model, pairs, metric, [keep, graph.adjacency, empty_mask, graph.adjacency & ~keep], graph=graph, ablation=ablation
    ).tolist()
    span = m_full - m_empty
    if abs(span) < 1e-9:
        raise ValueError("the full model and the fully ablated one have the same metric; faithfulness is undefined")
    return Faithfulness(
        len(circuit), ablation, m_c, m_full, m_empty, m_comp, m_c / m_full if m_full else float("nan"),
        (m_c - m_empty) / span, 1 - (m_comp - m_empty) / span,
    )


def _top_n_metrics(
    model: HookedLM, pairs: Sequence[PromptPair] | Sequence[TokenGroup], metric: MetricLike, scores: Effects[Edge], sizes: Sequence[int], ablation: Ablation, complement: bool
) -> tuple[float, float, list[float]]:
    """``(m(M), m(∅), [m(C_n)] or [m(M∖C_n)])`` for the top-``n`` circuits ``C_n``."""
    graph = graph_of_effects(scores)
    keeps = [graph.mask(list(top_edges(scores, n))) for n in sizes]
    masks = [graph.adjacency & ~k for k in keeps] if complement else keeps
    empty = torch.zeros_like(graph.adjacency)
    values = circuit_metrics(model, pairs, metric, [graph.adjacency, empty, *masks], graph=graph, ablation=ablation).tolist()
    return values[0], values[1], values[2:]


def faithfulness_curve(
    model: HookedLM,
    pairs: Sequence[PromptPair] | Sequence[TokenGroup],
    metric: MetricLike,
    scores: Effects[Edge],
    sizes: Sequence[int],
    *,
    ablation: Ablation = "corrupted",
) -> list[tuple[int, float]]:
    """Normalised faithfulness of the top-``n`` circuit for each ``n`` in ``sizes``.

    Returns:
        ``[(n, faithfulness)]``.
    """
    full, none, values = _top_n_metrics(model, pairs, metric, scores, sizes, ablation, complement=False)
    return [(n, (v - none) / (full - none)) for n, v in zip(sizes, values)]


def completeness_curve(
    model: HookedLM,
    pairs: Sequence[PromptPair] | Sequence[TokenGroup],
    metric: MetricLike,
    scores: Effects[Edge],
    sizes: Sequence[int],
    *,
    ablation: Ablation = "corrupted",
) -> list[tuple[int, float]]:
    """Completeness of the top-``n`` circuit for each ``n`` in ``sizes``: ``1 − (m(M∖C_n) − m(∅)) / (m(M) − m(∅))``.

    The circuit's edges are ablated and the rest kept (Wang et al. 2023 §4; Marks et al. 2024); 1 means
    nothing outside the top ``n`` edges carries the behaviour.

    Returns:
        ``[(n, completeness)]``.
    """
    full, none, values = _top_n_metrics(model, pairs, metric, scores, sizes, ablation, complement=True)
    return [(n, 1 - (v - none) / (full - none)) for n, v in zip(sizes, values)]


def minimal_circuit(
    model: HookedLM,
    pairs: Sequence[PromptPair] | Sequence[TokenGroup],
    metric: MetricLike,
    scores: Effects[Edge],
    *,
    target: float = 0.8,
    max_edges: int | None = None,
    ablation: Ablation = "corrupted",
) -> tuple[frozenset[Edge], list[tuple[int, float]]]:
    """The smallest top-``n`` circuit (``n`` doubling from 1) whose faithfulness reaches ``target``.

    Returns:
        ``(circuit, curve)``: the circuit (the largest tried if none reaches ``target``) and the
        ``(n, faithfulness)`` points measured.
    """
    limit = min(max_edges or len(scores.components), len(scores.components))
    sizes, n = [], 1
    while n < limit:
        sizes.append(n)
        n *= 2
    sizes.append(limit)
    curve = faithfulness_curve(model, pairs, metric, scores, sizes, ablation=ablation)
    chosen = next((n for n, f in curve if f >= target), sizes[-1])
    return top_edges(scores, chosen), curve


@dataclass(frozen=True)
class Pruning:
    """A circuit found by pruning edges with exact ablations.

    Attributes:
        edges: The edges kept.
        method: ``acdc`` or ``greedy``.
        criterion: The rule (``"drop < 0.01"``, ``"faithfulness >= 0.8"``).
        ablation: What ablated edges carried.
        tried: Edges tested (one forward pass of the pairs each).
        skipped: Edges removed without a test because their receiver no longer reaches the logits.
        faithfulness: Normalised faithfulness of the kept edges, ``(m(C) − m(∅)) / (m(M) − m(∅))``.
    """

    edges: frozenset[Edge]
    method: Literal["acdc", "greedy"]
    criterion: str
    ablation: Ablation
    tried: int
    skipped: int
    faithfulness: float


def _edges(graph: Graph, keep: Tensor) -> frozenset[Edge]:
    return frozenset(Edge(graph.senders[s], graph.receivers[r]) for s, r in keep.nonzero().tolist())


def _owners(graph: Graph) -> list[list[int]]:
    """Per receiver, the senders whose computation reads it (a head's q/k/v input → that head or its GQA group)."""
    group = {}
    for layer in range(graph.n_layers):
        n_kv = sum(1 for r in graph.receivers if isinstance(r, HeadRef) and r.layer == layer and r.act == "k")
        group[layer] = graph.n_heads // max(n_kv, 1)
    index = {s: i for i, s in enumerate(graph.senders)}
    out: list[list[int]] = []
    for r in graph.receivers:
        if isinstance(r, HeadRef):
            heads = [r.head] if r.act == "q" else range(r.head, r.head + group[r.layer])
            out.append([index[HeadRef(r.layer, h)] for h in heads])
        elif isinstance(r, MlpRef):
            out.append([index[MlpRef(r.layer)]])
        else:
            out.append([])  # LOGITS
    return out


def _prune(
    run: _Ablated, keep: Tensor, order: list[tuple[int, int]], accept: Callable[[float, float], bool], current: float, *, live_only: bool
) -> tuple[Tensor, int, int, float]:
    """Try removing the edges of ``order`` one at a time (one forward each); ``accept(current, without)`` decides.

    Returns:
        ``(keep, tried, skipped, value)``: the mask, edges tested, edges dropped untested (their
        receiver's head or MLP feeds nothing kept, so the metric cannot change), and the mean metric
        of the final mask.
    """
    owners = _owners(run.graph) if live_only else None
    tried = skipped = 0
    for s, r in order:
        if not bool(keep[s, r]):
            continue
        if owners is not None and owners[r] and not bool(keep[owners[r]].any()):
            keep[s, r] = False
            skipped += 1
            continue
        keep[s, r] = False
        value = run(keep)
        tried += 1
        if accept(current, value):
            current = value
        else:
            keep[s, r] = True
    return keep, tried, skipped, current


def acdc(
    model: HookedLM,
    pairs: Sequence[PromptPair] | Sequence[TokenGroup],
    metric: MetricLike,
    *,
    tau: float,
    start: frozenset[Edge] | set[Edge] | None = None,
    graph: Graph | None = None,
    ablation: Ablation = "corrupted",
) -> Pruning:
    """ACDC (Conmy et al. 2023, "Towards Automated Circuit Discovery", Algorithm 1) with the behaviour metric.

    Receivers are visited from the logits backwards; for each, its incoming edges (latest sender first)
    are removed one at a time, and a removal is kept when the normalised metric (0 = every edge ablated,
    1 = the full model) drops by less than ``tau`` (ACDC's one-sided rule with the task metric in place of
    KL). A receiver whose head or MLP no longer writes into any kept edge loses its incoming edges without
    a test, as ACDC only visits nodes still connected to the output.

    Args:
        model: The model.
        pairs: Prompt pairs or token groups (clean runs are measured; the corrupted runs supply ablations).
        metric: Behaviour metric (larger = more of the behaviour).
        tau: Threshold on the drop of the normalised metric, e.g. ``0.01``.
        start: Candidate edges (default: every edge of the graph); on a real model pass the top edges by EAP-IG.
        graph: The model's edge graph (default: built).
        ablation: What removed edges carry: the corrupted run's sender writes, their mean over both runs, or another clean prompt's (``resample``).

    Returns:
        The pruned circuit.

    Raises:
        ValueError: ``tau < 0``, or the full model and the fully ablated one have the same metric.
    """
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    graph = graph or graph_of(model)
    run = _Ablated(model, pairs, metric, graph, ablation)
    full, empty = run.bounds()
    keep = graph.adjacency.clone() if start is None else graph.mask(list(start))
    order = [(s, r) for r in reversed(range(len(graph.receivers))) for s in reversed(range(len(graph.senders))) if bool(graph.adjacency[s, r])]
    start_value = full if start is None else run(keep)
    keep, tried, skipped, value = _prune(run, keep, order, lambda cur, new: (cur - new) / (full - empty) < tau, start_value, live_only=True)
    return Pruning(_edges(graph, keep), "acdc", f"drop < {tau:g}", ablation, tried, skipped, (value - empty) / (full - empty))


def greedy_prune(
    model: HookedLM,
    pairs: Sequence[PromptPair] | Sequence[TokenGroup],
    metric: MetricLike,
    scores: Effects[Edge],
    *,
    target: float = 0.8,
    start: frozenset[Edge] | set[Edge] | None = None,
    ablation: Ablation = "corrupted",
) -> Pruning:
    """Greedy pruning to a faithfulness target: drop the lowest-|score| edges first while faithfulness stays ≥ ``target``.

    Starts from ``start`` (default: the smallest top-n circuit of :func:`minimal_circuit` that reaches
    ``target``) and tries every edge of it once, weakest first; each removal is kept if the normalised
    faithfulness of what remains is still at least ``target``. The result is a circuit at the target
    with no edge whose single removal keeps it there (among those tried in that order), usually far
    smaller than the top-n circuit (Conmy et al. 2023 §3 and Hanna et al. 2024 compare such circuits).

    Args:
        model, pairs, metric: As for :func:`acdc`.
        scores: Edge scores (EAP, EAP-IG or exact) that order the edges.
        target: Faithfulness to keep, in (0, 1].
        start: Edges to prune from (default: the minimal top-n circuit at ``target``).
        ablation: What removed edges carry.

    Returns:
        The pruned circuit (if ``start`` does not reach ``target``, it is returned unpruned, with its faithfulness).

    Raises:
        ValueError: ``target`` outside (0, 1], or the full and fully ablated metrics are equal.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target must be in (0, 1], got {target}")
    graph = graph_of_effects(scores)
    if start is None:
        start, _ = minimal_circuit(model, pairs, metric, scores, target=target, ablation=ablation)
    run = _Ablated(model, pairs, metric, graph, ablation)
    full, empty = run.bounds()
    keep = graph.mask(list(start))
    magnitude = dict(zip((str(e) for e in scores.components), scores.mean_effects.abs().tolist()))
    order = [graph.index(e) for e in sorted(start, key=lambda e: (magnitude.get(str(e), 0.0), str(e)))]
    value, tried = run(keep), 0
    if (value - empty) / (full - empty) >= target:
        keep, tried, _, value = _prune(run, keep, order, lambda cur, new: (new - empty) / (full - empty) >= target, value, live_only=False)
    return Pruning(_edges(graph, keep), "greedy", f"faithfulness >= {target:g}", ablation, tried, 0, (value - empty) / (full - empty))
