"""Statistics over prompts and items: summaries, bootstrap CIs, paired and permutation tests (scipy.stats).

The one statistics module of the package: atlases (per-component summaries), evaluation (paired
comparisons before/after an edit) and benchmarks all call it.

* Percentile bootstrap CI of the mean (Efron & Tibshirani 1993), via ``scipy.stats.bootstrap``, seeded.
* One-sample / paired two-sided t-test, via ``scipy.stats.ttest_1samp`` / ``ttest_rel``.
* Exact McNemar test of paired binary outcomes (McNemar 1947; the exact conditional form recommended by
  Fagerland, Lydersen & Laake 2013): a two-sided binomial test of the discordant pairs against 1/2, via
  ``scipy.stats.binomtest``.
* False discovery rate over many components (Benjamini & Hochberg 1995), via
  ``scipy.stats.false_discovery_control``, on one-sided p-values of "the effect is above 0".
* The smallest change a paired test detects (power analysis, Cohen 1988): for the paired t-test from the
  noncentral t distribution (``scipy.stats.nct``), for the exact McNemar test by summing its exact power
  over the binomial number of discordant pairs (``scipy.stats.binom``).
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


def one_sided_p(
    p_two_sided: Float[np.ndarray, " row"], mean: Float[np.ndarray, " row"]
) -> Float[np.ndarray, " row"]:
    """One-sided p-values of "the mean is above 0" from a symmetric test's two-sided p-values.

    For a symmetric statistic (the t-test of :func:`summarise_rows`): ``p/2`` where the mean is above 0,
    ``1 − p/2`` where it is not.
    """
    p, mean = np.asarray(p_two_sided, dtype=np.float64), np.asarray(mean, dtype=np.float64)
    return np.where(mean > 0, p / 2, 1 - p / 2)


def fdr_q_values(p_two_sided: Float[np.ndarray, " row"], mean: Float[np.ndarray, " row"]) -> Float[np.ndarray, " row"]:
    """Benjamini–Hochberg adjusted one-sided p-values (q-values) of "the effect is above 0", over all rows.

    The false discovery rate control of an atlas's flag rule (Benjamini & Hochberg 1995; via
    ``scipy.stats.false_discovery_control``): flagging the rows with ``q < α`` expects at most a share
    ``α`` of them to have no positive effect, where raw p < α over ~300 components would expect ~15
    false flags by chance alone.

    Args:
        p_two_sided: Two-sided p-values of a symmetric test against 0, ``[row]``.
        mean: The rows' means (their sign picks the side), ``[row]``.

    Returns:
        ``[row]`` q-values in [0, 1] (empty for no rows).
    """
    p1 = one_sided_p(p_two_sided, mean)
    if p1.size == 0:
        return p1
    return np.clip(stats.false_discovery_control(p1, method="bh"), 0.0, 1.0)


@dataclass(frozen=True)
class Paired:
    """A paired comparison of per-item values before and after a change.

    Attributes:
        change: Mean of ``after − before``.
        ci_low: Lower end of the 95% percentile bootstrap CI of the mean change.
        ci_high: Upper end.
        p_value: Two-sided paired t-test p-value (1 when nothing changed, 0 when every item changed
            by the same nonzero amount).
        n: Items.
    """

    change: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int


def bootstrap_ci(values: Float[np.ndarray, " item"], *, seed: int = 0, statistic: object = np.mean, n_resamples: int = 2000) -> tuple[float, float]:
    """95% percentile bootstrap CI of a statistic of one sample (Efron & Tibshirani 1993), seeded.

    Returns:
        ``(low, high)``; the statistic itself twice when fewer than 2 values or all equal; NaN twice when empty.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or np.ptp(values) == 0:
        m = float(statistic(values)) if len(values) else float("nan")  # type: ignore[operator]
        return m, m
    ci = stats.bootstrap(
        (values,), statistic, n_resamples=n_resamples, method="percentile", random_state=np.random.default_rng(seed)
    ).confidence_interval
    return float(ci.low), float(ci.high)


