"""An HTML fragment that draws a behaviour's circuit graph (inline SVG, laid out by layer).

Nodes sit in rows by layer (``INPUT`` on top, ``LOGITS`` at the bottom), the strongest first in each
row; a head's q/k/v inputs are drawn at the head, with the input letter on the edge. Edge width is proportional to |score|, colour to its sign
(blue: restores the clean behaviour, red: opposes it). A circuit of thousands of edges drawn at once is
a hairball, so the drawing shows the strongest edges only, and the reader moves the cut (top 10, 25,
50, 100 or 250 edges, radio buttons styled by CSS: no script) — nodes appear with their edges; the full
edge list is one click away (``<details>``). Every string from the atlas is escaped (``html.escape``):
an atlas is a file users share, so its contents are data, never markup. No scripts, no external
assets: the fragment embeds in the report as is.
"""

from __future__ import annotations

from html import escape

from circuits.atlas.graph import CircuitGraph

_W, _H, _PAD = 64, 44, 30
#: The cuts the reader chooses between (the strongest n edges are drawn).
LEVELS = (10, 25, 50, 100, 250)


def _base(node_id: str) -> tuple[str, str]:
    """``("L3H2", "k")`` for a head input, ``(id, "")`` otherwise."""
    base, _, act = node_id.partition(".")
    return base, act


def render_circuit_graph(graph: CircuitGraph, *, title: str = "Circuit", key: str = "circuit") -> str:
    """The circuit as an HTML ``<section>`` with an SVG drawing of its strongest edges and the full edge list.

    Args:
        graph: The circuit.
        title: Heading (escaped).
        key: A prefix for the fragment's element ids, unique on the page (made by the caller, never from
            the atlas).

    Returns:
        An HTML fragment.
    """
    edges = sorted(graph.edges, key=lambda e: -abs(e.score))
    levels = sorted({n for n in LEVELS if n < len(edges)} | {min(len(edges), LEVELS[-1])})
    drawn = edges[: levels[-1]]
    level_of = [next(j for j, n in enumerate(levels) if i < n) for i in range(len(drawn))]
    node_level: dict[str, int] = {}
    for e, lvl in zip(drawn, level_of):
        for end in (_base(e.sender)[0], _base(e.receiver)[0]):
            node_level[end] = min(node_level.get(end, lvl), lvl)
    layer_of = {_base(n.id)[0]: n.layer for n in graph.nodes}
    layers: dict[int, list[str]] = {}
    for base in node_level:
        layers.setdefault(layer_of[base], []).append(base)
    cols = sorted(layers)
    pos: dict[str, tuple[float, float]] = {}
    for ci, layer in enumerate(cols):
        for ri, base in enumerate(sorted(layers[layer], key=lambda b: (node_level[b], b))):  # the strongest nodes on top
            pos[base] = (_PAD + ri * _W, _PAD + ci * _H)
    width = _PAD * 2 + max((len(v) for v in layers.values()), default=1) * _W
    height = _PAD * 2 + max(len(cols) - 1, 0) * _H + 20
    top = max((abs(e.score) for e in drawn), default=1.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" role="img" aria-label="{escape(title)}">']
    for e, lvl in zip(drawn, level_of):
        (x1, y1), (x2, y2) = pos[_base(e.sender)[0]], pos[_base(e.receiver)[0]]
        colour = "#2b6cb0" if e.score >= 0 else "#c53030"
        w = 0.5 + 5 * abs(e.score) / top
        label = escape(f"{e.sender} → {e.receiver}: {e.score:+.3f}")
        parts.append(f'<g class="k{lvl}"><line x1="{x1:.1f}" y1="{y1 + 10:.1f}" x2="{x2:.1f}" y2="{y2 - 10:.1f}" stroke="{colour}" '
                     f'stroke-width="{w:.2f}" opacity="0.7"><title>{label}</title></line>')
        act = _base(e.receiver)[1]
        if act:
            parts.append(f'<text x="{x2 + 3:.1f}" y="{y2 - 12:.1f}" font-size="9" fill="{colour}">{escape(act)}</text>')
        parts.append("</g>")
    for base, (x, y) in pos.items():
        parts.append(f'<g class="k{node_level[base]}"><rect x="{x - 24:.1f}" y="{y - 10:.1f}" width="48" height="20" rx="4" fill="#edf2f7" stroke="#4a5568"/>'
                     f'<text x="{x:.1f}" y="{y + 4:.1f}" font-size="10" text-anchor="middle">{escape(base)}</text></g>')
    parts.append("</svg>")
    # Choosing cut j hides every edge and node first drawn at a larger cut (CSS only).
    css = "".join(f"#{key}-{j}:checked~div .k{m}{{display:none}}" for j in range(len(levels)) for m in range(j + 1, len(levels)))
    default = min(1, len(levels) - 1)
    radios = "".join(
        f'<input type="radio" name="{key}" id="{key}-{j}"{" checked" if j == default else ""}><label for="{key}-{j}">{"all" if n == len(edges) else "top"} {n}</label> '
        for j, n in enumerate(levels)
    )
    facts = [f"{len(graph.edges)} of {graph.n_edges_total} edges ({escape(graph.selection)})", f"method {escape(graph.method)}"]
    if graph.method == "eap_ig":
        facts[-1] += f" ({graph.ig_steps} steps)"
    if graph.faithfulness is not None:
        facts.append(f"faithfulness {graph.faithfulness:.3f}, completeness {graph.completeness:.3f} (rest ablated: {escape(graph.ablation)} writes)")
    if graph.curve:
        complete = dict(graph.completeness_curve)
        facts.append("top-n circuits (edges: faithfulness / completeness): " + ", ".join(
            f"{n}: {f:.2f}" + (f" / {complete[n]:.2f}" if n in complete else "") for n, f in graph.curve))
    rows = "".join(f"<tr><td>{escape(e.sender)}</td><td>{escape(e.receiver)}</td><td>{e.score:+.3f}</td></tr>" for e in edges)
    return (
        f'<section class="circuit-graph"><p><b>{escape(title)}</b>: {"; ".join(facts)}</p><style>{css}</style>'
        f"<span>Edges drawn, strongest first:</span> {radios}"  # siblings of the drawing's div, for the CSS above
        + '<div style="overflow-x:auto">' + "".join(parts) + "</div>"
        + f"<details><summary>All {len(edges)} edges</summary><table><thead><tr><th>sender</th><th>receiver</th><th>score</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></details></section>"
    )
