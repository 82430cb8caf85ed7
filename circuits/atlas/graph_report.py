"""An HTML fragment that draws a behaviour's circuit graph (inline SVG, laid out by layer).

Nodes sit in columns by layer (``INPUT`` left, ``LOGITS`` right); a head's q/k/v inputs are drawn at
the head, with the input letter on the edge. Edge width is proportional to |score|, colour to its sign
(blue: restores the clean behaviour, red: opposes it). Every string from the atlas is escaped
(``html.escape``): an atlas is a file users share, so its contents are data, never markup. No scripts,
no external assets: the fragment embeds in the report as is.
"""

from __future__ import annotations

from html import escape

from circuits.atlas.graph import CircuitGraph

_W, _H, _PAD = 140, 34, 40


def _base(node_id: str) -> tuple[str, str]:
    """``("L3H2", "k")`` for a head input, ``(id, "")`` otherwise."""
    base, _, act = node_id.partition(".")
    return base, act


def render_circuit_graph(graph: CircuitGraph, *, title: str = "Circuit") -> str:
    """The circuit as an HTML ``<section>`` with an SVG drawing and an edge table.

    Args:
        graph: The circuit.
        title: Heading (escaped).

    Returns:
        An HTML fragment.
    """
    layers: dict[int, list[str]] = {}
    for n in graph.nodes:
        base, _ = _base(n.id)
        column = layers.setdefault(n.layer, [])
        if base not in column:
            column.append(base)
    cols = sorted(layers)
    pos: dict[str, tuple[float, float]] = {}
    for ci, layer in enumerate(cols):
        for ri, base in enumerate(sorted(layers[layer])):
            pos[base] = (_PAD + ci * _W, _PAD + ri * _H)
    width = _PAD * 2 + max(len(cols) - 1, 0) * _W + 60
    height = _PAD * 2 + max((len(v) for v in layers.values()), default=1) * _H
    top = max((abs(e.score) for e in graph.edges), default=1.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" role="img" aria-label="{escape(title)}">']
    for e in graph.edges:
        (x1, y1), (x2, y2) = pos[_base(e.sender)[0]], pos[_base(e.receiver)[0]]
        colour = "#2b6cb0" if e.score >= 0 else "#c53030"
        w = 0.5 + 5 * abs(e.score) / top
        label = escape(f"{e.sender} → {e.receiver}: {e.score:+.3f}")
        parts.append(f'<line x1="{x1 + 24:.1f}" y1="{y1:.1f}" x2="{x2 - 24:.1f}" y2="{y2:.1f}" stroke="{colour}" stroke-width="{w:.2f}" opacity="0.8"><title>{label}</title></line>')
        act = _base(e.receiver)[1]
        if act:
            parts.append(f'<text x="{x2 - 30:.1f}" y="{y2 - 4:.1f}" font-size="9" fill="{colour}">{escape(act)}</text>')
    for base, (x, y) in pos.items():
        parts.append(f'<rect x="{x - 24:.1f}" y="{y - 10:.1f}" width="48" height="20" rx="4" fill="#edf2f7" stroke="#4a5568"/>')
        parts.append(f'<text x="{x:.1f}" y="{y + 4:.1f}" font-size="10" text-anchor="middle">{escape(base)}</text>')
    parts.append("</svg>")
    facts = [f"{len(graph.edges)} of {graph.n_edges_total} edges ({escape(graph.selection)})", f"method {escape(graph.method)}"]
    if graph.method == "eap_ig":
        facts[-1] += f" ({graph.ig_steps} steps)"
    if graph.faithfulness is not None:
        facts.append(f"faithfulness {graph.faithfulness:.3f}, completeness {graph.completeness:.3f} (rest ablated: {escape(graph.ablation)} writes)")
    if graph.curve:
        complete = dict(graph.completeness_curve)
        facts.append("top-n circuits (edges: faithfulness / completeness): " + ", ".join(
            f"{n}: {f:.2f}" + (f" / {complete[n]:.2f}" if n in complete else "") for n, f in graph.curve))
    rows = "".join(
        f"<tr><td>{escape(e.sender)}</td><td>{escape(e.receiver)}</td><td>{e.score:+.3f}</td></tr>" for e in graph.edges[:30]
    )
    return (
        f'<section class="circuit-graph"><h3>{escape(title)}</h3><p>{"; ".join(facts)}</p>'
        + "".join(parts)
        + f"<table><thead><tr><th>sender</th><th>receiver</th><th>score</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )
