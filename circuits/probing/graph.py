"""The computational graph over components: residual writers → residual readers, and edge scores.

As in ACDC (Conmy et al. 2023), EAP-IG (Hanna et al. 2024, ``graph.py``) and auto-circuit (Miller et al.
2024, ``types.py``), the residual stream is cut into one edge per (writer, reader) pair:

* **senders** (what writes into the residual stream): the input embeddings (``INPUT``: the residual
  entering block 0, learned positions included), every head's output ``z_h W_O^h`` (``L3H2``) and every
  MLP's output (``L3MLP``);
* **receivers** (what reads it): every head's query, key and value input (``L3H2.q``; under grouped-query
  attention one key and one value input per key/value head, named by the group's first query head, as
  :func:`circuits.sites.kv_head_of` maps ``L3H2.k``), every MLP's input (``L3MLP``) and the final
  residual stream read by the unembedding (``LOGITS``).

An edge ``u → v`` exists when ``u`` is computed before ``v`` reads: heads of layer ``L`` feed readers in
layers ``> L`` and the MLP of layer ``L`` (not in parallel blocks, where the MLP reads the same residual
as attention); MLP ``L`` feeds layers ``> L``; everything feeds ``LOGITS``. Edge ids are
``"L0H1->L1H2.k"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from circuits.probing.effects import Effects
from circuits.sites import HeadRef, MlpRef, hook_name


@dataclass(frozen=True, order=True)
class Endpoint:
    """The embeddings (``INPUT``) or the unembedding's read of the final residual (``LOGITS``)."""

    name: str

    def __str__(self) -> str:
        return self.name


INPUT = Endpoint("INPUT")
LOGITS = Endpoint("LOGITS")
#: A node of the graph: a sender (``INPUT``, ``HeadRef`` z, ``MlpRef``) or a receiver (``HeadRef`` q/k/v,
#: ``MlpRef``, ``LOGITS``).
Node: TypeAlias = Endpoint | HeadRef | MlpRef


@dataclass(frozen=True)
class Edge:
    """One edge: ``sender``'s write into the residual stream as read by ``receiver``."""

    sender: Node
    receiver: Node

    def __str__(self) -> str:
        return f"{self.sender}->{self.receiver}"


def node_layer(node: Node, n_layers: int) -> int:
    """The layer a node sits in (``INPUT`` −1, ``LOGITS`` ``n_layers``)."""
    if isinstance(node, Endpoint):
        return -1 if node == INPUT else n_layers
    return node.layer


@dataclass(frozen=True)
class ReaderHook:
    """Receivers read at one hook point: which receiver columns and which head slot of the activation.

    Attributes:
        name: Hook name (``blocks.3.hook_q_input``, ``blocks.3.hook_mlp_in``, final ``hook_resid_post``).
        receivers: Receiver indices (into :attr:`Graph.receivers`), in slot order.
        per_head: The activation has a head axis (``[batch, pos, head, d_model]``); else ``[batch, pos, d_model]``.
    """

    name: str
    receivers: tuple[int, ...]
    per_head: bool


