"""Benchmark scores before vs after an edit, as :class:`~circuits.evaluation.report.Measure` values.

Each score of a benchmark is a measure of the registry (:mod:`circuits.evaluation.measures`, named
``"<benchmark>.<score>"``, declared in the benchmark's module as ``SPECS``), so its change gets the
test the spec declares over the benchmark's items (:func:`circuits.evaluation.compare.compare_values`):
a mean of per-item 0/1 outcomes (CrowS-Pairs and WinoBias preferences, BBQ and WinoBias accuracies,
RealToxicityPrompts' toxicity probability) the exact McNemar test; a mean of other per-item values
(toxic-continuation rates, expected maximum toxicity, WinoBias's accuracy gap) the paired t-test; a
statistic that is not a mean (StereoSet's target-averaged LMS/SS/ICAT, BBQ's bias scores) a paired
permutation test over items; each with a bootstrap CI of the change. Counts (unresolved items) are
reported before and after without a test.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from circuits.evaluation import measures as R
from circuits.evaluation.benchmarks.base import BenchmarkResult
from circuits.evaluation.compare import compare_values
from circuits.evaluation.report import Measure


def compare_results(before: BenchmarkResult, after: BenchmarkResult, *, seed: int = 0) -> list[Measure]:
    """Pair the scores of two runs of one benchmark on the same items.

    Args:
        before: The unedited model's result.
        after: The edited model's result (same benchmark, file and limit).
        seed: Bootstrap and permutation seed.

    Returns:
        One measure per score of ``before`` (in its order) that ``after`` also has, named
        ``"<benchmark>.<score>"`` with the score's ``group``.

    Raises:
        ValueError: Different benchmarks or item counts, or a score the registry does not know.
    """
    if (before.name, before.n_items) != (after.name, after.n_items):
        raise ValueError(f"cannot pair {before.name} ({before.n_items} items) with {after.name} ({after.n_items} items)")
    out = []
    for b in before.scores:
        try:
            a = after.score(b.name, b.group)
        except KeyError:
            continue
        name = f"{before.name}.{b.name}"
        spec = R.spec_of(name)
        if spec is None:
            raise ValueError(f"{name} is not a registered measure")
        spec = replace(spec, source=before.citation)
        kw = dict(seed=seed, name=name, data=before.name, unit=b.unit, group=b.group)
        if b.values is not None and a.values is not None and len(b.values) == len(a.values):
            out.append(compare_values(spec, np.asarray(b.values), np.asarray(a.values), **kw))  # type: ignore[arg-type]
        elif b.rows is not None and a.rows is not None and b.statistic is not None and len(b.rows) == len(a.rows):
            out.append(compare_values(replace(spec, statistic=b.statistic), b.rows, a.rows, **kw))  # type: ignore[arg-type]
        else:
            out.append(Measure(name, spec.kind, before.name, b.unit, spec.better, b.value, a.value, a.value - b.value, math.nan, math.nan,
                               math.nan, R.NO_TEST, b.n or 0, reference=spec.reference, group=b.group, source=before.citation))
    return out
