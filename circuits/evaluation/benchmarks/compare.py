"""Benchmark measures before vs after an edit, with a paired test over the benchmark's items.

A measure that is a mean over items (CrowS-Pairs and WinoBias preferences and accuracies, BBQ
accuracies, toxic-continuation rates, expected maximum toxicity) keeps its per-item values, so its
change is tested with :func:`circuits.stats.paired_test` (two-sided paired t-test and a 95% percentile
bootstrap CI of the mean change) over the same items. Measures that are not means over items
(StereoSet's target-averaged LMS/SS/ICAT, BBQ's bias scores, counts) are reported before and after
without a test.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from circuits import stats
from circuits.evaluation.benchmarks.base import BenchmarkResult

NO_TEST = "none (not a mean over items)"
PAIRED = "paired t-test over items"


@dataclass(frozen=True)
class BenchmarkChange:
    """One benchmark measure before vs after.

    Attributes:
        benchmark: Registry name (e.g. ``"crows-pairs"``).
        citation: The paper of the benchmark and its scoring rule.
        name: Measure name (e.g. ``"stereotype_preference"``).
        group: None for the whole benchmark, else ``"key=value"``.
        unit: Unit of ``before``/``after``.
        ideal: The value of an unbiased / non-toxic model, or None.
        before: Unedited value.
        after: Edited value.
        change: ``after - before``.
        ci_low: Lower end of the 95% bootstrap CI of the mean change (NaN without a test).
        ci_high: Upper end.
        p_value: Two-sided p-value of ``test`` (NaN without one).
        test: The test used.
        n: Items.
    """

    benchmark: str
    citation: str
    name: str
    group: str | None
    unit: str
    ideal: float | None
    before: float
    after: float
    change: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    n: int | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able content (NaN as the string ``"nan"``)."""
        return {k: ("nan" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def compare_results(before: BenchmarkResult, after: BenchmarkResult, *, seed: int = 0) -> list[BenchmarkChange]:
    """Pair the measures of two runs of one benchmark on the same items.

    Args:
        before: The unedited model's result.
        after: The edited model's result (same benchmark, file and limit).
        seed: Bootstrap seed.

    Returns:
        One change per measure of ``before`` (in its order) that ``after`` also has.

    Raises:
        ValueError: Different benchmarks or item counts.
    """
    if (before.name, before.n_items) != (after.name, after.n_items):
        raise ValueError(f"cannot pair {before.name} ({before.n_items} items) with {after.name} ({after.n_items} items)")
    out = []
    for b in before.measures:
        try:
            a = after.measure(b.name, b.group)
        except KeyError:
            continue
        if b.values is not None and a.values is not None and len(b.values) == len(a.values):
            t = stats.paired_test(np.asarray(b.values), np.asarray(a.values), seed=seed)
            change, lo, hi, p, test = t.change, t.ci_low, t.ci_high, t.p_value, PAIRED
        else:
            change, lo, hi, p, test = a.value - b.value, math.nan, math.nan, math.nan, NO_TEST
        out.append(BenchmarkChange(before.name, before.citation, b.name, b.group, b.unit, b.ideal, b.value, a.value,
                                   change, lo, hi, p, test, b.n))
    return out
