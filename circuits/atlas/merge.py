"""Combining and comparing atlases: :func:`merge` (same model, more behaviours) and :func:`diff`."""

from __future__ import annotations

from typing import NamedTuple

from circuits.atlas.schema import Atlas, AtlasError, Provenance


def merge(a: Atlas, b: Atlas) -> Atlas:
    """Combine two atlases of the same model: the behaviours and traces of both.

    Raises:
        AtlasError: Different model fingerprints, or a behaviour name present in both with different content.
    """
    if a.model.fingerprint != b.model.fingerprint:
        raise AtlasError(
            f"cannot merge atlases of different models: {a.model.name} {a.model.fingerprint[:19]}… vs "
            f"{b.model.name} {b.model.fingerprint[:19]}…"
        )
    behaviours = list(a.behaviours)
    for bb in b.behaviours:
        same = [x for x in behaviours if x.name == bb.name]
        if same and same[0] != bb:
            raise AtlasError(f"both atlases have a different behaviour {bb.name!r}; rename one before merging")
        if not same:
            behaviours.append(bb)
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
