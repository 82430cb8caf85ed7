"""Evaluate an edit: harm (bias gap) and capability (perplexity) before vs after, on one split."""

from __future__ import annotations

from typing import Any

from circuits.editing.edit import Edit, apply_edit
from circuits.evaluation.metrics import EditEvaluation, bias_gaps, compare, perplexity
from circuits.metrics import metric_for_suite
from circuits.suites import SplitName, Suite


def evaluate_edit(
    model: Any, edit: Edit, suite: Suite, *, split: SplitName = "eval", max_pairs: int | None = None, text: str | None = None
) -> EditEvaluation:
    """Measure an edit's bias gap and perplexity against the unedited model.

    Args:
        model: The model the edit was made for.
        edit: The edit.
        suite: The behaviour suite.
        split: Which split to measure the bias gap on (default ``"eval"``: held out from building).
        max_pairs: Word pairs per template (default: all).
        text: Text for perplexity (default: the shipped English sample).

    Returns:
        Before/after numbers with a paired t-test over prompt pairs.

    Raises:
        EditError: The edit was made for another model.
        PairError: The split has misaligned pairs.
    """
    pairs = suite.pairs(split, max_pairs=max_pairs)
    metric = metric_for_suite(model, suite)
    with apply_edit(model, edit):
        gaps_after = bias_gaps(model, pairs, metric)
        ppl_after = perplexity(model, text)
    gaps_before = bias_gaps(model, pairs, metric)
    ppl_before = perplexity(model, text)
    return compare(split, gaps_before, gaps_after, ppl_before, ppl_after)
