"""Behaviour metrics: functions from logits to one number per prompt.

* Logit difference (Wang et al. 2023, "Interpretability in the Wild"):
  ``logit[pos_token] - logit[neg_token]`` at the last position, in logit units. For the
  gender-occupation suite this is ``logit(" she") - logit(" he")``.
* Target log-probability, multi-token (Meng et al. 2022): :class:`TargetLogProb`.
* KL divergence to a reference (clean) run (Conmy et al. 2023): :class:`KLToReference`.
* Any user callable ``logits -> [batch]`` is a :data:`Metric`; normalised recovery is
  :func:`circuits.probing.patching.normalise`.

Every metric returns a ``[batch]`` tensor so that effects keep per-prompt values for statistics.

Metrics get their context from the engine (as EAP-IG's ``metric(logits, clean_logits, input_lengths,
label)``): a metric that sets ``uses_context = True`` is called as ``metric(logits, ctx)`` with a
:class:`MetricContext` saying which prompt each row of ``logits`` belongs to, so per-prompt references
(a clean run's distribution, a planted task's targets) are looked up, never tiled by the metric
itself, however the engine packs interventions or interpolation steps along the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuits.model import single_token_id
from circuits.suites import Suite

#: A behaviour metric: logits in, one value per prompt out. A metric may declare ``positions: int``,
#: the number of final positions it reads, and ``vocab: tuple[int, ...]``, the only token ids whose raw
#: logits it reads (no softmax over the vocabulary); the engine then unembeds only those. With
#: ``uses_context = True`` it is called as ``metric(logits, ctx)`` (:class:`MetricContext`).
Metric: TypeAlias = Callable[..., Float[Tensor, " batch"]]


@dataclass(frozen=True)
class MetricContext:
    """What the engine tells a metric about the rows of the logits it scores.

    Attributes:
        prompts: ``[row]`` the index of the prompt each row belongs to (into the list of prompt pairs
            the probing method was given; a row may be one of several packed copies of a prompt).
    """

    prompts: Int[Tensor, " row"]


def call_metric(metric: Metric, logits: Float[Tensor, "row pos d_vocab"], prompts: Int[Tensor, " row"] | None = None) -> Float[Tensor, " row"]:
    """Evaluate a metric on logits, giving it its context if it takes one.

    Args:
        metric: The metric.
        logits: Logits, one row per (prompt, packed copy).
        prompts: The prompt index of each row (default: ``0..rows-1``).

    Returns:
        One value per row.
    """
    if not getattr(metric, "uses_context", False):
        return metric(logits)
    if prompts is None:
        prompts = torch.arange(logits.shape[0])
    return metric(logits, MetricContext(prompts.to(logits.device)))


def kl_divergence(reference_logprobs: Float[Tensor, "... vocab"], logprobs: Float[Tensor, "... vocab"]) -> Float[Tensor, "..."]:
    """``KL(p_ref ‖ p) = Σ p_ref (log p_ref − log p)`` over the last axis, in nats (float32).

    The one KL of the package: metrics, training's preservation term, the evaluation's KL to the
    unedited model and the spurious scores all call it.
    """
    ref = reference_logprobs.float()
    return (ref.exp() * (ref - logprobs.float())).sum(-1)


def positions_read(metric: Metric) -> int | None:
    """How many final positions a metric reads (``None``: unknown, so all)."""
    n = getattr(metric, "positions", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def vocab_read(metric: Metric) -> tuple[int, ...] | None:
    """The token ids whose raw logits a metric reads (``None``: unknown, so the whole vocabulary)."""
    ids = getattr(metric, "vocab", None)
    return tuple(int(i) for i in ids) if isinstance(ids, tuple) and ids else None


@dataclass(frozen=True)
class LogitDiff:
    """``mean logits[:, -1, positive] - mean logits[:, -1, negative]`` (logit units).

    With single tokens this is the logit difference of Wang et al. 2023 (IOI), used throughout
    activation patching; with token sets (e.g. several insults vs several compliments) each side is
    the mean logit of its set. Equal to the log-probability difference, since the log-partition
    cancels.

    Attributes:
        positive: Token id(s) counting positively (e.g. `` she``).
        negative: Token id(s) counting negatively (e.g. `` he``).
    """

    positive: int | tuple[int, ...]
    negative: int | tuple[int, ...]
    positions: int = 1

    @property
    def vocab(self) -> tuple[int, ...]:
        """The token ids this metric reads (raw logits only)."""
        ids = torch.as_tensor(self.positive).reshape(-1).tolist() + torch.as_tensor(self.negative).reshape(-1).tolist()
        return tuple(sorted(set(ids)))

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, " batch"]:
        """Evaluate on logits.

        Args:
            logits: Model output.

        Returns:
            One logit difference per prompt, at the last position.
        """
        last = logits[:, -1, :]
        pos = torch.as_tensor(self.positive).reshape(-1)
        neg = torch.as_tensor(self.negative).reshape(-1)
        return last[:, pos].mean(-1) - last[:, neg].mean(-1)


def metric_for_suite(model: Any, suite: Suite) -> LogitDiff:
    """A template suite's fixed-token logit-difference metric for a model's tokenizer.

    Pair suites (answers per pair, possibly several tokens) build their metric together with their
    token groups: :func:`circuits.probing.pairs.prepare`.

    Args:
        model: A model with a tokenizer.
        suite: A suite whose metric names ``positive`` and ``negative`` tokens.

    Returns:
        The logit-difference metric.

    Raises:
        ValueError: A target is not a single token for this tokenizer, or the suite names no tokens.
    """
    m = suite.metric
    if m.positive is None or m.negative is None:
        raise ValueError(f"suite {suite.name!r} scores each pair's own answers; build its metric with circuits.probing.pairs.prepare")

    def ids(words: str | list[str]) -> int | tuple[int, ...]:
        return single_token_id(model, words) if isinstance(words, str) else tuple(single_token_id(model, w) for w in words)

    return LogitDiff(positive=ids(m.positive), negative=ids(m.negative))


@dataclass(frozen=True)
class AnswerLogitDiff:
    """``logit[answer_i] − logit[wrong_i]`` at the last position, each row with its own prompt's tokens.

    The per-pair form of :class:`LogitDiff` (IOI's ``logit(IO) − logit(S)``, Wang et al. 2023) for suites
    whose pairs have single-token answers of their own.

    Attributes:
        answers: ``[prompt]`` the answer token of each prompt.
        wrong: ``[prompt]`` the wrong-answer token of each prompt.
    """

    answers: Int[Tensor, " prompt"]
    wrong: Int[Tensor, " prompt"]
    positions: int = 1
    uses_context: bool = True
    unit: str = "logits"

    @property
    def vocab(self) -> tuple[int, ...]:
        """Every answer and wrong-answer token (raw logits only)."""
        return tuple(sorted(set(self.answers.tolist()) | set(self.wrong.tolist())))

    def __call__(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
        last = logits[:, -1, :]
        rows = torch.arange(last.shape[0], device=last.device)
        a, w = self.answers.to(last.device)[ctx.prompts], self.wrong.to(last.device)[ctx.prompts]
        return last[rows, a] - last[rows, w]


def _teacher_forced(logits: Tensor, targets: Tensor, lengths: Tensor) -> Tensor:
    """Summed log-probability of each row's target tokens, which end at the last position.

    ``targets`` is ``[row, T]`` right-aligned (padding on the left is ignored), ``lengths`` ``[row]``.
    ``T`` is the longest continuation of the whole suite and may exceed these rows' positions: each row's
    own continuation fits in its sequence (prompt + continuation[:-1]), so only padding is cut.
    """
    t = min(targets.shape[1], logits.shape[1])
    targets = targets[:, targets.shape[1] - t :]
    logp = logits[:, -t:, :].float().log_softmax(-1)
    picked = logp.gather(-1, targets.clamp_min(0)[..., None])[..., 0]
    mask = torch.arange(t, device=logits.device)[None, :] >= (t - lengths)[:, None]
    return (picked * mask).sum(-1)


@dataclass(frozen=True)
class AnswerLogProb:
    """Teacher-forced log-probability (or probability) of each row's own continuation, in nats.

    Each row's tokens end with all but the last token of its continuation (appended by
    :func:`circuits.probing.pairs.prepare`), so one forward scores the whole continuation: the
    log-prob of continuation token ``t`` is read at the position before it (Meng et al. 2022's target
    log-probability; summed over tokens). With ``pair_difference`` the rows come two per pair — the
    answer then the wrong answer — and :meth:`to_prompts` gives each pair's
    ``log P(answer) − log P(wrong answer)``.

    Attributes:
        targets: ``[row, T]`` continuation token ids, right-aligned, ``-1`` padding on the left.
        lengths: ``[row]`` continuation lengths (≥ 1).
        probability: Report ``P`` instead of ``log P`` (single continuations only).
        pair_difference: Rows come in (answer, wrong answer) pairs.
    """

    targets: Int[Tensor, "row t"]
    lengths: Int[Tensor, " row"]
    probability: bool = False
    pair_difference: bool = False
    uses_context: bool = True

    @property
    def positions(self) -> int:
        """The last ``T`` positions are read."""
        return int(self.targets.shape[1])

    @property
    def unit(self) -> str:
        """``probability`` or ``nats``."""
        return "probability" if self.probability else "nats"

    def __call__(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
        rows = ctx.prompts
        out = _teacher_forced(logits, self.targets.to(logits.device)[rows], self.lengths.to(logits.device)[rows])
        return out.exp() if self.probability else out

    def to_prompts(self, values: Float[Tensor, "... row"]) -> Float[Tensor, "... prompt"]:
        """Row values → pair values (``answer − wrong answer`` with ``pair_difference``; else unchanged)."""
        return values[..., 0::2] - values[..., 1::2] if self.pair_difference else values


def rows_to_prompts(metric: Metric, values: Float[Tensor, "... row"]) -> Float[Tensor, "... prompt"]:
    """Combine per-row metric values into per-pair values where a metric scores a pair over several rows."""
    to_prompts = getattr(metric, "to_prompts", None)
    return values if to_prompts is None else to_prompts(values)


@dataclass(frozen=True)
class DigitGreaterThan:
    """``P(digit > t) − P(digit < t)`` of the next token over the ten digit tokens, ``t`` per prompt.

    The greater-than metric of Hanna et al. 2023 (probability mass on years after the start year minus
    before it) for tokenizers that write years digit by digit.

    Attributes:
        thresholds: ``[prompt]`` the digit each prompt's next digit should exceed.
        digits: ``[10]`` the token ids of "0" … "9".
    """

    thresholds: Int[Tensor, " prompt"]
    digits: Int[Tensor, " ten"]
    positions: int = 1
    uses_context: bool = True
    unit: str = "probability"

    def __call__(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
        p = logits[:, -1].float().softmax(-1)[:, self.digits.to(logits.device)]
        t = self.thresholds.to(logits.device)[ctx.prompts][:, None]
        d = torch.arange(10, device=logits.device)[None, :]
        return (p * (d > t)).sum(-1) - (p * (d < t)).sum(-1)


@dataclass(frozen=True)
class TokenProb:
    """``P(token)`` of the next token at the last position (causal tracing's score, Meng et al. 2022)."""

    token: int
    positions: int = 1
    unit: str = "probability"

    def __call__(self, logits: Float[Tensor, "row pos d_vocab"]) -> Float[Tensor, " row"]:
        return logits[:, -1].float().softmax(-1)[:, self.token]


@dataclass(frozen=True)
class TargetLogProb:
    """Sum of log-probabilities of a (multi-token) target continuation, in nats.

    The input tokens must end with the target's first ``T - 1`` tokens appended to the prompt (see
    :func:`append_target`): the log-prob of target token ``t`` is read at the position before it, so one
    forward scores the whole continuation (teacher forcing). Source: the target log-probability metric
    of causal tracing (Meng et al. 2022) and of toxicity probing.

    Attributes:
        target: Target token ids, ``T >= 1``.
    """

    target: tuple[int, ...]

    @property
    def positions(self) -> int:
        """It reads the last ``len(target)`` positions."""
        return len(self.target)

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, " batch"]:
        """Evaluate on logits whose last ``T`` positions predict the target tokens."""
        t = len(self.target)
        if t == 0:
            raise ValueError("empty target")
        if logits.shape[1] < t:
            raise ValueError(f"{logits.shape[1]} positions cannot score a {t}-token target")
        logp = logits[:, -t:, :].float().log_softmax(-1)
        ids = torch.tensor(self.target, device=logits.device)
        return logp.gather(-1, ids[None, :, None].expand(logits.shape[0], t, 1))[..., 0].sum(-1)


