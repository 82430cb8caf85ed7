"""Render an atlas as one self-contained HTML page with plotly figures.

Per behaviour: a layer × head heatmap of the primary effect, a table of MLP (and neuron) effects,
the flagged components with their statistics and scores; then every causal-tracing grid (layer ×
token) and the provenance. plotly.js is inlined once, so the file opens offline.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from circuits.atlas.schema import Atlas, Behaviour, TraceRecord
from circuits.io import atomic_write_text
from circuits.sites import HeadRef, parse_component

_CSS = """
body{font-family:system-ui,-apple-system,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:0} .sub{color:#666;margin-top:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2.5rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0} td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left} .flag{color:#b00;font-weight:600}
.kv td{text-align:left} code{background:#f4f4f4;padding:0 .2rem}
"""


def head_matrix(atlas: Atlas, behaviour: Behaviour) -> np.ndarray:
    """Primary mean effect of every head as a ``[layer, head]`` array (NaN where not probed)."""
    grid = np.full((atlas.model.n_layers, atlas.model.n_heads), np.nan)
    for c in behaviour.components:
        comp = parse_component(c.id)
        if isinstance(comp, HeadRef) and comp.act == "z" and comp.pos is None:
            grid[comp.layer, comp.head] = c.effect.mean
    return grid


def _heatmap(atlas: Atlas, b: Behaviour) -> go.Figure:
    z = head_matrix(atlas, b)
    bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"H{h}" for h in range(z.shape[1])],
            y=[f"L{l}" for l in range(z.shape[0])],
            colorscale="RdBu_r",
            zmid=0,
            zmin=-bound,
            zmax=bound,
            hovertemplate="L%{y} %{x}: %{z:.4f}<extra></extra>",
            colorbar={"title": "effect"},
        )
    )
    fig.update_layout(
        title=f"{b.name}: head effects",
        height=140 + 18 * z.shape[0],
        width=620,
        yaxis={"autorange": "reversed"},
        margin={"l": 50, "r": 20, "t": 50, "b": 30},
    )
    return fig


def _trace_figure(t: TraceRecord) -> go.Figure:
    z = np.asarray(t.probs) - t.corrupted_prob
    labels = [f"{i}:{tok!r}{'*' if i in t.subject_positions else ''}" for i, tok in enumerate(t.tokens)]
    fig = go.Figure(
        go.Heatmap(z=z, x=labels, y=[f"L{l}" for l in range(z.shape[0])], colorscale="Purples", colorbar={"title": "IE"},
                   hovertemplate="%{y} %{x}: %{z:.3f}<extra></extra>")
    )
    sev = ", MLPs severed" if t.severed else ""
    fig.update_layout(
        title=f"causal tracing ({t.kind}, window {t.window}{sev}): p({t.target!r}) clean {t.clean_prob:.3f}, corrupted {t.corrupted_prob:.3f}",
        height=140 + 14 * z.shape[0],
        width=900,
        yaxis={"autorange": "reversed"},
        margin={"l": 50, "r": 20, "t": 50, "b": 80},
    )
    return fig


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _behaviour_section(atlas: Atlas, b: Behaviour, plotly_js: bool) -> str:
    parts = [f"<h2>{html.escape(b.name)} <small>({b.kind})</small></h2>"]
    info = [
        ["suite", f"{html.escape(b.suite.name)} ({b.suite.split} split, {b.suite.n_pairs} pairs, <code>{b.suite.content_hash[:19]}…</code>)"],
        ["metric", html.escape(b.metric)],
        ["clean / corrupted metric", f"{b.clean_metric_mean:.4f} / {b.corrupted_metric_mean:.4f}"],
        ["methods", ", ".join(html.escape(m.key) for m in b.methods)],
        ["flag rule", html.escape(b.flag_rule)],
        *[[html.escape(k), f"{v:.4g}"] for k, v in b.summary.items()],
    ]
    parts.append("<table class='kv'>" + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in info) + "</table>")
    # Stable div ids keep the report byte-for-byte reproducible.
    parts.append(_heatmap(atlas, b).to_html(full_html=False, include_plotlyjs="inline" if plotly_js else False, div_id=f"heads-{b.name}"))
    score_names = sorted({k for c in b.components for k in c.scores})
    rows = []
    for c in b.top(25):
        e = c.effect
        flag = "<span class='flag'>yes</span>" if c.flagged else ""
        rows.append([c.id, c.kind, f"{e.mean:+.4f}", f"[{e.ci_low:+.4f}, {e.ci_high:+.4f}]", f"{e.p_value:.1e}", flag,
                     *[f"{c.scores[s]:+.4f}" if s in c.scores else "" for s in score_names]])
    parts.append("<h3>Top components</h3>" + _table(["component", "kind", "mean", "95% CI", "p", "flagged", *score_names], rows))
    mlps = [c for c in b.components if c.kind in ("mlp", "neuron")]
    if mlps:
        mrows = [[c.id, f"{c.effect.mean:+.4f}", f"[{c.effect.ci_low:+.4f}, {c.effect.ci_high:+.4f}]", "yes" if c.flagged else ""]
                 for c in sorted(mlps, key=lambda c: c.layer)]
        parts.append("<h3>MLP layers and neurons</h3>" + _table(["component", "mean", "95% CI", "flagged"], mrows))
    return "\n".join(parts)


def render(atlas: Atlas) -> str:
    """The report as an HTML string (self-contained)."""
    m = atlas.model
    body = [
        f"<h1>Circuit atlas: {html.escape(m.name)}</h1>",
        f"<p class='sub'>{m.n_layers} layers × {m.n_heads} heads, d_model {m.d_model}, d_mlp {m.d_mlp}; "
        f"weights <code>{m.fingerprint[:23]}…</code>; schema {atlas.schema_version}</p>",
        "<h2>Flagged components</h2>",
        _table(
            ["behaviour", "component", "mean effect", "95% CI"],
            [[html.escape(b.name), c.id, f"{c.effect.mean:+.4f}", f"[{c.effect.ci_low:+.4f}, {c.effect.ci_high:+.4f}]"]
             for b in atlas.behaviours for c in b.flagged()[:15]],
        ),
    ]
    for i, b in enumerate(atlas.behaviours):
        body.append(_behaviour_section(atlas, b, plotly_js=(i == 0)))
    if atlas.traces:
        body.append("<h2>Causal tracing</h2>")
        for i, t in enumerate(atlas.traces):
            body.append(f"<p>{html.escape(t.prompt)} → {html.escape(t.target)!s}; subject {html.escape(t.subject)!s} (tokens marked *), "
                        f"{t.n_samples} noise draws, σ = {t.noise_std:.3f}</p>")
            body.append(_trace_figure(t).to_html(full_html=False, include_plotlyjs=False, div_id=f"trace-{i}"))
    p = atlas.provenance
    prov = [["command", html.escape(p.command)], ["git commit", html.escape(p.git_commit or "-")], ["seeds", str(p.seeds)],
            ["started / finished", f"{p.started or '-'} / {p.finished or '-'}"],
            *[[html.escape(k), html.escape(v)] for k, v in sorted(p.packages.items())]]
    body.append("<h2>Provenance</h2><table class='kv'>" + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in prov) + "</table>")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>Circuit atlas: {html.escape(m.name)}</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>"


def write_report(atlas: Atlas, path: Path | str) -> Path:
    """Render and write the report atomically.

    Returns:
        The path written.
    """
    return atomic_write_text(path, render(atlas))
