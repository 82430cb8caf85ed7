"""Circuit graphs in the atlas: the edges that carry a behaviour, with scores, method and faithfulness.

A :class:`CircuitGraph` records what :mod:`circuits.probing.eap` / :mod:`circuits.probing.edge_patching`
scored and :mod:`circuits.probing.discovery` kept: nodes (``INPUT``, heads ``L3H2`` with their q/k/v
inputs ``L3H2.q``, MLPs ``L3MLP``, ``LOGITS``), the chosen edges ``sender → receiver`` with their mean
normalised score, the method (EAP or EAP-IG with its steps), how the rest was ablated when faithfulness
was measured (corrupted or mean writes), faithfulness and completeness, and the faithfulness curve over
the number of edges. It is one optional field of a behaviour (``Behaviour.circuit``), so atlases
written before it existed load unchanged; build one with :func:`circuit_graph`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from circuits.sites import MAX_LAYERS, ComponentError, HeadRef, MlpRef, parse_component


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class GraphNode(_Frozen):
    """A node: ``id`` as in :mod:`circuits.probing.graph` and the layer it sits in (INPUT −1, LOGITS n_layers).

    The id must match the kind and the layer (``L3H2`` is a head of layer 3, ``L3H2.q`` its query
    input, ``L3MLP`` an MLP); whether it exists in the model is checked by the atlas, which knows its shape.
    """

    id: str = Field(min_length=1, max_length=64)
    layer: StrictInt = Field(ge=-1, le=MAX_LAYERS)
    kind: Literal["input", "head", "head_input", "mlp", "logits"]

    @model_validator(mode="after")
    def _id_matches_kind(self) -> GraphNode:
        if self.id in ("INPUT", "LOGITS") or self.kind in ("input", "logits"):
            want = {"INPUT": ("input", -1), "LOGITS": ("logits", None)}.get(self.id)
            if want is None or want[0] != self.kind or (want[1] is not None and self.layer != want[1]):
                raise ValueError(f"node {self.id!r} of kind {self.kind} at layer {self.layer}: INPUT is the input at layer -1, LOGITS the logits")
            return self
        try:
            c = parse_component(self.id)
        except ComponentError as e:
            raise ValueError(f"node {e}") from None
        kind = "mlp" if isinstance(c, MlpRef) and c.pos is None else "head" if isinstance(c, HeadRef) and c.act == "z" and c.pos is None else (
            "head_input" if isinstance(c, HeadRef) and c.act in ("q", "k", "v") and c.pos is None else None)
        if kind != self.kind or c.layer != self.layer:
            raise ValueError(f"node {self.id!r} is {'a ' + kind if kind else 'not a graph node'} of layer {c.layer}, but is recorded as {self.kind} at layer {self.layer}")
        return self


class GraphEdge(_Frozen):
    """An edge ``sender → receiver`` and its mean normalised score (0 = corrupted run, 1 = clean run)."""

    sender: str = Field(min_length=1, max_length=64)
    receiver: str = Field(min_length=1, max_length=64)
    score: float


class CircuitGraph(_Frozen):
    """A circuit: the kept edges of a behaviour's edge graph, and how well they carry it.

    Attributes:
        method: ``edge_attribution_patching``, ``eap_ig`` or ``edge_patching``.
        ig_steps: Interpolation steps of EAP-IG (1 for EAP).
        selection: How the edges were chosen (``top-50``, ``threshold 0.02``, ``faithfulness >= 0.8``).
        ablation: What the edges outside the circuit carried when faithfulness was measured.
        n_edges_total: Edges of the model's whole graph.
        nodes: The nodes the kept edges touch.
        edges: The kept edges, largest |score| first.
        faithfulness: ``(m(C) − m(∅)) / (m(M) − m(∅))``.
        completeness: ``1 − (m(M∖C) − m(∅)) / (m(M) − m(∅))``.
        ratio: ``m(C) / m(M)``.
        curve: ``[(n_edges, faithfulness)]`` of top-n circuits.
        completeness_curve: ``[(n_edges, completeness)]`` of the same top-n circuits (empty in atlases
            written before it was recorded).
    """

    method: Literal["edge_attribution_patching", "eap_ig", "edge_patching"]
    ig_steps: StrictInt = Field(default=1, ge=1, le=1 << 20)
    selection: str
    ablation: Literal["corrupted", "mean", "resample"]
    n_edges_total: StrictInt = Field(ge=1, lt=2**63)
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    faithfulness: float | None = None
    completeness: float | None = None
    ratio: float | None = None
    curve: list[tuple[StrictInt, float]] = Field(default_factory=list)
    completeness_curve: list[tuple[StrictInt, float]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _edges_join_nodes(self) -> CircuitGraph:
        if (self.faithfulness is None) != (self.completeness is None):
            raise ValueError("faithfulness and completeness are measured together: give both or neither")
        if len(self.edges) > self.n_edges_total:
            raise ValueError(f"{len(self.edges)} edges kept of n_edges_total {self.n_edges_total}")
        ids = {n.id for n in self.nodes}
        if len(ids) != len(self.nodes):
            raise ValueError("duplicate node ids")
        missing = sorted({x for e in self.edges for x in (e.sender, e.receiver)} - ids)
        if missing:
            raise ValueError(f"edges name nodes that are not listed: {missing[:5]}")
        pairs = [(e.sender, e.receiver) for e in self.edges]
        if len(set(pairs)) != len(pairs):
            raise ValueError("duplicate edges")
        return self

    def into(self, node: str) -> list[GraphEdge]:
        """Edges into a node or into any of its inputs (``"L26H2"`` matches ``L26H2.q/.k/.v``)."""
        return [e for e in self.edges if e.receiver == node or e.receiver.split(".")[0] == node]

    def out_of(self, node: str) -> list[GraphEdge]:
        """Edges out of a node."""
        return [e for e in self.edges if e.sender == node]


def _node(name: str, n_layers: int) -> GraphNode:
    if name == "INPUT":
        return GraphNode(id=name, layer=-1, kind="input")
    if name == "LOGITS":
        return GraphNode(id=name, layer=n_layers, kind="logits")
    layer = int(name[1:].split("H")[0].split("M")[0])
    kind = "mlp" if name.endswith("MLP") else ("head_input" if "." in name else "head")
    return GraphNode(id=name, layer=layer, kind=kind)


def circuit_graph(
    scores: Any,
    circuit: Any,
    *,
    selection: str,
    faith: Any = None,
    curve: list[tuple[int, float]] | None = None,
    completeness_curve: list[tuple[int, float]] | None = None,
    ablation: str = "corrupted",
) -> CircuitGraph:
    """Record a discovered circuit.

    Args:
        scores: The :class:`~circuits.probing.effects.Effects` of edges the circuit was chosen from.
        circuit: The kept edges.
        selection: How they were chosen.
        faith: Its :class:`~circuits.probing.discovery.Faithfulness` (optional).
        curve: ``[(n_edges, faithfulness)]`` (optional).
        completeness_curve: ``[(n_edges, completeness)]`` (optional).
        ablation: The ablation of ``faith`` when it is not given.

    Returns:
        The graph, edges ordered by |score|.
    """
    mean = dict(zip((str(e) for e in scores.components), scores.mean_effects.tolist()))
    kept = sorted(((str(e.sender), str(e.receiver), mean[str(e)]) for e in circuit), key=lambda t: -abs(t[2]))
    n_layers = scores.graph.n_layers
    names = sorted({x for s, r, _ in kept for x in (s, r)}, key=lambda x: (_node(x, n_layers).layer, x))
    return CircuitGraph(
        method=scores.method.name,
        ig_steps=scores.method.ig_steps or 1,
        selection=selection,
        ablation=faith.ablation if faith is not None else ablation,  # type: ignore[arg-type]
        n_edges_total=len(scores.components),
        nodes=[_node(x, n_layers) for x in names],
        edges=[GraphEdge(sender=s, receiver=r, score=v) for s, r, v in kept],
        faithfulness=None if faith is None else faith.faithfulness,
        completeness=None if faith is None else faith.completeness,
        ratio=None if faith is None or not math.isfinite(faith.ratio) else faith.ratio,
        curve=list(curve or []),
        completeness_curve=list(completeness_curve or []),
    )
