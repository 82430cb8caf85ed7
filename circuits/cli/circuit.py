"""``circuits circuit``: score every edge of a behaviour (EAP / EAP-IG), choose and prune a circuit, record it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from circuits.cli.common import (
    DEFAULT_MODEL,
    DEFAULT_SUITE,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    PrependBosOpt,
    _check_count,
    _check_finite,
    _check_model,
    _check_output,
    _check_split,
    _fail,
    _inputs,
    _load,
    _model_source,
    _say_default,
    _setup_logging,
    _writing,
    app,
    choice,
    console,
)
from circuits.probing.discovery import ABLATIONS

PruneChoice = choice("PruneChoice", ("none", "greedy", "acdc"))
AblationChoice = choice("AblationChoice", ABLATIONS)


@app.command()
def circuit(
    out: Annotated[
        Path | None,
        typer.Option("-o", "--out", help="Where to write: the atlas with the circuit added (--atlas), else the circuit graph JSON. "
                     "Without -o, --atlas is updated in place (as `circuits trace --atlas` does)."),
    ] = None,
    suite: Annotated[str | None, typer.Option(metavar="<suite>", help="Behaviour suite: a shipped name or a pairs file. Default (said when used): gender-occupation.")] = None,
    top_edges: Annotated[int | None, typer.Option("--top-edges", help="Keep the N edges with the largest |score| (default: the smallest top-n circuit reaching --target).")] = None,
    target: Annotated[float, typer.Option(help="Faithfulness the circuit must reach (without --top-edges; and for --prune greedy).")] = 0.8,
    max_edges: Annotated[int | None, typer.Option(help="Largest top-n circuit tried for --target (default: every edge).")] = None,
    prune: Annotated[PruneChoice, typer.Option(help="Then prune edge by edge with exact ablations: none, greedy (keep faithfulness >= --target) or acdc (--tau); one forward per edge.")] = PruneChoice.none,
    tau: Annotated[float, typer.Option(help="ACDC threshold on the drop of the normalised metric.")] = 0.01,
    ig_steps: Annotated[int, typer.Option(help="EAP-IG interpolation steps (1: plain EAP).")] = 5,
    ablation: Annotated[AblationChoice, typer.Option(help="What edges outside the circuit carry for faithfulness: corrupted, mean or resample (another clean prompt's writes).")] = AblationChoice.corrupted,
    atlas: Annotated[Path | None, typer.Option(help="An atlas from `circuits scan`: the circuit is added to its behaviour for this suite.")] = None,
    max_pairs: Annotated[int | None, typer.Option(help="Pairs per template or group (default: all).")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward/backward (bounds memory).")] = 4,
    model: ModelOpt = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    prepend_bos: PrependBosOpt = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Find the edges that carry a behaviour: EAP-IG scores, a circuit (top-N or the smallest at a faithfulness target, optionally pruned), its faithfulness."""
    from circuits.atlas.circuit import find_circuit
    from circuits.io import atomic_write_text
    from circuits.probing.pairs import PairError
    from circuits.suites import SuiteError, bind_model, load_suite

    _setup_logging(verbose)
    source = _model_source(model, DEFAULT_MODEL)
    given_suite, suite = suite, (suite if suite is not None else DEFAULT_SUITE)
    prune, ablation = str(prune), str(ablation)  # plain strings from here on (the enums only validate)
    if out is None and atlas is None:
        _fail("give -o (where to write the circuit graph), or --atlas (the atlas to add the circuit to)")
    if out is None:  # in place, by design: the atlas named by --atlas gets the circuit
        _check_output(atlas, option="--atlas", inputs=_inputs(suite, source))
    else:
        _check_output(out, inputs=_inputs(suite, atlas, source))
    target_path = out if out is not None else atlas
    if (top_edges is not None and top_edges < 1) or ig_steps < 1 or batch_size < 1 or (max_edges is not None and max_edges < 1):
        _fail("--top-edges, --max-edges, --ig-steps and --batch-size must be >= 1")
    _check_count("--max-pairs", max_pairs)
    _check_finite("--target", target)
    _check_finite("--tau", tau)
    if tau < 0:
        _fail(f"--tau must be >= 0 (a drop of the normalised metric), got {tau}")
    if not 0 < target <= 1:
        _fail(f"--target must be in (0, 1], got {target}")
    try:
        s = load_suite(suite)
    except SuiteError as e:
        _fail(str(e))
    _check_split("--suite", s, "build", given=suite)
    base = None
    if atlas is not None:
        from circuits.atlas.schema import Atlas, AtlasError

        try:
            base = Atlas.load(atlas)
        except AtlasError as e:
            _fail(f"--atlas {e}")
        if s.name not in {b.name for b in base.behaviours}:
            _fail(f"--atlas {atlas}: has no behaviour {s.name!r} (it has {', '.join(b.name for b in base.behaviours)})")
    checked = _check_model(source, dtype, device)
    _say_default("--suite", given_suite, DEFAULT_SUITE)
    m = _load(checked, dtype, device, prepend_bos)
    from circuits.model import UnsupportedArchitecture, edge_support

    if (reason := edge_support(m)) is not None:
        _fail(f"edge-level probing is not supported on this model: {reason}")
    s = bind_model(s, m)
    try:
        graph = find_circuit(m, s, max_pairs=max_pairs, ig_steps=ig_steps, top_edges=top_edges, target=target, max_edges=max_edges,
                             prune=None if prune == "none" else prune, tau=tau, ablation=ablation, batch_size=batch_size)
    except (PairError, SuiteError, UnsupportedArchitecture, ValueError) as e:
        _fail(str(e))
    from circuits.atlas.schema import AtlasError

    try:
        with _writing(target_path):
            if base is not None:
                behaviours = [b.model_copy(update={"circuit": graph}) if b.name == s.name else b for b in base.behaviours]
                base.model_copy(update={"behaviours": behaviours}).save(target_path)
            else:
                atomic_write_text(target_path, graph.model_dump_json(indent=1))
    except AtlasError as e:
        _fail(f"the circuit cannot be recorded: {e}")
    table = Table(title=f"{s.name}: top edges ({graph.method}, normalised: 0 = corrupted, 1 = clean)")
    for col in ("sender", "receiver", "score"):
        table.add_column(col)
    for e in graph.edges[:15]:
        table.add_row(e.sender, e.receiver, f"{e.score:+.3f}")
    console.print(table)
    console.print(
        f"{len(graph.edges)} of {graph.n_edges_total} edges ({graph.selection}); faithfulness {graph.faithfulness:.3f}, "
        f"completeness {graph.completeness:.3f} (rest ablated with {ablation} writes); written to {target_path}"
    )
