"""Behaviour metrics: functions from logits to one number per row, called one way by every engine.

* Logit difference (Wang et al. 2023, "Interpretability in the Wild"):
  ``logit[pos_token] - logit[neg_token]`` at the last position, in logit units. For the
  gender-occupation suite this is ``logit(" she") - logit(" he")``.
* Target log-probability, multi-token (Meng et al. 2022): :class:`TargetLogProb`, :class:`AnswerLogProb`.
* KL divergence to a reference (clean) run (Conmy et al. 2023): :class:`KLToReference`.
* Any user function ``logits -> [batch]`` becomes a metric at the boundary (:func:`as_metric`);
  normalised recovery is :func:`circuits.probing.patching.normalise`.

**The protocol** (as EAP-IG's ``metric(logits, clean_logits, input_lengths, label)``: the engine passes
what a metric needs): every metric is a :class:`Metric`, called as ``metric(logits, ctx)`` and returning
``Float[Tensor, "row"]``. The :class:`MetricContext` says which prompt pair each row of ``logits``
belongs to, so per-pair references (a clean run's distribution, a pair's answer tokens) are looked up,
never tiled by the metric itself, however the engine packs interventions or interpolation steps along
the batch. What a metric reads and means is declared once in its :class:`MetricInfo`: the final
positions and vocabulary rows it reads (the engine unembeds only those), its unit, how many rows make a
pair, and which direction is "more of the behaviour". Nothing probes a metric with ``getattr``.
"""

from circuits.metrics.library import (
    AnswerLogitDiff,
    AnswerLogProb,
    DigitGreaterThan,
    KLToReference,
    LogitDiff,
    PerPromptLogit,
    ProbL2ToReference,
    TargetLogProb,
    TokenProb,
    TokenSetLogProb,
    append_target,
    flip_rate,
)
from circuits.metrics.protocol import (
    FunctionMetric,
    Metric,
    MetricContext,
    MetricInfo,
    MetricLike,
    as_metric,
    call_metric,
    kl_divergence,
)

__all__ = [
    "AnswerLogProb", "AnswerLogitDiff", "DigitGreaterThan", "FunctionMetric", "KLToReference", "LogitDiff", "Metric", "MetricContext",
    "MetricInfo", "MetricLike", "PerPromptLogit", "ProbL2ToReference", "TargetLogProb", "TokenProb", "TokenSetLogProb", "append_target",
    "as_metric", "call_metric", "flip_rate", "kl_divergence",
]
