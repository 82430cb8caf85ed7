"""Atlases as pandas DataFrames (one row per component × behaviour)."""

from __future__ import annotations

from typing import Any

from circuits.sites import parse_component


def atlas_dataframe(atlas: Any) -> Any:
    """One row per component × behaviour of an :class:`~circuits.atlas.schema.Atlas` (see ``Atlas.to_dataframe``)."""
    import pandas as pd

    rows = []
    for b in atlas.behaviours:
        for c in b.components:
            comp = parse_component(c.id)
            row: dict[str, Any] = {
                "behaviour": b.name,
                "behaviour_kind": b.kind,
                "component": c.id,
                "component_kind": c.kind,
                "layer": comp.layer,
                "head": getattr(comp, "head", None),
                **c.effect.model_dump(),
                "flagged": c.flagged,
            }
            row.update({f"effect:{k}": v.mean for k, v in c.effects.items()})
            row.update({f"score:{k}": v for k, v in c.scores.items()})
            rows.append(row)
    return pd.DataFrame(rows)
