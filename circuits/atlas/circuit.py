"""Circuits as graphs: EAP-IG edge scores → the smallest faithful circuit (optionally pruned) → a recorded :class:`CircuitGraph`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from circuits.atlas.graph import CircuitGraph, circuit_graph
from circuits.model import HookedLM
from circuits.probing.discovery import (
    ABLATIONS,
    acdc,
    completeness_curve,
    faithfulness,
    faithfulness_curve,
    greedy_prune,
    minimal_circuit,
)
from circuits.probing.discovery import top_edges as choose_top
from circuits.probing.eap import edge_attribution
from circuits.probing.pairs import prepare
from circuits.probing.patching import TokenGroup
from circuits.suites import SplitName, Suite


def find_circuit(
    model: HookedLM,
    suite: Suite,
    *,
    split: SplitName = "build",
    max_pairs: int | None = None,
    ig_steps: int = 5,
    top_edges: int | None = None,
    target: float = 0.8,
    max_edges: int | None = None,
    prune: str | None = None,
    tau: float = 0.01,
    ablation: str = "corrupted",
    batch_size: int = 4,
    progress: bool = True,
) -> CircuitGraph:
    """Score every edge of a behaviour with EAP-IG, choose a circuit, and record it with its faithfulness.

    EAP-IG (Hanna et al. 2024) over the suite's pairs, then :func:`circuit_from_scores`.

    Args:
        model: The model (an architecture with per-head residual inputs, :func:`circuits.model.edge_support`).
        suite: The behaviour (bound to the model).
        split: Suite split.
        max_pairs: Pairs per template or group.
        ig_steps: EAP-IG interpolation steps (1: EAP).
        top_edges, target, max_edges, prune, tau, ablation: As for :func:`circuit_from_scores`.
        batch_size: Prompts per EAP-IG forward/backward.
        progress: Show progress bars.

    Returns:
        The circuit graph.

    Raises:
        PairError, SuiteError: Bad pairs.
        UnsupportedArchitecture: No per-head residual inputs for this family.
        ValueError: Bad options, or a behaviour with equal clean and fully ablated metrics.
    """

    if prune not in (None, "greedy", "acdc"):
        raise ValueError(f"prune must be greedy or acdc, got {prune!r}")
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {', '.join(ABLATIONS)}, got {ablation!r}")
    prepared = prepare(model, suite.pairs(split, max_pairs=max_pairs), suite.metric)
    scores = edge_attribution(model, prepared.groups, prepared.metric, ig_steps=ig_steps, batch_size=batch_size, progress=progress)
    return circuit_from_scores(model, prepared.groups, prepared.metric, scores, top_edges=top_edges, target=target, max_edges=max_edges,
                               prune=prune, tau=tau, ablation=ablation)


def circuit_from_scores(
    model: HookedLM,
    groups: Sequence[TokenGroup],
    metric: Any,
    scores: Any,
    *,
    top_edges: int | None = None,
    target: float = 0.8,
    max_edges: int | None = None,
    prune: str | None = None,
    tau: float = 0.01,
    ablation: str = "corrupted",
) -> CircuitGraph:
    """Choose a circuit from edge scores, measure its faithfulness, and record it.

    The circuit is the top ``top_edges`` edges by |score| when given; otherwise the smallest top-n
    circuit (``n`` doubling) whose faithfulness reaches ``target`` (Hanna et al. 2024's procedure), then
    optionally pruned edge by edge with exact ablations (``prune``: ``"greedy"`` keeps faithfulness ≥
    ``target``; ``"acdc"`` removes edges whose removal lowers the normalised metric by < ``tau``; Conmy
    et al. 2023). Pruning costs one forward pass of the pairs per edge of the starting circuit.

    Args:
        model: The model.
        groups: The token groups the scores were measured on.
        metric: Their behaviour metric.
        scores: :class:`~circuits.probing.effects.Effects` of edges (EAP, EAP-IG or exact edge patching).
        top_edges: Keep exactly this many edges (skips the faithfulness search).
        target: Faithfulness the circuit must reach, in (0, 1].
        max_edges: Largest top-n circuit tried (default: every edge).
        prune: ``None``, ``"greedy"`` or ``"acdc"``.
        tau: ACDC's threshold.
        ablation: What edges outside the circuit carry: ``corrupted``, ``mean`` or ``resample`` writes.

    Returns:
        The circuit graph, with faithfulness, completeness, and the faithfulness and completeness curves.

    Raises:
        ValueError: The full and fully ablated metrics are equal.
    """

    if top_edges is not None:
        kept = choose_top(scores, top_edges)
        selection = f"top-{top_edges}"
        sizes = sorted({min(n, len(scores.components)) for n in (1, 10, 100, 1000, 10000, top_edges, len(scores.components))})
        curve = faithfulness_curve(model, groups, metric, scores, sizes, ablation=ablation)  # type: ignore[arg-type]
    else:
        kept, curve = minimal_circuit(model, groups, metric, scores, target=target, max_edges=max_edges, ablation=ablation)  # type: ignore[arg-type]
        selection = f"smallest top-n with faithfulness >= {target:g} (n doubling)"
    if prune == "greedy":
        p = greedy_prune(model, groups, metric, scores, target=target, start=kept, ablation=ablation)  # type: ignore[arg-type]
        kept, selection = p.edges, f"{selection}, then greedy pruning ({p.tried} edges tried)"
    elif prune == "acdc":
        p = acdc(model, groups, metric, tau=tau, start=kept, graph=scores.graph, ablation=ablation)  # type: ignore[arg-type]
        kept, selection = p.edges, f"{selection}, then ACDC (tau {tau:g}; {p.tried} edges tried)"
    faith = faithfulness(model, groups, metric, kept, graph=scores.graph, ablation=ablation)  # type: ignore[arg-type]
    complete = completeness_curve(model, groups, metric, scores, [n for n, _ in curve], ablation=ablation)  # type: ignore[arg-type]
    return circuit_graph(scores, kept, selection=selection, faith=faith, curve=curve, completeness_curve=complete)