def append_target(tokens: Int[Tensor, "batch pos"], target: tuple[int, ...]) -> Int[Tensor, "batch pos_plus"]:
    """Append all but the last target token, so :class:`TargetLogProb` can score the whole target."""
    if not target:
        raise ValueError("empty target")
    extra = torch.tensor(target[:-1], dtype=tokens.dtype).expand(tokens.shape[0], len(target) - 1)
    return torch.cat([tokens, extra], dim=1)


@dataclass(frozen=True)
class KLToReference:
    """``KL(p_ref || p_model)`` of the next-token distribution at the last position, in nats.

    Use with the clean run's last-position log-probs as reference: 0 means the patched run predicts
    exactly what the clean run does. Source: the KL metric of Conmy et al. 2023 (ACDC). Each row is
    compared with its own prompt's reference (the engine's :class:`MetricContext`).

    Attributes:
        reference_logprobs: ``Float[Tensor, "prompt d_vocab"]`` log-softmaxed reference logits, one row
            per prompt (over ``labels`` only, ``[prompt, n_labels]``, when labels are given).
        labels: Restrict both distributions to these tokens (a classification task's label words),
            renormalised; ``None`` for the full vocabulary.
    """

    reference_logprobs: Float[Tensor, "prompt d_vocab"]
    positions: int = 1
    labels: tuple[int, ...] | None = None
    uses_context: bool = True
    unit: str = "nats"

    def __call__(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
        """Evaluate each row against its prompt's reference.

        Raises:
            IndexError: A row's prompt has no reference.
        """
        last = logits[:, -1, :] if self.labels is None else logits[:, -1, list(self.labels)]
        ref = self.reference_logprobs.to(logits.device)[ctx.prompts]
        return kl_divergence(ref, last.float().log_softmax(-1))


@dataclass(frozen=True)
class ProbL2ToReference:
    """``‖softmax(logits[-1]) − p_ref‖₂`` at the last position: the L2 distance of next-token probability
    vectors (the ``‖f(x) − f(do(·))‖₂`` of seed 000's invariance disruption score), each row against its
    own prompt's reference (:class:`MetricContext`).

    Attributes:
        reference_probs: ``[prompt, d_vocab]`` reference next-token probabilities.
    """

    reference_probs: Float[Tensor, "prompt d_vocab"]
    positions: int = 1
    uses_context: bool = True
    unit: str = "L2(prob)"

    def __call__(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
        ref = self.reference_probs.to(logits.device)[ctx.prompts].float()
        return (logits[:, -1, :].float().softmax(-1) - ref).norm(dim=-1)


def flip_rate(pred_a: Bool[np.ndarray, " item"], pred_b: Bool[np.ndarray, " item"]) -> float:
    """Fraction of counterfactual pairs whose predicted labels differ (Garg et al. 2019).

    The one flip rate of the package: the atlas's spurious-behaviour summary and the evaluation's
    spurious measures use it.
    """
    pred_a, pred_b = np.asarray(pred_a, bool), np.asarray(pred_b, bool)
    return float((pred_a != pred_b).mean())
