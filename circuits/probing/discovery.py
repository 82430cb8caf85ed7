"""Circuit discovery from edge scores, and the faithfulness and completeness of a circuit.

A *circuit* is a set of edges. It is chosen from edge scores (:mod:`circuits.probing.eap`,
:mod:`circuits.probing.edge_patching`) by the top ``n`` by magnitude (Hanna et al. 2024) or by an
absolute threshold (ACDC's ``τ``, Conmy et al. 2023, applied to the scores at once rather than greedily).

**Faithfulness** (Wang et al. 2023 §4; Conmy et al. 2023; Hanna et al. 2024): run the *clean* prompts
with every edge outside the circuit *ablated* (it carries the sender's ``corrupted``-run write, or its
``mean`` write over the clean and corrupted prompts at that position) and the circuit's edges carrying
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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool
from torch import Tensor

from circuits.metrics import Metric, rows_to_prompts
from circuits.probing.edge_patching import _as_groups, graph_of, run_with_edges, sender_writes
from circuits.probing.graph import Edge, EdgeEffects, Graph
from circuits.probing.patching import TokenGroup
from circuits.suites import PromptPair

Ablation = Literal["corrupted", "mean"]


def top_edges(scores: EdgeEffects, n: int) -> frozenset[Edge]:
    """The ``n`` edges with the largest mean score magnitude."""
    return frozenset(e for e, _ in scores.top(n))


def threshold_edges(scores: EdgeEffects, tau: float) -> frozenset[Edge]:
    """Every edge whose mean score magnitude is at least ``tau``."""
    return frozenset(e for e, v in zip(scores.edges, scores.mean_effects.abs().tolist()) if v >= tau)


@dataclass(frozen=True)
class Faithfulness:
    """How much of the behaviour a circuit carries alone, and how much is left without it.

    Attributes:
        n_edges: Edges in the circuit.
        ablation: What ablated edges carry (``corrupted`` or ``mean`` sender writes).
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


def _ablation_source(model: Any, graph: Graph, g: TokenGroup, metric: Metric, idx: Tensor, ablation: Ablation) -> Tensor:
    corr, _ = sender_writes(model, graph, g.corrupted, metric, idx)
    if ablation == "corrupted":
        return corr
    clean, _ = sender_writes(model, graph, g.clean, metric, idx)
    return torch.cat([clean, corr]).mean(0, keepdim=True).expand_as(corr)


def circuit_metrics(
    model: Any,
    pairs: Sequence[PromptPair] | Sequence[TokenGroup],
    metric: Metric,
    masks: Sequence[Bool[Tensor, "sender receiver"]],
    *,
    graph: Graph | None = None,
    ablation: Ablation = "corrupted",
) -> Tensor:
    """Mean metric (over pairs) of the clean run with every edge *outside* each mask ablated.

    Returns:
        ``[len(masks)]`` mean metric values.
    """
    graph = graph or graph_of(model)
    groups = _as_groups(model, pairs)
    n = sum(len(g.indices) for g in groups)
    out = torch.zeros(len(masks), n)
    for g in groups:
        idx = torch.tensor(g.indices)
        source = _ablation_source(model, graph, g, metric, idx, ablation)
        for i, keep in enumerate(masks):
            out[i, idx] = run_with_edges(model, graph, g.clean, metric, idx, source, graph.adjacency & ~keep)
    return rows_to_prompts(metric, out).mean(1)


def faithfulness(
    model: Any,
    pairs: Sequence[PromptPair] | Sequence[TokenGroup],
    metric: Metric,
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


def faithfulness_curve(
    model: Any,
    pairs: Sequence[PromptPair] | Sequence[TokenGroup],
    metric: Metric,
    scores: EdgeEffects,
    sizes: Sequence[int],
    *,
    ablation: Ablation = "corrupted",
) -> list[tuple[int, float]]:
    """Normalised faithfulness of the top-``n`` circuit for each ``n`` in ``sizes``.

    Returns:
        ``[(n, faithfulness)]``.
    """
    graph = scores.graph
    masks = [graph.mask(list(top_edges(scores, n))) for n in sizes]
    empty = torch.zeros_like(graph.adjacency)
    values = circuit_metrics(model, pairs, metric, [graph.adjacency, empty, *masks], graph=graph, ablation=ablation).tolist()
    full, none = values[0], values[1]
    return [(n, (v - none) / (full - none)) for n, v in zip(sizes, values[2:])]


def minimal_circuit(
    model: Any,
    pairs: Sequence[PromptPair] | Sequence[TokenGroup],
    metric: Metric,
    scores: EdgeEffects,
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
    limit = min(max_edges or len(scores.edges), len(scores.edges))
    sizes, n = [], 1
    while n < limit:
        sizes.append(n)
        n *= 2
    sizes.append(limit)
    curve = faithfulness_curve(model, pairs, metric, scores, sizes, ablation=ablation)
    chosen = next((n for n, f in curve if f >= target), sizes[-1])
    return top_edges(scores, chosen), curve
