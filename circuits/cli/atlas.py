"""``circuits atlas schema|merge`` and ``circuits report``: atlas files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_args

import typer

from circuits.atlas.schema import ComponentKind, ranking_value
from circuits.cli.common import (
    _check_output,
    _fail,
    _inputs,
    _writing,
    app,
    choice,
    console,
)

atlas_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Atlas files: read (top, show, diff), merge, export as tables, JSON Schema.")
app.add_typer(atlas_app, name="atlas")


@atlas_app.command("schema")
def atlas_schema(out: Annotated[Path | None, typer.Option("-o", "--out", help="Write here instead of stdout.")] = None) -> None:
    """Print (or write) the JSON Schema of atlas files."""
    import json

    from circuits.atlas.schema import Atlas
    from circuits.io import atomic_write_text

    if out is not None:
        _check_output(out)
    text = json.dumps(Atlas.json_schema(), indent=2)
    if out is None:
        typer.echo(text)
    else:
        with _writing(out):
            atomic_write_text(out, text + "\n")
        console.print(f"schema written to {out}")


@atlas_app.command("merge")
def atlas_merge(
    atlases: Annotated[list[Path], typer.Argument(help="Atlases of one model.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Merged atlas path.")],
) -> None:
    """Merge atlases of the same model (refused across weight fingerprints)."""
    from circuits.atlas.merge import merge
    from circuits.atlas.schema import Atlas, AtlasError

    _check_output(out, inputs=_inputs(*atlases))
    try:
        loaded = [Atlas.load(p) for p in atlases]
        merged = loaded[0]
        for a in loaded[1:]:
            merged = merge(merged, a)
        with _writing(out):
            merged.save(out)  # validated before writing: refused, not written unreadable
    except AtlasError as e:
        _fail(str(e))
    console.print(f"{len(merged.behaviours)} behaviours, {len(merged.traces)} traces → {out}")


def _read_atlas(path: Path):
    """The atlas at ``path``, or one clear error (exit 2)."""
    from circuits.atlas.schema import Atlas, AtlasError

    try:
        return Atlas.load(path)
    except AtlasError as e:
        _fail(str(e))


ExportChoice = choice("ExportChoice", ("csv", "parquet", "markdown"))

@atlas_app.command("export")
def atlas_export(
    atlas_path: Annotated[Path, typer.Argument(help="Atlas JSON.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Components table path; circuits go beside it as <stem>.edges<suffix>.")],
    fmt: Annotated[ExportChoice, typer.Option("--format", "-f", help="Table format.")] = ExportChoice.csv,
) -> None:
    """Export an atlas as tables: components with effects, 95% CIs, p-values (raw and Benjamini-Hochberg) and flags; circuits as edge lists."""
    from circuits.atlas.export import edges_path, export_atlas

    _check_output(out, inputs=_inputs(atlas_path))
    _check_output(edges_path(out), inputs=_inputs(atlas_path))
    atlas = _read_atlas(atlas_path)
    with _writing(out):
        written = export_atlas(atlas, out, fmt.value)  # type: ignore[arg-type]
    console.print("written " + ", ".join(map(str, written)))


@app.command()
def report(
    atlas_path: Annotated[Path, typer.Argument(help="Atlas JSON.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="HTML report path.")],
) -> None:
    """Render an atlas as a self-contained HTML report (plotly heatmaps, tables, tracing grids)."""
    from circuits.atlas.report import write_report

    _check_output(out, inputs=_inputs(atlas_path))
    atlas = _read_atlas(atlas_path)
    with _writing(out):
        write_report(atlas, out)
    console.print(f"report written to {out}")




ComponentKindChoice = choice("ComponentKindChoice", get_args(ComponentKind))

def _stats_row(behaviour: str, entry, by: str | None = None) -> list[str]:
    s = entry.effect
    row = [behaviour, entry.id, f"{s.mean:+.4f}", f"[{s.ci_low:+.4f}, {s.ci_high:+.4f}]", f"{s.p_value:.2g}", str(s.n), "yes" if entry.flagged else ""]
    return row if by is None else [*row, f"{ranking_value(entry, by, behaviour):+.4f}"]


def _print_components(title: str, rows: list[list[str]], by: str | None = None) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in ("behaviour", "component", "effect (mean)", "95% CI", "p", "n", "flagged", *([by] if by else [])):
        table.add_column(name, justify="left" if name in ("behaviour", "component", "95% CI", "flagged") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@atlas_app.command("top")
def atlas_top(
    atlas_path: Annotated[Path, typer.Argument(help="Atlas JSON.")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="How many components.")] = 10,
    behaviour: Annotated[str | None, typer.Option("--behaviour", "-b", help="One behaviour (default: across all).")] = None,
    kind: Annotated[ComponentKindChoice | None, typer.Option(help="Only components of this kind.")] = None,
    by: Annotated[str, typer.Option(help="Rank by: effect, |effect|, a method key or a score name (R, SSS, ...).")] = "effect",
) -> None:
    """The largest components of an atlas: mean effect of the primary method, its 95% CI, p-value and flag."""
    from circuits.atlas.schema import AtlasError

    atlas = _read_atlas(atlas_path)
    try:
        top = atlas.top(k, by=by, behaviour=behaviour, kind=kind.value if kind else None)
    except AtlasError as e:
        _fail(str(e))
    shown = None if by == "effect" else by  # ranked by another value: shown in its own column
    _print_components(f"top {k} by {by} ({atlas.model.name})", [_stats_row(bc.behaviour, bc.entry, shown) for bc in top], shown)


@atlas_app.command("show")
def atlas_show(
    atlas_path: Annotated[Path, typer.Argument(help="Atlas JSON.")],
    component: Annotated[str | None, typer.Argument(help="A component (L9H6, L5MLP, L5N1024, L3RESID); omitted: the atlas's summary.")] = None,
) -> None:
    """What an atlas holds (model, provenance, behaviours, methods, circuits, traces), or one component across behaviours."""
    from circuits.sites import parse_component

    atlas = _read_atlas(atlas_path)
    if component is not None:
        try:
            cid = str(parse_component(component))
        except ValueError as e:
            _fail(f"{component!r} is not a component name: {e}")
        rows = [_stats_row(bc.behaviour, bc.entry) for bc in atlas.components() if bc.entry.id == cid]
        if not rows:
            _fail(f"{cid} is in no behaviour of {atlas_path}")
        _print_components(f"{cid} in {atlas.model.name}", rows)
        return
    m, p = atlas.model, atlas.provenance
    console.print(f"model {m.name}: {m.n_layers} layers × {m.n_heads} heads, d_model {m.d_model}, weights {m.fingerprint[:19]}…", highlight=False)
    console.print(f"tokenization: {m.tokenization.model_dump()}", highlight=False)
    console.print(f"made {p.started or 'at an unrecorded time'} by `{p.command if len(p.command) < 160 else p.command[:160] + '…'}` (commit {p.git_commit or 'unrecorded'}, seeds {p.seeds})", highlight=False)
    for b in atlas.behaviours:
        flagged = sum(c.flagged for c in b.components)
        circuit = f"; circuit {len(b.circuit.edges)} edges" if b.circuit is not None else ""
        console.print(
            f"- {b.name} ({b.kind}, {b.suite.n_pairs} pairs, metric {b.metric}): {len(b.components)} components, {flagged} flagged "
            f"({b.flag_rule}); methods {', '.join(x.key for x in b.methods)}{circuit}",
            highlight=False,
        )
    for t in atlas.traces:
        console.print(f"- causal trace ({t.kind}, window {t.window}): {t.prompt!r}, subject {t.subject!r} → {t.target!r}", highlight=False)


@atlas_app.command("diff")
def atlas_diff(
    a: Annotated[Path, typer.Argument(help="First atlas.")],
    b: Annotated[Path, typer.Argument(help="Second atlas (another run, model state or tokenization).")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="How many changes to list.")] = 20,
    min_delta: Annotated[float, typer.Option(min=0.0, help="Only components whose mean effect moved at least this much (or whose flag changed).")] = 0.0,
) -> None:
    """What moved between two atlases: per behaviour they share, components by change of mean effect, and flag changes."""
    from rich.table import Table

    from circuits.atlas.merge import diff
    from circuits.atlas.schema import AtlasError

    left, right = _read_atlas(a), _read_atlas(b)
    try:
        changes = diff(left, right, min_delta=min_delta)
    except AtlasError as e:
        _fail(str(e))
    flips = sum(c.flagged_a != c.flagged_b for c in changes)
    table = Table(title=f"{len(changes)} components moved ≥ {min_delta:g} or changed flag ({flips} flag changes); largest {min(k, len(changes))}", title_justify="left")
    for name in ("behaviour", "component", "mean a", "mean b", "Δ", "flagged a → b"):
        table.add_column(name, justify="right" if name.startswith(("mean", "Δ")) else "left")
    for c in changes[:k]:
        table.add_row(c.behaviour, c.component, f"{c.mean_a:+.4f}", f"{c.mean_b:+.4f}", f"{c.delta:+.4f}", f"{'yes' if c.flagged_a else 'no'} → {'yes' if c.flagged_b else 'no'}")
    console.print(table)
