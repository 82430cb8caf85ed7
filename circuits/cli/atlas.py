"""``circuits atlas schema|merge`` and ``circuits report``: atlas files."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from circuits.cli.common import (
    _check_output,
    _fail,
    _inputs,
    _writing,
    app,
    console,
)

atlas_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Atlas files: JSON Schema, merging, export as tables.")
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


def _read_atlas(path: Path):  # noqa: ANN202 - an Atlas (imported lazily: the CLI starts without pydantic models)
    """The atlas at ``path``, or one clear error (exit 2)."""
    from circuits.atlas.schema import Atlas, AtlasError

    try:
        return Atlas.load(path)
    except AtlasError as e:
        _fail(str(e))


class ExportChoice(str, Enum):
    """Table formats of ``circuits atlas export``."""

    csv = "csv"
    parquet = "parquet"
    markdown = "markdown"


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


