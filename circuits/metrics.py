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
    """Build a suite's metric for a model's tokenizer.

    Args:
        model: A model with a tokenizer.
        suite: The suite.

    Returns:
        The suite's logit-difference metric.

    Raises:
        ValueError: A target is not a single token for this tokenizer.
    """
    m = suite.spec.metric

    def ids(words: str | list[str]) -> int | tuple[int, ...]:
        return single_token_id(model, words) if isinstance(words, str) else tuple(single_token_id(model, w) for w in words)

    return LogitDiff(positive=ids(m.positive), negative=ids(m.negative))


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


def flip_rate(pred_a: Bool[np.ndarray, " item"], pred_b: Bool[np.ndarray, " item"]) -> float:
    """Fraction of counterfactual pairs whose predicted labels differ (Garg et al. 2019).

    The one flip rate of the package: the atlas's spurious-behaviour summary and the evaluation's
    spurious measures use it.
    """
    pred_a, pred_b = np.asarray(pred_a, bool), np.asarray(pred_b, bool)
    return float((pred_a != pred_b).mean())