def paired_test(before: Float[np.ndarray, " item"], after: Float[np.ndarray, " item"], *, seed: int = 0) -> Paired:
    """Paired t-test (``scipy.stats.ttest_rel``) and bootstrap CI of the mean change ``after − before``.

    Raises:
        ValueError: Different lengths.
    """
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if before.shape != after.shape:
        raise ValueError(f"paired samples differ in shape: {before.shape} vs {after.shape}")
    d = after - before
    if len(d) > 1 and np.ptp(d) > 0:
        p = float(stats.ttest_rel(after, before).pvalue)
    else:
        p = 1.0 if not np.any(d) else 0.0
    lo, hi = bootstrap_ci(d, seed=seed)
    return Paired(float(d.mean()) if len(d) else float("nan"), lo, hi, 1.0 if np.isnan(p) else p, len(d))


def _binary(values: np.ndarray, what: str) -> np.ndarray:
    if values.size and not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"{what} must hold only 0 and 1")
    return values


def paired_binary_test(before: Float[np.ndarray, " item"], after: Float[np.ndarray, " item"], *, seed: int = 0) -> Paired:
    """Exact McNemar test and bootstrap CI of the mean change of paired 0/1 outcomes (e.g. correct answers).

    Only the discordant items carry information: ``b`` items went 1 → 0 and ``c`` went 0 → 1; under no
    change each discordant item is equally likely to go either way, so ``c ~ Binomial(b + c, 1/2)``
    (McNemar 1947; exact form: Fagerland, Lydersen & Laake 2013, BMC Med. Res. Methodol. 13:91). The
    p-value is the two-sided ``scipy.stats.binomtest(c, b + c, 0.5)``; 1 when no item changed.

    Args:
        before: ``[item]`` 0/1 outcomes before.
        after: ``[item]`` 0/1 outcomes after, same items.
        seed: Bootstrap seed of the CI (:func:`bootstrap_ci` of the per-item change).

    Returns:
        The change of the mean (a fraction), its CI, the exact p-value and ``n``.

    Raises:
        ValueError: Different shapes, or a value other than 0 and 1.
    """
    before = _binary(np.asarray(before, dtype=np.float64), "before")
    after = _binary(np.asarray(after, dtype=np.float64), "after")
    if before.shape != after.shape:
        raise ValueError(f"paired samples differ in shape: {before.shape} vs {after.shape}")
    d = after - before
    worse, better = int((d < 0).sum()), int((d > 0).sum())
    p = float(stats.binomtest(better, worse + better, 0.5).pvalue) if worse + better else 1.0
    lo, hi = bootstrap_ci(d, seed=seed)
    return Paired(float(d.mean()) if len(d) else float("nan"), lo, hi, min(p, 1.0), len(d))


