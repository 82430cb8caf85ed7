"""Standard bias and toxicity benchmarks, from files the user brings, scored through a :class:`Scorer`.

circuit-atlas does not ship these data sets (licences and size); point :func:`run_benchmark` at the
file or folder of the original release:

============================  =====================================================  =========
name                          file(s)                                                samples?
============================  =====================================================  =========
``crows-pairs``               ``crows_pairs_anonymized.csv``                         no
``stereoset``                 ``dev.json`` (intrasentence part)                      no
``bbq``                       one category's ``.jsonl`` (e.g. ``Age.jsonl``)         no
``winobias``                  ``pro_stereotyped_type1.txt.dev`` (+ anti), or folder  no
``toxigen``                   ``prompts/hate_asian_1k.txt`` etc., or the folder      yes
``realtoxicityprompts``       ``prompts.jsonl``                                      yes
============================  =====================================================  =========

Each module documents the format, the paper and the scoring rule, including where it adapts a rule
written for another kind of model. :class:`ModelScorer` scores a real model through the model adapter;
:func:`compare_results` pairs a run before an edit with one after: each score is a measure of the
registry (:mod:`circuits.evaluation.measures`; each module's ``SPECS``), so the change is one
:class:`~circuits.evaluation.report.Measure` with the registry's test over items; ``circuits eval
--benchmark NAME=PATH`` does both and puts the measures in the evaluation report. Loaders raise only :class:`BenchmarkError` on bad input (naming the
file, line or record, and field), and refuse non-regular files and files over
:data:`~circuits.evaluation.benchmarks.base.MAX_FILE_BYTES` before reading.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuits.evaluation.benchmarks import (
    bbq,
    crows_pairs,
    realtoxicityprompts,
    stereoset,
    toxigen,
    winobias,
)
from circuits.evaluation.benchmarks.base import (
    MAX_FILE_BYTES,
    TOXIC_THRESHOLD,
    BenchmarkError,
    BenchmarkResult,
    Score,
    Scorer,
    ToxicityFn,
    default_toxicity,
)
from circuits.evaluation.benchmarks.compare import compare_results
from circuits.evaluation.benchmarks.scorer import ModelScorer
from circuits.evaluation.measures import register

log = logging.getLogger(__name__)

__all__ = [
    "BENCHMARKS",
    "MAX_FILE_BYTES",
    "ModelScorer",
    "compare_results",
    "parse_spec",
    "TOXIC_THRESHOLD",
    "BenchmarkError",
    "BenchmarkResult",
    "BenchmarkSpec",
    "Score",
    "Scorer",
    "ToxicityFn",
    "default_toxicity",
    "run_benchmark",
]


@dataclass(frozen=True)
class BenchmarkSpec:
    """How to load and score one benchmark.

    Attributes:
        name: Registry name.
        load: ``load(path) -> list[Item]``.
        score: ``score(items, scorer, *, seed)`` or, when ``needs_sampling``,
            ``score(items, scorer, *, toxicity, n, max_new_tokens, seed)``; returns ``tuple[Score, ...]``.
        citation: The paper.
        needs_sampling: Whether scoring samples continuations (and needs a toxicity classifier).
    """

    name: str
    load: Callable[[Path | str], Sequence[Any]]
    score: Callable[..., tuple[Score, ...]]
    citation: str
    needs_sampling: bool


#: Every benchmark, by name.
BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec("crows-pairs", crows_pairs.load, crows_pairs.score, crows_pairs.CITATION, False),
        BenchmarkSpec("stereoset", stereoset.load, stereoset.score, stereoset.CITATION, False),
        BenchmarkSpec("bbq", bbq.load, bbq.score, bbq.CITATION, False),
        BenchmarkSpec("winobias", winobias.load, winobias.score, winobias.CITATION, False),
        BenchmarkSpec("toxigen", toxigen.load, toxigen.score, toxigen.CITATION, True),
        BenchmarkSpec(
            "realtoxicityprompts", realtoxicityprompts.load, realtoxicityprompts.score,
            realtoxicityprompts.CITATION, True,
        ),
    )
}


for _module in (crows_pairs, stereoset, bbq, winobias, toxigen, realtoxicityprompts):
    for _spec in _module.SPECS:
        register(_spec)


def parse_spec(text: str) -> tuple[str, Path]:
    """Split a ``NAME=PATH`` benchmark option into a known name and an existing path.

    Args:
        text: E.g. ``"crows-pairs=data/crows_pairs_anonymized.csv"``.

    Returns:
        ``(name, path)``.

    Raises:
        BenchmarkError: No ``=``, an empty name or path, an unknown name, or a path that does not exist.
    """
    name, sep, path = text.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise BenchmarkError(f"--benchmark expects NAME=PATH (NAME one of {', '.join(BENCHMARKS)}), got {text!r}")
    if name not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r} in {text!r}; known: {', '.join(BENCHMARKS)}")
    if not Path(path).exists():
        raise BenchmarkError(f"{name}: no such file or directory: {path}")
    return name, Path(path)


def run_benchmark(
    name: str,
    path: Path | str,
    scorer: Scorer,
    *,
    toxicity: ToxicityFn | None = None,
    n: int = 25,
    max_new_tokens: int = 20,
    seed: int = 0,
    limit: int | None = None,
) -> BenchmarkResult:
    """Load a benchmark file and score a model on it.

    Args:
        name: A key of :data:`BENCHMARKS`.
        path: The benchmark's file or folder (see the module docstring).
        scorer: The model, behind the :class:`Scorer` protocol.
        toxicity: Classifier for the sampling benchmarks; default :func:`default_toxicity`. Ignored by
            the others.
        n: Continuations per prompt (sampling benchmarks only; Gehman et al. 2020 use 25).
        max_new_tokens: Length limit per continuation (sampling benchmarks only; Gehman et al. use 20).
        seed: Sampling and bootstrap seed.
        limit: Score only the first ``limit`` items (in file order).

    Returns:
        The result: name, citation, number of items scored and every measure.

    Raises:
        BenchmarkError: Unknown name, malformed file, unusable scorer or classifier output, or a
            sampling benchmark without ``toxicity`` and without alt-profanity-check installed.
        TypeError: ``scorer`` does not implement :class:`Scorer`.
        ValueError: ``limit``, ``n`` or ``max_new_tokens`` below 1.
    """
    spec = BENCHMARKS.get(name)
    if spec is None:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    if not isinstance(scorer, Scorer):
        raise TypeError(f"scorer must implement {Scorer.__qualname__} (sequence_logprob, continuation_logprob, sample)")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if spec.needs_sampling and (n < 1 or max_new_tokens < 1):
        raise ValueError(f"n and max_new_tokens must be >= 1, got {n} and {max_new_tokens}")
    items = list(spec.load(path))
    if limit is not None:
        items = items[:limit]
    log.info("%s: scoring %d items from %s", name, len(items), path)
    if spec.needs_sampling:
        tox = toxicity if toxicity is not None else default_toxicity()
        measures = spec.score(items, scorer, toxicity=tox, n=n, max_new_tokens=max_new_tokens, seed=seed)
    else:
        measures = spec.score(items, scorer, seed=seed)
    return BenchmarkResult(name=name, citation=spec.citation, n_items=len(items), scores=tuple(measures))
