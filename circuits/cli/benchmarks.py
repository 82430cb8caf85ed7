"""``circuits eval --benchmark NAME=PATH``: standard benchmark files scored before and after the edits.

Each option is checked (name known, file present and well-formed, toxicity classifier importable for
the sampling benchmarks) before any model loads, so a typo costs no time; then each benchmark is
scored with :class:`circuits.evaluation.benchmarks.ModelScorer` on the unedited model (its answers
cached with the unedited measurements, :class:`~circuits.evaluation.benchmarks.scorer.CachedScorer`)
and with the edits applied, and paired over its items (:func:`circuits.evaluation.benchmarks.compare_results`):
the measures join the evaluation report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from circuits.cli.common import _fail

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
    from circuits.evaluation.benchmarks import (
        BENCHMARKS,
        BenchmarkError,
        default_toxicity,
        parse_spec,
    )

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
    model: Any, edits: list[Any], specs: list[tuple[str, Path]], *, limit: int | None, samples: int, seed: int,
    baseline_cache: Path | None = None, on_measure: Any = None,
) -> list[Any]:
    """Score each benchmark unedited (its answers cached in ``baseline_cache``) and with the edits applied.

    Returns:
        The paired measures (:class:`circuits.evaluation.report.Measure`), benchmark by benchmark.
    """
    import time

    from circuits.editing import apply_edit
    from circuits.evaluation.benchmarks import (
        BenchmarkError,
        ModelScorer,
        compare_results,
        run_benchmark,
    )
    from circuits.evaluation.benchmarks.scorer import CachedScorer

    scorer = ModelScorer(model)
    unedited = CachedScorer(scorer, baseline_cache) if baseline_cache is not None else scorer
    changes = []
    for name, path in specs:
        try:
            t = time.perf_counter()
            before = run_benchmark(name, path, unedited, n=samples, seed=seed, limit=limit)
            if on_measure is not None:
                on_measure(f"{name} (unedited)", time.perf_counter() - t)
            t = time.perf_counter()
            with apply_edit(model, *edits, check_fingerprint=False):
                after = run_benchmark(name, path, scorer, n=samples, seed=seed, limit=limit)
            if on_measure is not None:
                on_measure(name, time.perf_counter() - t)
        except (BenchmarkError, ValueError) as e:
            _fail(str(e))
        changes += compare_results(before, after, seed=seed)
    return changes
