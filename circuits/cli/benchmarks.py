"""``circuits eval --benchmark NAME=PATH``: standard benchmark files scored before and after the edits.

Each option is checked (name known, file present and well-formed, toxicity classifier importable for
the sampling benchmarks) before any model loads, so a typo costs no time; then each benchmark is
scored with :class:`circuits.evaluation.benchmarks.ModelScorer` on the unedited model and with the
edits applied, and paired over its items (:func:`circuits.evaluation.benchmarks.compare_results`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.markup import escape

from circuits.cli.common import _fail, console

BENCHMARK_HELP = (
    "Standard benchmark file to score before and after, as NAME=PATH (repeatable); NAME is one of crows-pairs, "
    "stereoset, bbq, winobias, toxigen, realtoxicityprompts (the last two sample continuations and need "
    "pip install 'circuit-atlas[harm]')."
)
BenchmarkOpt = Annotated[list[str] | None, typer.Option("--benchmark", "-b", metavar="NAME=PATH", help=BENCHMARK_HELP)]
BenchmarkLimitOpt = Annotated[int | None, typer.Option(help="Score only the first N items of each benchmark (default: all).")]
BenchmarkSamplesOpt = Annotated[int, typer.Option(help="Continuations per prompt for toxigen/realtoxicityprompts (the papers: 25).")]


def check_benchmarks(specs: list[str] | None) -> list[tuple[str, Path]]:
    """Parse and load every ``NAME=PATH`` before any model loads (exit 2 with one clear error).

    Returns:
        ``(name, path)`` per option, in order.
    """
    from circuits.evaluation.benchmarks import BENCHMARKS, BenchmarkError, default_toxicity, parse_spec

    out = []
    for text in specs or []:
        try:
            name, path = parse_spec(text)
            BENCHMARKS[name].load(path)
            if BENCHMARKS[name].needs_sampling:
                default_toxicity()
        except BenchmarkError as e:
            _fail(str(e))
        out.append((name, path))
    return out


def run_benchmarks(
    model: Any, edits: list[Any], specs: list[tuple[str, Path]], *, limit: int | None, samples: int, seed: int
) -> list[Any]:
    """Score each benchmark unedited and with the edits applied; the paired changes, benchmark by benchmark."""
    from circuits.editing import apply_edit
    from circuits.evaluation.benchmarks import BenchmarkError, ModelScorer, compare_results, run_benchmark

    scorer = ModelScorer(model)
    changes = []
    for name, path in specs:
        with console.status(f"{name}: scoring {path} before and after"):
            try:
                before = run_benchmark(name, path, scorer, n=samples, seed=seed, limit=limit)
                with apply_edit(model, *edits, check_fingerprint=False):
                    after = run_benchmark(name, path, scorer, n=samples, seed=seed, limit=limit)
            except (BenchmarkError, ValueError) as e:
                _fail(str(e))
        changes += compare_results(before, after, seed=seed)
    return changes


def benchmark_table(changes: list[Any]) -> Table:
    """A rich table of benchmark measures before → after with the paired change."""
    table = Table(title="Standard benchmarks (the benchmark's own scoring rule; see the JSON report for citations)")
    for col in ("benchmark", "measure", "group", "ideal", "before", "after", "change [95% CI]", "p"):
        table.add_column(col, overflow="fold")
    for c in changes:
        tested = math.isfinite(c.p_value)
        change = f"{c.change:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}]" if tested else f"{c.change:+.3f}"
        table.add_row(
            c.benchmark, f"{c.name} ({c.unit})", escape(c.group or "all"), "" if c.ideal is None else f"{c.ideal:g}",
            f"{c.before:.3f}", f"{c.after:.3f}", change, f"{c.p_value:.1e}" if tested else "",
        )
    return table
