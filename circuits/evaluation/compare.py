"""Compare two model states measure by measure, through the registry (:mod:`circuits.evaluation.measures`).

:func:`compare_values` is the one place a before/after pair of per-item values becomes a
:class:`~circuits.evaluation.report.Measure`: it runs the test its spec declares (all from
:mod:`circuits.stats`, seeded) and, for capability measures, the smallest loss the item set detects:

* ``paired t-test`` (per-item continuous values): ``scipy.stats.ttest_rel`` and a 95% percentile
  bootstrap CI of the mean change; the smallest detectable loss from the noncentral t
  (:func:`circuits.stats.t_detectable_change`) with the observed SD of the per-item changes;
* ``exact McNemar test`` (per-item 0/1 outcomes): :func:`circuits.stats.paired_binary_test`; the
  smallest detectable drop from its exact power at the observed share of items that changed
  (:func:`circuits.stats.mcnemar_detectable_drop`);
* ``paired permutation test`` (a statistic of whole item sets: demographic parity, equalized odds, ECE,
  worst-group accuracy, StereoSet's scores, BBQ's bias scores): before/after swapped per item
  (``scipy.stats.permutation_test``) and a bootstrap CI over items (:func:`circuits.stats.paired_permutation`);
* ``one-sample t-test vs 0``: the KL to the unedited model, which has no "before".

Perplexity is ``exp`` of the mean window NLL: its change is relative (``after / before − 1``), tested
and bootstrapped on the window NLL (the CI and detectable loss mapped through ``expm1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from circuits import stats
from circuits.evaluation import measures as R
from circuits.evaluation.measures import MeasureSpec
from circuits.evaluation.report import EvalReport, Measure, Measurements


def _detectable(spec: MeasureSpec, b: np.ndarray, a: np.ndarray) -> float | None:
    """The smallest loss the item set detects (capability measures; None otherwise)."""
    if spec.kind != "capability" or spec.test == R.ONE_SAMPLE:
        return None
    d = a - b
    if spec.test == R.MCNEMAR:
        return stats.mcnemar_detectable_drop(len(d), float(np.mean(d != 0)) if len(d) else 0.0) * spec.scale
    sd = float(np.std(d, ddof=1)) if len(d) > 1 else float("nan")
    delta = stats.t_detectable_change(len(d), sd)
    return math.expm1(delta) if spec.summary == "exp mean" else delta


def compare_values(
    spec: MeasureSpec,
    before: np.ndarray,
    after: np.ndarray,
    *,
    seed: int = 0,
    name: str | None = None,
    data: str | None = None,
    unit: str | None = None,
    group: str | None = None,
) -> Measure:
    """One measure from per-item values of two model states (see the module docstring for the tests).

    Args:
        spec: The measure's spec.
        before: ``[item]`` values (``[item, ...]`` rows for a ``statistic``) of the unedited model; for a
            one-sample test, ignored.
        after: The same items of the edited model.
        seed: Seed of the bootstrap and permutation resampling.
        name: Reported name (default: the spec's).
        data: Reported data set (default: the spec's).
        unit: Reported unit (default: the spec's).
        group: A benchmark's subgroup.

    Returns:
        The measure.

    Raises:
        ValueError: Before and after hold different numbers of items, or 0/1 outcomes are not 0/1.
    """
    name, data, unit = name or spec.name, data or spec.data, unit or spec.unit
    kw = dict(reference=spec.reference, group=group, source=spec.source)
    b = np.asarray(before, dtype=np.float64)
    a = np.asarray(after, dtype=np.float64)
    if spec.test == R.ONE_SAMPLE:
        t = stats.one_sample_test(a, seed=seed)
        return Measure(name, spec.kind, data, unit, spec.better, 0.0, t.change, t.change, t.ci_low, t.ci_high, t.p_value, spec.test, t.n, **kw)
    if b.shape[0] != a.shape[0]:
        raise ValueError(f"{name}: {b.shape[0]} items before but {a.shape[0]} after")
    if spec.statistic is not None:
        rows = np.concatenate([b, a])
        stat = spec.statistic
        vb, va, lo, hi, p = stats.paired_permutation(lambda idx: stat(rows[idx]), len(b), seed=seed)
        det = R.detectable_from_ci(lo, hi) if spec.kind == "capability" else None
        return Measure(name, spec.kind, data, unit, spec.better, vb, va, va - vb, lo, hi, p, spec.test, len(b), detectable=det, **kw)
    if spec.test == R.NO_TEST:
        vb, va = float(b.sum()), float(a.sum())
        return Measure(name, spec.kind, data, unit, spec.better, vb, va, va - vb, math.nan, math.nan, math.nan, spec.test, len(b), **kw)
    if spec.test == R.MCNEMAR:
        t = stats.paired_binary_test(b / spec.scale, a / spec.scale, seed=seed)
        t = stats.Paired(t.change * spec.scale, t.ci_low * spec.scale, t.ci_high * spec.scale, t.p_value, t.n)
    else:
        t = stats.paired_test(b, a, seed=seed)
    det = _detectable(spec, b, a)
    if spec.summary == "exp mean":
        vb, va = math.exp(b.mean()), math.exp(a.mean())
        return Measure(name, spec.kind, data, unit, spec.better, vb, va, va / vb - 1.0, math.expm1(t.ci_low), math.expm1(t.ci_high), t.p_value,
                       f"{spec.test} on window NLL", t.n, detectable=det, **kw)
    return Measure(name, spec.kind, data, unit, spec.better, float(b.mean()), float(a.mean()), t.change, t.ci_low, t.ci_high, t.p_value,
                   spec.test, t.n, detectable=det, **kw)


def compare(before: Measurements, after: Measurements, *, seed: int = 0) -> list[Measure]:
    """Every registered measure that both states' groups produce, in report order.

    Args:
        before: Measurements of the unedited model.
        after: Measurements of the edited model (with ``kl`` when the ``"kl"`` group was taken).
        seed: Seed of every bootstrap and permutation test (same seed → same report).

    Returns:
        The measures.

    Raises:
        ValueError: The settings differ.
    """
    if before.settings != after.settings:
        raise ValueError(f"measurements were taken with different settings: {before.settings} vs {after.settings}")
    out = []
    for spec in R.measurement_specs(before):
        b, a = (spec.items(before), spec.items(after)) if spec.items is not None else (None, None)
        if spec.test == R.ONE_SAMPLE:
            b = np.zeros(0) if a is not None else None
        if b is None or a is None:
            continue
        text = spec.data
        if spec.group == "text" and before.nll is not None:
            text = f"english-eval ({len(before.nll)} windows × {before.settings.window} tokens)"
        elif spec.group == "kl":
            text = f"english-eval (first {len(a)} windows)"
        out.append(compare_values(spec, b, a, seed=seed, data=text))
    return out


def seed_table(reports: Sequence[EvalReport]) -> pd.DataFrame:
    """Mean ± std over reports (e.g. one per training seed) of every measure.

    Returns:
        One row per measure (and benchmark group): ``before``, ``after``, ``change``, ``reduction``,
        ``overshoot`` and ``p_value``, each as ``*_mean`` and ``*_std`` (sample std; 0 with one report),
        plus ``n_seeds``.

    Raises:
        ValueError: No reports.
    """
    if not reports:
        raise ValueError("no reports to summarise")
    df = pd.concat([r.to_dataframe().assign(seed_index=i) for i, r in enumerate(reports)])
    cols = ["before", "after", "change", "reduction", "overshoot", "p_value"]
    g = df.groupby(["name", "group", "kind", "data", "unit"], sort=False, dropna=False)[cols]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=1).fillna(0.0).add_suffix("_std"))
    out = out.assign(n_seeds=len(reports)).reset_index()
    out["group"] = out["group"].astype(object).where(out["group"].notna(), None)
    return out