@dataclass(frozen=True)
class Graph:
    """Senders, receivers, which pairs are edges, and where each is read or written.

    Attributes:
        senders: Residual writers, in forward order (``INPUT``, then per layer its heads, then its MLP).
        receivers: Residual readers, in forward order.
        adjacency: ``[sender, receiver]`` whether the pair is an edge.
        readers: The hook points the receivers are read at, in forward order.
        n_layers: Blocks.
        n_heads: Query heads per block.
        has_mlp: Blocks have MLPs.
    """

    senders: tuple[Node, ...]
    receivers: tuple[Node, ...]
    adjacency: Bool[Tensor, "sender receiver"]
    readers: tuple[ReaderHook, ...]
    n_layers: int
    n_heads: int
    has_mlp: bool
    _edge_index: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_edges(self) -> int:
        """Number of edges."""
        return int(self.adjacency.sum())

    def edges(self) -> list[Edge]:
        """Every edge, sender-major."""
        return [Edge(self.senders[s], self.receivers[r]) for s, r in self.adjacency.nonzero().tolist()]

    def index(self, edge: Edge | str) -> tuple[int, int]:
        """``(sender index, receiver index)`` of an edge (or its id).

        Raises:
            KeyError: Not an edge of this graph.
        """
        if not self._edge_index:
            self._edge_index.update({str(e): (s, r) for e, (s, r) in zip(self.edges(), self.adjacency.nonzero().tolist())})
        key = str(edge)
        if key not in self._edge_index:
            raise KeyError(f"{key!r} is not an edge of this graph (e.g. {next(iter(self._edge_index))!r})")
        return self._edge_index[key]

    def mask(self, edges: list[Edge] | list[str] | set[Edge] | frozenset[Edge]) -> Bool[Tensor, "sender receiver"]:
        """A ``[sender, receiver]`` mask with exactly ``edges`` set."""
        out = torch.zeros_like(self.adjacency)
        for e in edges:
            out[self.index(e)] = True
        return out


def build_graph(n_layers: int, n_heads: int, n_kv_heads: int, *, has_mlp: bool = True, parallel: bool = False) -> Graph:
    """The edge graph of a model of this shape (see module docstring).

    Args:
        n_layers: Blocks.
        n_heads: Query heads per block.
        n_kv_heads: Key/value heads per block.
        has_mlp: Blocks have MLPs.
        parallel: Attention and MLP read the same residual.

    Returns:
        The graph.
    """
    group = n_heads // n_kv_heads
    senders: list[Node] = [INPUT]
    receivers: list[Node] = []
    readers: list[ReaderHook] = []
    written_before: list[int] = []  # per receiver: how many senders precede it
    for layer in range(n_layers):
        for act, n, step in (("q", n_heads, 1), ("k", n_kv_heads, group), ("v", n_kv_heads, group)):
            idx = tuple(range(len(receivers), len(receivers) + n))
            receivers += [HeadRef(layer, h * step, act) for h in range(n)]
            written_before += [len(senders)] * n
            readers.append(ReaderHook(hook_name(f"{act}_input", layer), idx, True))
        heads = [HeadRef(layer, h) for h in range(n_heads)]
        if has_mlp:
            if not parallel:
                senders += heads
            readers.append(ReaderHook(hook_name("mlp_in", layer), (len(receivers),), False))
            receivers.append(MlpRef(layer))
            written_before.append(len(senders))
            senders += ([] if not parallel else heads) + [MlpRef(layer)]
        else:
            senders += heads
    readers.append(ReaderHook(hook_name("resid_post", n_layers - 1), (len(receivers),), False))
    receivers.append(LOGITS)
    written_before.append(len(senders))
    adjacency = torch.arange(len(senders))[:, None] < torch.tensor(written_before)[None, :]
    return Graph(tuple(senders), tuple(receivers), adjacency, tuple(readers), n_layers, n_heads, has_mlp)


def graph_of_effects(effects: Effects[Edge]) -> Graph:
    """The graph an edge :class:`~circuits.probing.effects.Effects` was measured on.

    Raises:
        ValueError: Effects of nodes (no graph recorded).
    """
    if not isinstance(effects.graph, Graph):
        raise ValueError(f"{effects.method.name} effects carry no edge graph: they are not edge effects")
    return effects.graph


def edge_matrix(effects: Effects[Edge]) -> Float[Tensor, "sender receiver"]:
    """Mean edge effects as a ``[sender, receiver]`` matrix of their graph (0 where there is no edge).

    Raises:
        ValueError: Effects of nodes.
    """
    graph = graph_of_effects(effects)
    out = torch.zeros(graph.adjacency.shape)
    for e, v in zip(effects.components, effects.mean_effects.tolist()):
        out[graph.index(e)] = v
    return out
