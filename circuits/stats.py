"""Statistics over prompts: summary, bootstrap confidence intervals and paired tests (scipy.stats).

* Percentile bootstrap CI of the mean (Efron & Tibshirani 1993), via ``scipy.stats.bootstrap``, seeded.
* One-sample / paired two-sided t-test, via ``scipy.stats.ttest_1samp`` / ``ttest_rel``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float
from scipy import stats


@dataclass(frozen=True)
class Summary:
    """Mean, sample std, n, 95% bootstrap CI of the mean and a two-sided t-test p-value against 0."""

    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float
    p_value: float


def summarise_rows(
    values: Float[np.ndarray, "row sample"], *, seed: int = 0, n_resamples: int = 2000, confidence: float = 0.95
) -> list[Summary]:
    """Summarise each row of a matrix of per-prompt values.

    Args:
        values: One row per quantity (e.g. component), one column per prompt.
        seed: Bootstrap seed (same seed → same intervals).
        n_resamples: Bootstrap resamples.
        confidence: CI level.

    Returns:
        One :class:`Summary` per row. With fewer than 2 samples the CI collapses to the mean and the
        p-value is 1.

    Raises:
        ValueError: ``values`` is not 2-D or has no columns.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] == 0:
        raise ValueError(f"expected a [row, sample] matrix with samples, got shape {values.shape}")
    n = values.shape[1]
    mean = values.mean(axis=1)
    if n < 2:
        return [Summary(float(m), 0.0, n, float(m), float(m), 1.0) for m in mean]
    std = values.std(axis=1, ddof=1)
    boot = stats.bootstrap(
        (values,), np.mean, axis=1, vectorized=True, n_resamples=n_resamples, confidence_level=confidence,
        method="percentile", random_state=np.random.default_rng(seed),
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        p = stats.ttest_1samp(values, 0.0, axis=1).pvalue
    p = np.where(np.isnan(p), 1.0, p)
    lo, hi = boot.confidence_interval.low, boot.confidence_interval.high
    return [
        Summary(float(mean[i]), float(std[i]), n, float(lo[i]), float(hi[i]), float(p[i])) for i in range(values.shape[0])
    ]
