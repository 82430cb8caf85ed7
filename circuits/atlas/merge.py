"""Combining and comparing atlases: :func:`merge` (same model, more behaviours), :func:`diff` (components)
and :func:`diff_circuits` (the edges of two circuit graphs)."""

from __future__ import annotations

from typing import NamedTuple

from circuits.atlas.graph import CircuitGraph
from circuits.atlas.schema import Atlas, AtlasError, Behaviour, Provenance


def _combine(x: Behaviour, y: Behaviour) -> Behaviour:
    """One behaviour from two records of it: equal, or equal but for a circuit that only one carries."""
    if x == y:
        return x
    if x.model_copy(update={"circuit": None}) == y.model_copy(update={"circuit": None}) and (x.circuit is None or y.circuit is None):
        return x if x.circuit is not None else y
    raise AtlasError(f"both atlases have a different behaviour {x.name!r}; rename one before merging")


def merge(a: Atlas, b: Atlas) -> Atlas:
    """Combine two atlases of the same model: the behaviours and traces of both.

    A behaviour in both must be the same record, except that one may carry a circuit graph the other
    lacks (a scan's atlas and the same atlas after ``circuits circuit``): the circuit is kept.

    Raises:
        AtlasError: Different model fingerprints or tokenization policies (one atlas records one way
            of encoding text), or a behaviour name present in both with different content (including
            two different circuits).
    """
    if a.model.fingerprint != b.model.fingerprint:
        raise AtlasError(
            f"cannot merge atlases of different models: {a.model.name} {a.model.fingerprint[:19]}… vs "
            f"{b.model.name} {b.model.fingerprint[:19]}…"
        )
    if a.model.tokenization.prepend_bos != b.model.tokenization.prepend_bos:
        raise AtlasError(
            f"cannot merge atlases measured under different tokenization: {a.model.tokenization.describe()} vs "
            f"{b.model.tokenization.describe()}; rescan one with the other's policy (--prepend-bos/--no-prepend-bos)"
        )
    behaviours = list(a.behaviours)
    for bb in b.behaviours:
        i = next((i for i, x in enumerate(behaviours) if x.name == bb.name), None)
        if i is None:
            behaviours.append(bb)
        else:
            behaviours[i] = _combine(behaviours[i], bb)
    traces = list(a.traces) + [t for t in b.traces if t not in a.traces]
    prov = Provenance(
        packages={**b.provenance.packages, **a.provenance.packages},
        command=f"merge({a.provenance.command!r}, {b.provenance.command!r})",
        seeds=sorted(set(a.provenance.seeds) | set(b.provenance.seeds)),
        git_commit=a.provenance.git_commit,
        started=a.provenance.started,
        finished=b.provenance.finished,
    )
    return Atlas(model=a.model, provenance=prov, behaviours=behaviours, traces=traces)


class ComponentChange(NamedTuple):
    """How one component moved between two atlases."""

    behaviour: str
    component: str
    mean_a: float
    mean_b: float
    flagged_a: bool
    flagged_b: bool

    @property
    def delta(self) -> float:
        """``mean_b - mean_a``."""
        return self.mean_b - self.mean_a


def diff(a: Atlas, b: Atlas, *, min_delta: float = 0.0) -> list[ComponentChange]:
    """What moved between two atlases (two runs, or an edited and an unedited model).

    Components present in both, for behaviours present in both, whose mean primary effect moved by at
    least ``min_delta`` or whose flag changed, largest move first.

    Raises:
        AtlasError: The atlases share no behaviour.
    """
    shared = [x.name for x in a.behaviours if x.name in {y.name for y in b.behaviours}]
    if not shared:
        raise AtlasError("the atlases share no behaviour to compare")
    out = []
    for name in shared:
        right = {c.id: c for c in b.behaviour(name).components}
        for c in a.behaviour(name).components:
            if c.id in right:
                d = right[c.id]
                change = ComponentChange(name, c.id, c.effect.mean, d.effect.mean, c.flagged, d.flagged)
                if abs(change.delta) >= min_delta or c.flagged != d.flagged:
                    out.append(change)
    return sorted(out, key=lambda ch: -abs(ch.delta))


class EdgeChange(NamedTuple):
    """How one edge differs between two circuits (``None``: the edge is not in that circuit)."""

    sender: str
    receiver: str
    score_a: float | None
    score_b: float | None

    @property
    def status(self) -> str:
        """``"only a"``, ``"only b"`` or ``"both"``."""
        return "both" if self.score_a is not None and self.score_b is not None else ("only a" if self.score_b is None else "only b")


def diff_circuits(a: CircuitGraph, b: CircuitGraph) -> list[EdgeChange]:
    """The edges of two circuits side by side (two runs, two methods, or before and after an edit).

    Args:
        a: A circuit (e.g. ``atlas_a.circuit("ioi")``).
        b: Another circuit of the same model's graph.

    Returns:
        Every edge in either circuit: edges in only one first (largest |score| first), then shared edges
        by largest |score change|.
    """
    left = {(e.sender, e.receiver): e.score for e in a.edges}
    right = {(e.sender, e.receiver): e.score for e in b.edges}
    changes = [EdgeChange(s, r, left.get((s, r)), right.get((s, r))) for s, r in sorted(left.keys() | right.keys())]

    def order(c: EdgeChange) -> tuple[int, float]:
        if c.status == "both":
            return (1, -abs(c.score_b - c.score_a))  # type: ignore[operator]
        return (0, -abs(c.score_a if c.score_a is not None else c.score_b))  # type: ignore[arg-type]

    return sorted(changes, key=order)
