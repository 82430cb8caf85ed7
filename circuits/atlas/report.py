"""Render an atlas as one self-contained HTML page with plotly figures.

The page opens with figures: which components serve several behaviours (each behaviour's effects
scaled by its largest, flagged ones marked), then per behaviour a layer × head heatmap and a layer-by-layer
MLP chart of the primary effect (95% CI, p-value and Benjamini–Hochberg q on hover; flagged components
outlined) and its circuit graph; the tables follow (top components with their statistics and scores,
every MLP and neuron), then every causal-tracing grid (layer × token) and the provenance. plotly.js is
inlined once, so the file opens offline.

Atlases are shared and merged, so every string in one is data, never markup: the page is rendered by
a Jinja2 template with autoescaping; the figures get div ids made here (``heads-0``, ``trace-0``),
never from the atlas; their text (titles, tick labels) is HTML-escaped for plotly.js, which reads a
subset of HTML in labels; and plotly writes figure data as JSON with ``<``, ``>`` and ``/`` escaped,
so no string can close the script it sits in.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from jinja2 import Environment
from markupsafe import Markup

from circuits.atlas.graph_report import render_circuit_graph
from circuits.atlas.schema import Atlas, Behaviour, TraceRecord
from circuits.io import atomic_write_text
from circuits.sites import HeadRef, parse_component

_CSS = """
body{font-family:system-ui,-apple-system,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:0} .sub{color:#666;margin-top:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2.5rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0} td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left} .flag{color:#b00;font-weight:600}
.kv td{text-align:left} code{background:#f4f4f4;padding:0 .2rem} .figs{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}
"""


def head_matrix(atlas: Atlas, behaviour: Behaviour) -> np.ndarray:
    """Primary mean effect of every head as a ``[layer, head]`` array (NaN where not probed)."""
    return _head_stats(atlas, behaviour)[..., 0]


def _head_stats(atlas: Atlas, b: Behaviour) -> np.ndarray:
    """``[layer, head, 6]``: mean, CI low, CI high, p, q (NaN where unrecorded) and flagged (0/1) of every head; NaN where not probed."""
    grid = np.full((atlas.model.n_layers, atlas.model.n_heads, 6), np.nan)
    for c in b.components:
        comp = parse_component(c.id)
        if isinstance(comp, HeadRef) and comp.act == "z" and comp.pos is None:
            e = c.effect
            grid[comp.layer, comp.head] = (e.mean, e.ci_low, e.ci_high, e.p_value, np.nan if c.q_value is None else c.q_value, float(c.flagged))
    return grid


def _hover(value: str) -> str:
    """Hover text of an effect plotted on axis ``value`` (``"z"``, ``"y"``), its customdata ``[CI low, CI high, p, q]``."""
    return f"mean %{{{value}:+.4f}}<br>95% CI [%{{customdata[0]:+.4f}}, %{{customdata[1]:+.4f}}]<br>p %{{customdata[2]:.2g}}, q %{{customdata[3]:.2g}}<extra></extra>"


def _heatmap(atlas: Atlas, b: Behaviour) -> go.Figure:
    stats = _head_stats(atlas, b)
    z = stats[..., 0]
    bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"H{h}" for h in range(z.shape[1])],
            y=[f"L{l}" for l in range(z.shape[0])],
            customdata=stats[..., 1:5],
            colorscale="RdBu_r",
            zmid=0,
            zmin=-bound,
            zmax=bound,
            hovertemplate="%{y}%{x}: " + _hover("z"),
            colorbar={"title": "effect"},
        )
    )
    flagged = np.argwhere(stats[..., 5] == 1)
    if len(flagged):
        fig.add_trace(go.Scatter(
            x=[f"H{h}" for _, h in flagged], y=[f"L{l}" for l, _ in flagged], mode="markers", hoverinfo="skip", name="flagged",
            marker={"symbol": "square-open", "size": 14, "color": "black", "line": {"width": 2}}, showlegend=False,
        ))
    fig.update_layout(
        title=html.escape(f"{b.name}: attention heads (flagged outlined)"),
        height=160 + 18 * z.shape[0],
        width=520,
        yaxis={"autorange": "reversed"},
        margin={"l": 50, "r": 20, "t": 50, "b": 30},
    )
    return fig


def _mlp_figure(atlas: Atlas, b: Behaviour) -> go.Figure | None:
    """The MLP layers' primary effect by layer, with 95% CI error bars; flagged ones red (``None`` if no MLP was probed)."""
    mlps = sorted((c for c in b.components if c.kind == "mlp"), key=lambda c: c.layer)
    if not mlps:
        return None
    e = [c.effect for c in mlps]
    fig = go.Figure(go.Bar(
        x=[f"L{c.layer}" for c in mlps], y=[x.mean for x in e],
        error_y={"type": "data", "symmetric": False, "array": [x.ci_high - x.mean for x in e], "arrayminus": [x.mean - x.ci_low for x in e]},
        marker={"color": ["#b2182b" if c.flagged else "#c9c9c9" for c in mlps]},
        customdata=[[x.ci_low, x.ci_high, x.p_value, np.nan if c.q_value is None else c.q_value] for c, x in zip(mlps, e)],
        hovertemplate="%{x} MLP: " + _hover("y"),
    ))
    fig.update_layout(
        title=html.escape(f"{b.name}: MLP layers (flagged in red)"), height=320, width=540,
        margin={"l": 50, "r": 20, "t": 50, "b": 40}, yaxis={"title": "effect"},
    )
    return fig


def shared_components(atlas: Atlas, top: int = 30) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Which components serve several behaviours: the components flagged in at least one behaviour.

    Each behaviour's mean effects are divided by its largest absolute mean effect, so behaviours measured
    in different units (normalised logit differences, nats) share one scale.

    Returns:
        ``(components, behaviours, scaled [component, behaviour], flagged [component, behaviour])``: the
        components flagged in the most behaviours first (then by largest scaled effect), at most ``top``.
    """
    names = [b.name for b in atlas.behaviours]
    scaled: dict[str, np.ndarray] = {}
    flags: dict[str, np.ndarray] = {}
    for j, b in enumerate(atlas.behaviours):
        peak = max((abs(c.effect.mean) for c in b.components), default=0.0) or 1.0
        for c in b.components:
            scaled.setdefault(c.id, np.full(len(names), np.nan))[j] = c.effect.mean / peak
            flags.setdefault(c.id, np.zeros(len(names)))[j] = float(c.flagged)
    ids = [i for i in scaled if flags[i].any()]
    ids.sort(key=lambda i: (-flags[i].sum(), -np.nanmax(np.abs(scaled[i]))))
    ids = ids[:top]
    return ids, names, np.array([scaled[i] for i in ids]).reshape(len(ids), len(names)), np.array([flags[i] for i in ids]).reshape(len(ids), len(names))


def _shared_figure(atlas: Atlas) -> go.Figure | None:
    ids, names, z, flags = shared_components(atlas)
    if len(names) < 2 or not ids:
        return None
    fig = go.Figure(go.Heatmap(
        z=z, x=[html.escape(n) for n in names], y=ids, colorscale="RdBu_r", zmid=0, zmin=-1, zmax=1,
        text=np.where(flags == 1, "●", ""), texttemplate="%{text}", customdata=flags,
        hovertemplate="%{y} on %{x}: %{z:+.3f} of the behaviour's largest effect<extra></extra>", colorbar={"title": "scaled effect"},
    ))
    fig.update_layout(
        title="Components across behaviours (● flagged; effects scaled by each behaviour's largest)",
        height=160 + 20 * len(ids), width=160 + 110 * len(names), yaxis={"autorange": "reversed"},
        margin={"l": 70, "r": 20, "t": 50, "b": 90},
    )
    return fig


def _trace_figure(t: TraceRecord) -> go.Figure:
    z = np.asarray(t.probs) - t.corrupted_prob
    labels = [html.escape(f"{i}:{tok!r}{'*' if i in t.subject_positions else ''}") for i, tok in enumerate(t.tokens)]
    fig = go.Figure(
        go.Heatmap(z=z, x=labels, y=[f"L{l}" for l in range(z.shape[0])], colorscale="Purples", colorbar={"title": "IE"},
                   hovertemplate="%{y} %{x}: %{z:.3f}<extra></extra>")
    )
    sev = ", MLPs severed" if t.severed else ""
    fig.update_layout(
        title=html.escape(f"causal tracing ({t.kind}, window {t.window}{sev}): p({t.target!r}) clean {t.clean_prob:.3f}, corrupted {t.corrupted_prob:.3f}"),
        height=140 + 14 * z.shape[0],
        width=900,
        yaxis={"autorange": "reversed"},
        margin={"l": 50, "r": 20, "t": 50, "b": 80},
    )
    return fig


_TEMPLATE = """<!doctype html><html><head><meta charset='utf-8'><title>Circuit atlas: {{ m.name }}</title><style>{{ css }}</style>{{ plotly }}</head><body>
{%- macro table(headers, rows, cls="") -%}
<table{% if cls %} class='{{ cls }}'{% endif %}>{% if headers %}<tr>{% for h in headers %}<th>{{ h }}</th>{% endfor %}</tr>{% endif %}
{%- for r in rows %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{%- endmacro -%}
<h1>Circuit atlas: {{ m.name }}</h1><p class='sub'>{{ m.n_layers }} layers × {{ m.n_heads }} heads, d_model {{ m.d_model }}, \
d_mlp {{ m.d_mlp }}; weights <code>{{ m.fingerprint[:23] }}…</code>; schema {{ schema_version }}</p>
<p class='sub'>Behaviours: {% for s in sections %}<a href='#b-{{ loop.index0 }}'>{{ s.name }}</a>{% if not loop.last %} · {% endif %}{% endfor %}</p>
{%- if shared %}
<h2>Across behaviours</h2>{{ shared }}
{%- endif %}
{%- for s in sections %}
<h2 id='b-{{ loop.index0 }}'>{{ s.name }} <small>({{ s.kind }})</small></h2>
<div class='figs'>{{ s.heatmap }}{% if s.mlp %}{{ s.mlp }}{% endif %}</div>
{%- if s.circuit %}
<h3>Circuit (edges)</h3>{{ s.circuit }}
{%- endif %}
<table class='kv'>{% for k, v in s.info %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>
<h3>Top components</h3>{{ table(s.top_headers, s.top_rows) }}
{%- if s.mlp_rows %}
<h3>MLP layers and neurons</h3>{{ table(["component", "mean", "95% CI", "flagged"], s.mlp_rows) }}
{%- endif %}
{%- endfor %}
{%- if traces %}
<h2>Causal tracing</h2>
{%- for t in traces %}
<p>{{ t.prompt }} → {{ t.target }}; subject {{ t.subject }} (tokens marked *), {{ t.n_samples }} noise draws, σ = {{ t.sigma }}</p>
{{ t.figure }}
{%- endfor %}
{%- endif %}
<h2>Flagged components</h2><details><summary>{{ flagged|length }} flagged (the largest 15 per behaviour)</summary>
{{ table(["behaviour", "component", "mean effect", "95% CI", "q"], flagged) }}</details>
<h2>Provenance</h2>{{ table([], provenance, "kv") }}
</body></html>
"""
_ENV = Environment(autoescape=True, keep_trailing_newline=True)
_FLAG = Markup("<span class='flag'>yes</span>")


def _figure(fig: go.Figure, div_id: str) -> Markup:
    """A figure as trusted markup: its div id is ours and plotly escapes ``<``, ``>``, ``/`` in its JSON."""
    return Markup(fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displayModeBar": False}))


def _ci(low: float, high: float) -> str:
    return f"[{low:+.4f}, {high:+.4f}]"


def _section(atlas: Atlas, i: int, b: Behaviour) -> dict[str, Any]:
    """The template's values for one behaviour (strings from the atlas stay plain: the template escapes)."""
    suite = b.suite
    info = [
        ["suite", Markup("{} ({} split, {} pairs, <code>{}…</code>)").format(suite.name, suite.split, suite.n_pairs, suite.content_hash[:19])],
        ["metric", b.metric],
        ["clean / corrupted metric", f"{b.clean_metric_mean:.4f} / {b.corrupted_metric_mean:.4f}"],
        ["methods", ", ".join(m.key for m in b.methods)],
        ["flag rule", b.flag_rule],
        *[[k, f"{v:.4g}"] for k, v in b.summary.items()],
    ]
    score_names = sorted({k for c in b.components for k in c.scores})
    top = [[c.id, c.kind, f"{c.effect.mean:+.4f}", _ci(c.effect.ci_low, c.effect.ci_high), f"{c.effect.p_value:.1e}", _FLAG if c.flagged else "",
            *[f"{c.scores[s]:+.4f}" if s in c.scores else "" for s in score_names]] for c in b.top(25)]
    mlps = sorted((c for c in b.components if c.kind in ("mlp", "neuron")), key=lambda c: c.layer)
    return {
        "name": b.name, "kind": b.kind, "info": info,
        # Div ids are made here, never from the atlas; stable ids keep the report byte-for-byte reproducible.
        "heatmap": _figure(_heatmap(atlas, b), f"heads-{i}"),
        "mlp": None if (mlp := _mlp_figure(atlas, b)) is None else _figure(mlp, f"mlps-{i}"),
        "top_headers": ["component", "kind", "mean", "95% CI", "p", "flagged", *score_names], "top_rows": top,
        "mlp_rows": [[c.id, f"{c.effect.mean:+.4f}", _ci(c.effect.ci_low, c.effect.ci_high), "yes" if c.flagged else ""] for c in mlps],
        # The fragment escapes every atlas string itself (circuits.atlas.graph_report).
        "circuit": Markup(render_circuit_graph(b.circuit, title=f"{b.name}: circuit", key=f"circuit-{i}")) if b.circuit is not None else None,
    }


def render(atlas: Atlas) -> str:
    """The report as an HTML string (self-contained; every string from the atlas escaped)."""
    p = atlas.provenance
    provenance = [["command", p.command], ["git commit", p.git_commit or "-"], ["seeds", str(p.seeds)],
                  ["started / finished", f"{p.started or '-'} / {p.finished or '-'}"], *[[k, v] for k, v in sorted(p.packages.items())]]
    traces = [{"prompt": t.prompt, "target": t.target, "subject": t.subject, "n_samples": t.n_samples, "sigma": f"{t.noise_std:.3f}",
               "figure": _figure(_trace_figure(t), f"trace-{i}")} for i, t in enumerate(atlas.traces)]
    shared = _shared_figure(atlas)
    return _ENV.from_string(_TEMPLATE).render(
        m=atlas.model, css=Markup(_CSS), schema_version=atlas.schema_version,
        # plotly.js goes in once, in the head, before any figure.
        shared=None if shared is None else _figure(shared, "shared"),
        plotly=Markup(f"<script>{get_plotlyjs()}</script>"),
        flagged=[[b.name, c.id, f"{c.effect.mean:+.4f}", _ci(c.effect.ci_low, c.effect.ci_high), "-" if c.q_value is None else f"{c.q_value:.2g}"]
                 for b in atlas.behaviours for c in b.flagged()[:15]],
        sections=[_section(atlas, i, b) for i, b in enumerate(atlas.behaviours)], traces=traces, provenance=provenance,
    )


def write_report(atlas: Atlas, path: Path | str) -> Path:
    """Render and write the report atomically.

    Returns:
        The path written.
    """
    return atomic_write_text(path, render(atlas))
