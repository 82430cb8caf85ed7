"""The shipped metrics (logit difference, answer log-probabilities, targets, KL and L2 to a reference, token sets, per-prompt logits) and :func:`flip_rate`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuits.metrics.protocol import Metric, MetricContext, MetricInfo, kl_divergence


@dataclass(frozen=True)
class LogitDiff(Metric):
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

    @property
    def info(self) -> MetricInfo:
        """Reads the last position's raw logits of the two token sets (logits)."""
        ids = torch.as_tensor(self.positive).reshape(-1).tolist() + torch.as_tensor(self.negative).reshape(-1).tolist()
        return MetricInfo("logit_diff", "logits", positions=1, vocab=tuple(sorted(set(ids))))

    def score(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
        """One logit difference per row, at the last position."""
        last = logits[:, -1, :]
        pos = torch.as_tensor(self.positive).reshape(-1)
        neg = torch.as_tensor(self.negative).reshape(-1)
        return last[:, pos].mean(-1) - last[:, neg].mean(-1)


@dataclass(frozen=True)
class AnswerLogitDiff(Metric):
    """``logit[answer_i] − logit[wrong_i]`` at the last position, each row with its own prompt's tokens.

    The per-pair form of :class:`LogitDiff` (IOI's ``logit(IO) − logit(S)``, Wang et al. 2023) for suites
    whose pairs have single-token answers of their own.

    Attributes:
        answers: ``[prompt]`` the answer token of each prompt.
        wrong: ``[prompt]`` the wrong-answer token of each prompt.
    """

    answers: Int[Tensor, " prompt"]
    wrong: Int[Tensor, " prompt"]

    @property
    def info(self) -> MetricInfo:
        """Reads the last position's raw logits of every answer and wrong answer (logits)."""
        vocab = tuple(sorted(set(self.answers.tolist()) | set(self.wrong.tolist())))
        return MetricInfo("answer_logit_diff", "logits", positions=1, vocab=vocab)

    def score(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
        last = logits[:, -1, :]
        rows = torch.arange(last.shape[0], device=last.device)
        a, w = self.answers.to(last.device)[ctx.pairs], self.wrong.to(last.device)[ctx.pairs]
        return last[rows, a] - last[rows, w]

    def pair_labels(self) -> Int[Tensor, " pair"]:
        """Each pair's answer token."""
        return self.answers


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
class AnswerLogProb(Metric):
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

    @property
    def info(self) -> MetricInfo:
        """Reads the last ``T`` positions (softmax over the vocabulary); nats or probability; 2 rows a pair with ``pair_difference``."""
        return MetricInfo(
            "answer_prob" if self.probability else ("logprob_diff" if self.pair_difference else "answer_logprob"),
            "probability" if self.probability else "nats", positions=int(self.targets.shape[1]),
            rows_per_pair=2 if self.pair_difference else 1,
        )

    def score(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
        rows = ctx.pairs  # the engine's row index here is the metric's row (two per pair with pair_difference)
        out = _teacher_forced(logits, self.targets.to(logits.device)[rows], self.lengths.to(logits.device)[rows])
        return out.exp() if self.probability else out


@dataclass(frozen=True)
class DigitGreaterThan(Metric):
    """``P(digit > t) − P(digit < t)`` of the next token over the ten digit tokens, ``t`` per prompt.

    The greater-than metric of Hanna et al. 2023 (probability mass on years after the start year minus
    before it) for tokenizers that write years digit by digit.

    Attributes:
        thresholds: ``[prompt]`` the digit each prompt's next digit should exceed.
        digits: ``[10]`` the token ids of "0" … "9".
    """

    thresholds: Int[Tensor, " prompt"]
    digits: Int[Tensor, " ten"]

    @property
    def info(self) -> MetricInfo:
        """Reads the last position (softmax over the vocabulary); probability."""
        return MetricInfo("greater_than", "probability", positions=1)

    def score(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
        p = logits[:, -1].float().softmax(-1)[:, self.digits.to(logits.device)]
        t = self.thresholds.to(logits.device)[ctx.pairs][:, None]
        d = torch.arange(10, device=logits.device)[None, :]
        return (p * (d > t)).sum(-1) - (p * (d < t)).sum(-1)


@dataclass(frozen=True)
class TokenProb(Metric):
    """``P(token)`` of the next token at the last position (causal tracing's score, Meng et al. 2022)."""

    token: int

    @property
    def info(self) -> MetricInfo:
        """Reads the last position (softmax); probability."""
        return MetricInfo("p(target)", "probability", positions=1)

    def score(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
        return logits[:, -1].float().softmax(-1)[:, self.token]


@dataclass(frozen=True)
class TargetLogProb(Metric):
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
    def info(self) -> MetricInfo:
        """Reads the last ``len(target)`` positions (softmax); nats."""
        return MetricInfo("target_logprob", "nats", positions=max(1, len(self.target)))

    def score(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
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
class KLToReference(Metric):
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
    labels: tuple[int, ...] | None = None

    @property
    def info(self) -> MetricInfo:
        """Reads the last position (the label tokens' raw logits, or the whole vocabulary); nats; lower is closer to the reference."""
        return MetricInfo("kl", "nats", positions=1, vocab=self.labels, higher_is_behaviour=False)

    def score(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
        """Evaluate each row against its pair's reference.

        Raises:
            IndexError: A row's pair has no reference.
        """
        last = logits[:, -1, :] if self.labels is None else logits[:, -1, list(self.labels)]
        ref = self.reference_logprobs.to(logits.device)[ctx.pairs]
        return kl_divergence(ref, last.float().log_softmax(-1))


@dataclass(frozen=True)
class ProbL2ToReference(Metric):
    """``‖softmax(logits[-1]) − p_ref‖₂`` at the last position: the L2 distance of next-token probability
    vectors (the ``‖f(x) − f(do(·))‖₂`` of seed 000's invariance disruption score), each row against its
    own prompt's reference (:class:`MetricContext`).

    Attributes:
        reference_probs: ``[prompt, d_vocab]`` reference next-token probabilities.
    """

    reference_probs: Float[Tensor, "prompt d_vocab"]

    @property
    def info(self) -> MetricInfo:
        """Reads the last position (softmax); probability L2; lower is closer to the reference."""
        return MetricInfo("prob_l2", "L2(prob)", positions=1, higher_is_behaviour=False)

    def score(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
        ref = self.reference_probs.to(logits.device)[ctx.pairs].float()
        return (logits[:, -1, :].float().softmax(-1) - ref).norm(dim=-1)


@dataclass(frozen=True)
class TokenSetLogProb(Metric):
    """``log Σ_{t ∈ tokens} p(t)`` at the last position (nats): the log-probability that the next token is
    one of a set of single-token continuations, e.g. a suite's harmful continuations ``y_h`` (seed 004).

    Attributes:
        tokens: The token ids.
    """

    tokens: tuple[int, ...]

    @property
    def info(self) -> MetricInfo:
        """Reads the last position (softmax); nats."""
        return MetricInfo("token_set_logprob", "nats", positions=1)

    def score(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
        """Evaluate on logits.

        Raises:
            ValueError: An empty token set.
        """
        if not self.tokens:
            raise ValueError("empty token set")
        return logits[:, -1, :].float().log_softmax(-1)[:, list(self.tokens)].logsumexp(-1)


@dataclass(frozen=True)
class PerPromptLogit(Metric):
    """``logit[target] − mean logit`` per prompt (logit units), at the last position or averaged over the last few.

    With ``targets`` of shape ``[prompt]`` the metric reads the last position; with ``[prompt, k]`` it
    reads the last ``k`` positions, target ``j`` at position ``−k + j``, and averages them (e.g. every
    token of a repeated block, for in-context copying). Each row is scored against its own prompt's
    targets (:class:`MetricContext`).
    """

    targets: Int[Tensor, " prompt"] | Int[Tensor, "prompt k"]

    @property
    def info(self) -> MetricInfo:
        """Reads the last ``k`` positions (the mean logit needs every vocabulary row); logits."""
        return MetricInfo("per_prompt_logit", "logits", positions=1 if self.targets.dim() == 1 else int(self.targets.shape[1]))

    def score(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
        k = self.info.positions or 1
        read = logits[:, -k:, :]
        t = self.targets.reshape(self.targets.shape[0], -1).to(logits.device)[ctx.pairs]
        return (read.gather(-1, t[..., None])[..., 0] - read.mean(-1)).mean(-1)


def flip_rate(pred_a: Bool[np.ndarray, " item"], pred_b: Bool[np.ndarray, " item"]) -> float:
    """Fraction of counterfactual pairs whose predicted labels differ (Garg et al. 2019).

    The one flip rate of the package: the atlas's spurious-behaviour summary and the evaluation's
    spurious measures use it.
    """
    pred_a, pred_b = np.asarray(pred_a, bool), np.asarray(pred_b, bool)
    return float((pred_a != pred_b).mean())
