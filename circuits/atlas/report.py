"""Render an atlas as one self-contained HTML page with plotly figures.

Per behaviour: a layer × head heatmap of the primary effect, a table of MLP (and neuron) effects,
the flagged components with their statistics and scores; then every causal-tracing grid (layer ×
token) and the provenance. plotly.js is inlined once, so the file opens offline.

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
        title=html.escape(f"{b.name}: head effects"),
        height=140 + 18 * z.shape[0],
        width=620,
        yaxis={"autorange": "reversed"},
        margin={"l": 50, "r": 20, "t": 50, "b": 30},
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


_TEMPLATE = """<!doctype html><html><head><meta charset='utf-8'><title>Circuit atlas: {{ m.name }}</title><style>{{ css }}</style></head><body>
{%- macro table(headers, rows, cls="") -%}
<table{% if cls %} class='{{ cls }}'{% endif %}>{% if headers %}<tr>{% for h in headers %}<th>{{ h }}</th>{% endfor %}</tr>{% endif %}
{%- for r in rows %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{%- endmacro -%}
<h1>Circuit atlas: {{ m.name }}</h1><p class='sub'>{{ m.n_layers }} layers × {{ m.n_heads }} heads, d_model {{ m.d_model }}, \
d_mlp {{ m.d_mlp }}; weights <code>{{ m.fingerprint[:23] }}…</code>; schema {{ schema_version }}</p>
<h2>Flagged components</h2>{{ table(["behaviour", "component", "mean effect", "95% CI"], flagged) }}
{%- for s in sections %}
<h2>{{ s.name }} <small>({{ s.kind }})</small></h2>
<table class='kv'>{% for k, v in s.info %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>
{{ s.heatmap }}
<h3>Top components</h3>{{ table(s.top_headers, s.top_rows) }}
{%- if s.circuit %}
<h3>Circuit (edges)</h3>{{ s.circuit }}
{%- endif %}
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
<h2>Provenance</h2>{{ table([], provenance, "kv") }}
</body></html>
"""
_ENV = Environment(autoescape=True, keep_trailing_newline=True)
_FLAG = Markup("<span class='flag'>yes</span>")


def _figure(fig: go.Figure, div_id: str, plotly_js: bool) -> Markup:
    """A figure as trusted markup: its div id is ours and plotly escapes ``<``, ``>``, ``/`` in its JSON."""
    return Markup(fig.to_html(full_html=False, include_plotlyjs="inline" if plotly_js else False, div_id=div_id))


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
        "heatmap": _figure(_heatmap(atlas, b), f"heads-{i}", plotly_js=(i == 0)),
        "top_headers": ["component", "kind", "mean", "95% CI", "p", "flagged", *score_names], "top_rows": top,
        "mlp_rows": [[c.id, f"{c.effect.mean:+.4f}", _ci(c.effect.ci_low, c.effect.ci_high), "yes" if c.flagged else ""] for c in mlps],
        # The fragment escapes every atlas string itself (circuits.atlas.graph_report).
        "circuit": Markup(render_circuit_graph(b.circuit, title=f"{b.name}: circuit")) if b.circuit is not None else None,
    }


def render(atlas: Atlas) -> str:
    """The report as an HTML string (self-contained; every string from the atlas escaped)."""
    p = atlas.provenance
    provenance = [["command", p.command], ["git commit", p.git_commit or "-"], ["seeds", str(p.seeds)],
                  ["started / finished", f"{p.started or '-'} / {p.finished or '-'}"], *[[k, v] for k, v in sorted(p.packages.items())]]
    traces = [{"prompt": t.prompt, "target": t.target, "subject": t.subject, "n_samples": t.n_samples, "sigma": f"{t.noise_std:.3f}",
               "figure": _figure(_trace_figure(t), f"trace-{i}", plotly_js=False)} for i, t in enumerate(atlas.traces)]
    return _ENV.from_string(_TEMPLATE).render(
        m=atlas.model, css=Markup(_CSS), schema_version=atlas.schema_version,
        flagged=[[b.name, c.id, f"{c.effect.mean:+.4f}", _ci(c.effect.ci_low, c.effect.ci_high)] for b in atlas.behaviours for c in b.flagged()[:15]],
        sections=[_section(atlas, i, b) for i, b in enumerate(atlas.behaviours)], traces=traces, provenance=provenance,
    )


def write_report(atlas: Atlas, path: Path | str) -> Path:
    """Render and write the report atomically.

    Returns:
        The path written.
    """
    return atomic_write_text(path, render(atlas))
