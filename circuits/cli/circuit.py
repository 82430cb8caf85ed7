"""``circuits circuit``: score every edge of a behaviour (EAP / EAP-IG), keep a circuit, record it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from circuits.cli.common import DEFAULT_MODEL, DeviceOpt, DtypeOpt, ModelOpt, _check_model_options, _check_output, _fail, _load, _setup_logging, app, console


@app.command()
def circuit(
    out: Annotated[Path, typer.Option("-o", "--out", help="Where to write: the atlas with the circuit added (--atlas), else the circuit graph JSON.")],
    suite: Annotated[str, typer.Option(help="Behaviour suite: a shipped name or a pairs file.")] = "gender-occupation",
    top_edges: Annotated[int, typer.Option("--top-edges", help="Keep the N edges with the largest |score|.")] = 50,
    ig_steps: Annotated[int, typer.Option(help="EAP-IG interpolation steps (1: plain EAP).")] = 5,
    ablation: Annotated[str, typer.Option(help="What edges outside the circuit carry for faithfulness: corrupted or mean.")] = "corrupted",
    atlas: Annotated[Path | None, typer.Option(help="An atlas from `circuits scan`: the circuit is added to its behaviour for this suite.")] = None,
    max_pairs: Annotated[int | None, typer.Option(help="Pairs per template or group (default: all).")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward/backward (bounds memory).")] = 4,
    model: ModelOpt = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Find the edges that carry a behaviour: EAP-IG scores, the top-N circuit, its faithfulness."""
    from circuits.atlas.graph import circuit_graph
    from circuits.probing.discovery import faithfulness
    from circuits.probing.discovery import top_edges as choose_top
    from circuits.probing.eap import edge_attribution
    from circuits.probing.pairs import PairError, prepare
    from circuits.suites import SuiteError, bind_model, load_suite

    _setup_logging(verbose)
    _check_output(out)
    if top_edges < 1 or ig_steps < 1 or batch_size < 1:
        _fail("--top-edges, --ig-steps and --batch-size must be >= 1")
    if ablation not in ("corrupted", "mean"):
        _fail(f"--ablation must be corrupted or mean, got {ablation!r}")
    try:
        s = load_suite(suite)
    except SuiteError as e:
        _fail(str(e))
    base = None
    if atlas is not None:
        from circuits.atlas.schema import Atlas

        base = Atlas.load(atlas)
        if s.name not in {b.name for b in base.behaviours}:
            _fail(f"--atlas {atlas}: has no behaviour {s.name!r} (it has {', '.join(b.name for b in base.behaviours)})")
    _check_model_options(dtype, device)
    m = _load(model or DEFAULT_MODEL, dtype, device)
    from circuits.model import UnsupportedArchitecture, edge_support

    if (reason := edge_support(m)) is not None:
        _fail(f"edge-level probing is not supported on this model: {reason}")
    s = bind_model(s, m)
    try:
        pairs = s.pairs("build", max_pairs=max_pairs)
        prepared = prepare(m, pairs, s.metric)
        scores = edge_attribution(m, prepared.groups, prepared.metric, ig_steps=ig_steps, batch_size=batch_size)
        kept = choose_top(scores, top_edges)
        faith = faithfulness(m, prepared.groups, prepared.metric, kept, graph=scores.graph, ablation=ablation)  # type: ignore[arg-type]
    except (PairError, SuiteError, UnsupportedArchitecture, ValueError) as e:
        _fail(str(e))
    graph = circuit_graph(scores, kept, selection=f"top-{top_edges}", faith=faith)
    if base is not None:
        behaviours = [b.model_copy(update={"circuit": graph}) if b.name == s.name else b for b in base.behaviours]
        base.model_copy(update={"behaviours": behaviours}).save(out)
    else:
        out.write_text(graph.model_dump_json(indent=1), encoding="utf-8")
    table = Table(title=f"{s.name}: top edges ({graph.method}, normalised: 0 = corrupted, 1 = clean)")
    for col in ("sender", "receiver", "score"):
        table.add_column(col)
    for e in graph.edges[:15]:
        table.add_row(e.sender, e.receiver, f"{e.score:+.3f}")
    console.print(table)
    console.print(
        f"{len(kept)} of {scores.graph.n_edges} edges; faithfulness {faith.faithfulness:.3f}, completeness {faith.completeness:.3f} "
        f"(rest ablated with {ablation} writes); written to {out}"
    )
