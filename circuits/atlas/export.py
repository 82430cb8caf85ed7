"""Atlases as tables for reports: components with effects, CIs and p-values (raw and FDR-adjusted), and circuits as edge lists.

``circuits atlas export ATLAS --format csv|parquet|markdown`` writes them; the tables are
:func:`components_table` and :func:`edges_table` (pandas), so a notebook gets the same rows.

The adjusted p-value is the flag rule's Benjamini-Hochberg q-value (Benjamini & Hochberg 1995;
:func:`circuits.stats.fdr_q_values`) of the one-sided test "the effect is above 0", taken over the
components of one behaviour: with ~300 components per behaviour, a raw p < 0.05 alone is expected ~15
times by chance. Atlases that record it (``q_value``) give theirs; for older ones it is computed from
the stored means and p-values by the same function.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from circuits.atlas.frames import atlas_dataframe
from circuits.atlas.schema import Atlas
from circuits.io import atomic_write_bytes, atomic_write_text
from circuits.stats import fdr_q_values

ExportFormat = Literal["csv", "parquet", "markdown"]
FORMATS: tuple[ExportFormat, ...] = ("csv", "parquet", "markdown")


def components_table(atlas: Atlas) -> pd.DataFrame:
    """One row per component × behaviour: effect mean, std, n, 95% CI, raw p-value, BH-adjusted p-value, flag.

    Returns:
        :meth:`Atlas.to_dataframe` plus ``p_value_bh`` (the flag rule's Benjamini-Hochberg q-value within
        each behaviour: the recorded ``q_value``, else computed by :func:`circuits.stats.fdr_q_values`).
    """
    df = atlas_dataframe(atlas)
    if df.empty:
        return df.assign(p_value_bh=pd.Series(dtype=float))
    q = []
    for b in atlas.behaviours:
        stored = [c.q_value for c in b.components]
        if all(v is not None for v in stored):
            q.extend(stored)
        else:
            p, mean = np.array([c.effect.p_value for c in b.components]), np.array([c.effect.mean for c in b.components])
            q.extend(fdr_q_values(p, mean).tolist())
    df["p_value_bh"] = q
    return df


def edges_table(atlas: Atlas) -> pd.DataFrame:
    """One row per edge of every behaviour's recorded circuit: behaviour, sender, receiver, score (metric units)."""
    rows = [
        {"behaviour": b.name, "sender": e.sender, "receiver": e.receiver, "score": e.score}
        for b in atlas.behaviours if b.circuit is not None for e in b.circuit.edges
    ]
    return pd.DataFrame(rows, columns=["behaviour", "sender", "receiver", "score"])


def edges_path(out: Path | str) -> Path:
    """Where :func:`export_atlas` writes the circuit edges beside the components table ``out``: ``<stem>.edges<suffix>``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.edges{out.suffix}")


def _cell(v: object) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (floats to 4 significant digits, ``|`` escaped)."""
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def export_atlas(atlas: Atlas, out: Path | str, fmt: ExportFormat) -> list[Path]:
    """Write an atlas's tables: ``out`` (components) and, when it records circuits, ``<stem>.edges<suffix>``.

    Args:
        atlas: The atlas.
        out: Path of the components table (``.csv``, ``.parquet`` or ``.md``).
        fmt: ``"csv"``, ``"parquet"`` or ``"markdown"``.

    Returns:
        The files written (each atomically).

    Raises:
        ValueError: An unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    tables = [(out, components_table(atlas))]
    edges = edges_table(atlas)
    if not edges.empty:
        tables.append((edges_path(out), edges))
    for path, df in tables:
        if fmt == "csv":
            atomic_write_text(path, df.to_csv(index=False))
        elif fmt == "markdown":
            atomic_write_text(path, markdown_table(df))
        else:
            atomic_write_bytes(path, df.to_parquet(index=False))
    return [p for p, _ in tables]