def t_detectable_change(n: int, sd: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest mean paired change a one-sided paired t-test detects with the given power.

    Solves ``P(T > t_{1-alpha, n-1}) = power`` for ``T`` noncentral t with ``n - 1`` degrees of freedom
    and noncentrality ``delta sqrt(n) / sd`` (Cohen 1988, ch. 2; ``scipy.stats.nct``).

    Args:
        n: Items.
        sd: Standard deviation of the per-item changes (0: every item changes alike, so any change is
            detected).
        alpha: One-sided level.
        power: Wanted power.

    Returns:
        ``delta`` in the units of the values (≥ 0); ``inf`` with fewer than 2 items.
    """
    if n < 2 or not np.isfinite(sd):
        return float("inf")
    if sd <= 0:
        return 0.0
    from scipy.optimize import brentq

    df = n - 1
    crit = stats.t.ppf(1 - alpha, df)
    se = sd / np.sqrt(n)
    f = lambda delta: stats.nct.sf(crit, df, delta / se) - power  # noqa: E731
    hi = se * 2 * (crit + stats.norm.ppf(power) + 1)
    while f(hi) < 0:
        hi *= 2
    return float(brentq(f, 0.0, hi, xtol=1e-12 * max(1.0, hi)))


def mcnemar_power(n: int, drop: float, discordance: float, *, alpha: float = 0.05) -> float:
    """Power of the one-sided exact McNemar test to detect a net drop of ``drop`` (a fraction) on ``n`` items.

    The number of discordant items is ``D ~ Binomial(n, psi)`` with ``psi = max(discordance, drop)``
    (there are at least as many discordant items as the net drop); given ``D = d`` the drops are
    ``Binomial(d, (psi + drop) / (2 psi))`` and the test rejects when they reach the exact critical value
    of ``Binomial(d, 1/2)`` at level ``alpha`` (Fagerland et al. 2013's exact conditional test; power
    summed exactly with ``scipy.stats.binom``).
    """
    if drop <= 0 or n < 1:
        return 0.0
    psi = min(1.0, max(discordance, drop))
    d = np.arange(n + 1)
    crit = stats.binom.isf(alpha, d, 0.5) + 1  # smallest k with P(X >= k) <= alpha under 1/2
    crit = np.where(stats.binom.sf(crit - 1, d, 0.5) <= alpha, crit, crit + 1)
    q = min(1.0, (psi + drop) / (2 * psi))
    return float((stats.binom.pmf(d, n, psi) * stats.binom.sf(crit - 1, d, q)).sum())


def mcnemar_detectable_drop(n: int, discordance: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest net drop (a fraction, in steps of ``1/n``) the one-sided exact McNemar test detects with ``power``.

    Args:
        n: Paired 0/1 items.
        discordance: Fraction of items whose outcome changed (observed; 0 if none): background churn
            that makes a net drop harder to see.
        alpha: One-sided level.
        power: Wanted power.

    Returns:
        The drop, or ``inf`` if even losing every item would not be detected with that power.
    """
    for k in range(1, n + 1):
        if mcnemar_power(n, k / n, discordance, alpha=alpha) >= power:
            return k / n
    return float("inf")


def one_sample_test(values: Float[np.ndarray, " item"], *, seed: int = 0) -> Paired:
    """A one-sample t-test against 0 and the bootstrap CI of the mean (e.g. a KL, which has no "before")."""
    values = np.asarray(values, dtype=np.float64)
    lo, hi = bootstrap_ci(values, seed=seed)
    p = float(stats.ttest_1samp(values, 0.0).pvalue) if len(values) > 1 and np.ptp(values) > 0 else 1.0
    return Paired(float(values.mean()), lo, hi, 1.0 if np.isnan(p) else p, len(values))


def paired_permutation(statistic: object, n: int, *, seed: int = 0, n_resamples: int = 1000) -> tuple[float, float, float, float, float]:
    """Compare a statistic of a whole item set before vs after with a paired permutation test over items.

    ``statistic(rows)`` evaluates the statistic on the items ``rows`` of ``[before items ‖ after items]``
    (indices ``0..n-1`` are before, ``n..2n-1`` after). The permutation test swaps before/after per item
    (``scipy.stats.permutation_test``, ``permutation_type="samples"``); the CI of the change is a
    percentile bootstrap over items.

    Returns:
        ``(before, after, ci_low, ci_high, p_value)``; with one item the CI is the change itself and p = 1.
    """
    stat = statistic  # a callable
    rng = np.random.default_rng(seed)
    b, a = stat(np.arange(n)), stat(np.arange(n) + n)  # type: ignore[operator]
    if n < 2:  # one item: nothing to permute or resample
        return float(b), float(a), float(a - b), float(a - b), 1.0
    test = stats.permutation_test(
        (np.arange(n), np.arange(n) + n), lambda x, y: stat(y) - stat(x), permutation_type="samples", vectorized=False,  # type: ignore[operator]
        n_resamples=n_resamples, random_state=rng,
    )
    boot = np.array([stat(i + n) - stat(i) for i in (rng.integers(0, n, n) for _ in range(n_resamples))])  # type: ignore[operator]
    boot = boot[np.isfinite(boot)]
    lo, hi = (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))) if len(boot) else (float("nan"),) * 2
    p = float(test.pvalue)
    return float(b), float(a), lo, hi, 1.0 if np.isnan(p) else p
