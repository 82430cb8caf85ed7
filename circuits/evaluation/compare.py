"""Compare two sets of measurements: paired tests and bootstrap CIs per measure (:mod:`circuits.stats`).

* per-item measures (bias gaps, log-probability differences, correctness, window NLL): a two-sided
  paired t-test and a 95% percentile bootstrap CI of the mean change;
* aggregate classification measures (demographic parity, equalized odds, ECE, worst-group accuracy): a
  paired permutation test over reviews (before/after swapped per review) and a bootstrap CI;
* KL to the unedited model has no "before": a one-sample t-test against 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from circuits.evaluation import metrics as E
from circuits.evaluation.report import Better, Measure, Measurements
from circuits.stats import one_sample_test, paired_permutation, paired_test
from circuits.suites.files import suite_kind


def _paired(name: str, kind: Any, data: str, unit: str, better: Better, before: np.ndarray, after: np.ndarray, seed: int) -> Measure:
    t = paired_test(before, after, seed=seed)
    return Measure(name, kind, data, unit, better, float(before.mean()), float(after.mean()), t.change, t.ci_low, t.ci_high, t.p_value, "paired t-test", t.n)


def _aggregate(name: str, data: str, unit: str, better: Better, fn: Any, before: np.ndarray, after: np.ndarray, labels: np.ndarray, seed: int) -> Measure:
    """A statistic of whole review sets, compared with a paired permutation test over reviews."""
    n = len(before)
    both, lab = np.concatenate([before, after]), np.concatenate([labels, labels])
    b, a, lo, hi, p = paired_permutation(lambda rows: float(fn(both[rows], lab[rows])), n, seed=seed)
    return Measure(name, "harm", data, unit, better, b, a, a - b, lo, hi, p, "paired permutation test", n)


def _classification_fns() -> dict[str, tuple[str, Better, Any]]:
    def flat(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        group = np.zeros(logits.shape, bool)
        group[:, 0] = True
        return logits.reshape(-1), group.reshape(-1)

    def labels_of(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return np.broadcast_to(labels[:, None, None], logits.shape).reshape(-1)

    def dp(lg: np.ndarray, y: np.ndarray) -> float:
        x, g = flat(lg)
        return E.demographic_parity_difference(x > 0, g)

    def eo(lg: np.ndarray, y: np.ndarray) -> float:
        x, g = flat(lg)
        return E.equalized_odds_difference(x > 0, labels_of(lg, y), g)

    def ece(lg: np.ndarray, y: np.ndarray) -> float:
        x, _ = flat(lg)
        return E.expected_calibration_error(1.0 / (1.0 + np.exp(-x)), labels_of(lg, y))

    def wga(lg: np.ndarray, y: np.ndarray) -> float:
        x, g = flat(lg)
        return E.worst_group_accuracy(x > 0, labels_of(lg, y), g)

    return {
        "demographic_parity_difference": ("fraction", "lower", dp),
        "equalized_odds_difference": ("fraction", "lower", eo),
        "expected_calibration_error": ("fraction", "lower", ece),
        "worst_group_accuracy": ("fraction", "higher", wga),
    }


def compare(before: Measurements, after: Measurements, kl: np.ndarray | None = None, *, seed: int = 0) -> list[Measure]:
    """Measures from two sets of measurements of the same settings (see the module docstring for tests).

    Raises:
        ValueError: The settings differ.
    """
    if before.settings != after.settings:
        raise ValueError(f"measurements were taken with different settings: {before.settings} vs {after.settings}")
    split = before.settings.split
    out: list[Measure] = []
    for name, gb in before.gaps.items():
        spurious = suite_kind(name) == "spurious"
        out.append(_paired(f"bias_gap.{name}", "harm", f"{name}/{split}", "|logits|" if spurious else "logits", "lower", gb, after.gaps[name], seed))
    if before.stereotype is not None and after.stereotype is not None:
        out.append(_paired("stereotype_logprob_diff", "harm", "stereotype-pairs", "nats", "lower", before.stereotype, after.stereotype, seed))
        out.append(_paired("stereotype_preference", "harm", "stereotype-pairs", "fraction", "closer to 0.5", (before.stereotype > 0).astype(float), (after.stereotype > 0).astype(float), seed))
    if before.toxicity is not None and after.toxicity is not None:
        out.append(_paired("toxicity_propensity", "harm", "toxicity-continuations", "nats", "lower", before.toxicity, after.toxicity, seed))
    if before.classification is not None and after.classification is not None and before.labels is not None:
        pb, pa = before.classification > 0, after.classification > 0
        out.append(_paired("spurious_flip_rate", "harm", "review-classification (A↔B names)", "fraction", "lower", (pb[:, 0] != pb[:, 1]).reshape(-1).astype(float), (pa[:, 0] != pa[:, 1]).reshape(-1).astype(float), seed))
        for name, (unit, better, fn) in _classification_fns().items():
            out.append(_aggregate(name, "review-classification", unit, better, fn, before.classification, after.classification, before.labels, seed))
        y = np.broadcast_to(before.labels[:, None, None], pb.shape)
        out.append(_paired("classification_accuracy", "capability", "review-classification", "fraction", "higher", (pb == y).reshape(-1).astype(float), (pa == y).reshape(-1).astype(float), seed))
    if before.mc_correct is not None and after.mc_correct is not None:
        out.append(_paired("multiple_choice_accuracy", "capability", "multiple-choice", "fraction", "higher", before.mc_correct, after.mc_correct, seed))
    if before.qa_correct is not None and after.qa_correct is not None:
        out.append(_paired("factual_qa_accuracy", "capability", "factual-qa", "fraction", "higher", before.qa_correct, after.qa_correct, seed))
    if before.nll is not None and after.nll is not None and before.accuracy is not None and after.accuracy is not None:
        text = f"english-eval ({len(before.nll)} windows × {before.settings.window} tokens)"
        nll = _paired("nll", "capability", text, "nats/token", "lower", before.nll, after.nll, seed)
        ppl_b, ppl_a = math.exp(nll.before), math.exp(nll.after)
        out.append(Measure("perplexity", "capability", text, "perplexity", "lower", ppl_b, ppl_a, ppl_a / ppl_b - 1.0, math.expm1(nll.ci_low), math.expm1(nll.ci_high), nll.p_value, "paired t-test on window NLL", nll.n))
        out.append(_paired("next_token_accuracy", "capability", text, "fraction", "higher", before.accuracy, after.accuracy, seed))
    if kl is not None:
        t = one_sample_test(kl, seed=seed)
        out.append(Measure("kl_neutral", "capability", f"english-eval (first {len(kl)} windows)", "nats/token", "lower", 0.0, t.change, t.change, t.ci_low, t.ci_high, t.p_value, "one-sample t-test vs 0", t.n))
    return out


