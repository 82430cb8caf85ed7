"""Prompt pairs as tokens: grouped by length, checked aligned; reference means over them.

Activation patching is defined position by position, so a clean prompt and its corrupted prompt must
have the same token length; pairs are grouped by length so that no padding is needed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from circuits import model as M
from circuits.metrics import (
    AnswerLogitDiff,
    AnswerLogProb,
    DigitGreaterThan,
    KLToReference,
    LogitDiff,
    PerPromptLogit,
)
from circuits.model import HookedLM
from circuits.suites import MetricSpec, PromptPair, Suite


class PairError(ValueError):
    """Prompt pairs are empty or a clean prompt and its corrupted prompt differ in token length."""


@dataclass(frozen=True)
class TokenGroup:
    """Prompt pairs of one token length, tokenised.

    Attributes:
        indices: Each row's position in the original list of pairs.
        clean: Clean token ids.
        corrupted: Corrupted token ids.
    """

    indices: list[int]
    clean: Int[Tensor, "batch pos"]
    corrupted: Int[Tensor, "batch pos"]


def tokenize_pairs(model: HookedLM, pairs: Sequence[PromptPair], continuations: Sequence[Sequence[int]] | None = None, *, rows_of: Sequence[int] | None = None) -> list[TokenGroup]:
    """Tokenise prompt pairs, grouped by length, checking each pair is aligned token for token.

    Activation patching is defined position by position, so a clean prompt and its corrupted prompt
    must have the same token length; a pair that does not is refused, naming it (never patched at
    misaligned positions). Positions are exact: no padding, no realignment.

    Args:
        model: A model with a tokenizer.
        pairs: The prompt pairs (one row each, unless ``rows_of`` says otherwise).
        continuations: Token ids appended to both prompts of each row (teacher forcing of an answer),
            one list per row.
        rows_of: For each row, the index of its pair (default: row ``i`` is pair ``i``).

    Returns:
        Groups of equal-length rows, shortest first (``indices`` are row numbers).

    Raises:
        PairError: ``pairs`` is empty, or a clean prompt and its corrupted prompt differ in length.
    """
    if not pairs:
        raise PairError("no prompt pairs given")
    rows_of = list(range(len(pairs))) if rows_of is None else list(rows_of)
    clean_len = M.token_lengths(model, [p.clean for p in pairs])
    corr_len = M.token_lengths(model, [p.corrupted for p in pairs])
    for i, (a, b) in enumerate(zip(clean_len, corr_len)):
        if a != b:
            p = pairs[i]
            raise PairError(
                f"pair {i} is not aligned: {p.clean!r} is {a} tokens but {p.corrupted!r} is {b}; "
                "clean and corrupted prompts must have the same token length (a shipped suite loaded with the model, "
                "circuits.suite(name, model=lm), keeps the pairs that align)"
            )
    by_len: dict[int, list[int]] = defaultdict(list)
    for r, i in enumerate(rows_of):
        by_len[clean_len[i] + (len(continuations[r]) if continuations is not None else 0)].append(r)

    def tokens(r: int, side: str) -> Tensor:
        p = pairs[rows_of[r]]
        ids = M.tokens_of(model, p.clean if side == "clean" else p.corrupted)
        extra = [] if continuations is None else list(continuations[r])
        return torch.cat([ids, torch.tensor(extra, dtype=ids.dtype, device=ids.device)]) if extra else ids

    return [
        TokenGroup(indices=idx, clean=torch.stack([tokens(r, "clean") for r in idx]), corrupted=torch.stack([tokens(r, "corrupted") for r in idx]))
        for _, idx in sorted(by_len.items())
    ]


@dataclass(frozen=True)
class Prepared:
    """Token groups and the metric that scores them, for a list of prompt pairs.

    Attributes:
        groups: Equal-length groups of rows (``indices``: row numbers).
        metric: The metric (rows → pairs with :meth:`circuits.metrics.Metric.to_pairs`).
        n_rows: Rows (one per pair, or two for a difference of answer log-probabilities).
        n_pairs: Pairs.
        name: The metric's resolved name (``logit_diff``, ``answer_logprob``, ...).
        description: How the metric reads the logits, for atlases.
    """

    groups: list[TokenGroup]
    metric: Any
    n_rows: int
    n_pairs: int
    name: str
    description: str


def _ids(model: HookedLM, text: str, what: str, i: int) -> list[int]:
    ids = M.tokenizer_of(model).encode(text, add_special_tokens=False)
    if not ids:
        raise PairError(f"pair {i}: the {what} {text!r} has no tokens")
    return [int(t) for t in ids]


def _right_aligned(rows: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    t = max(len(r) for r in rows)
    out = torch.full((len(rows), t), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, t - len(r) :] = torch.tensor(r)
    return out, torch.tensor([len(r) for r in rows])


def prepare(model: HookedLM, pairs: Sequence[PromptPair], spec: MetricSpec) -> Prepared:
    """Tokenise pairs for a metric and build the metric (the one place a suite's metric is resolved).

    * ``logit_diff`` with ``positive``/``negative`` tokens (template suites): one row per pair,
      :class:`~circuits.metrics.LogitDiff`. Without them: each pair's single-token answer vs wrong answer,
      :class:`~circuits.metrics.AnswerLogitDiff` (multi-token answers are refused, naming the pair).
    * ``answer_logprob`` / ``answer_prob``: the answer's tokens but the last are appended to both prompts
      (teacher forcing) and :class:`~circuits.metrics.AnswerLogProb` sums their log-probabilities.
    * ``logprob_diff``: two rows per pair, the answer and the wrong answer appended; the pair's value is
      ``log P(answer) − log P(wrong answer)``.
    * ``kl``: ``KL(p_clean ‖ p)`` of the next-token distribution (one clean forward per group here).
    * ``auto``: ``logit_diff`` when every answer and wrong answer is one token, else ``logprob_diff``.

    Continuation tokens are the answer tokenised on its own (without special tokens) and appended to the
    prompt's tokens, as in ROME's and IOI's scoring of a completion.

    Raises:
        PairError: No pairs, misaligned pairs, empty answers, or multi-token answers for ``logit_diff``.
    """
    if not pairs:
        raise PairError("no prompt pairs given")
    n = len(pairs)
    if spec.positive is not None and spec.negative is not None and spec.name in ("auto", "logit_diff"):

        def tok(words: str | list[str]) -> int | tuple[int, ...]:
            return M.single_token_id(model, words) if isinstance(words, str) else tuple(M.single_token_id(model, w) for w in words)

        metric = LogitDiff(positive=tok(spec.positive), negative=tok(spec.negative))
        desc = f"logit_diff(last, {spec.positive!r} - {spec.negative!r})"
        return Prepared(tokenize_pairs(model, pairs), metric, n, n, "logit_diff", desc)
    if spec.name == "greater_than":
        try:
            tens = torch.tensor([int(p.metadata["tens"]) for p in pairs])
        except (KeyError, ValueError):
            raise PairError("the greater_than metric needs each pair's metadata['tens'] (a digit)") from None
        digits = torch.tensor([M.single_token_id(model, str(d)) for d in range(10)])
        return Prepared(tokenize_pairs(model, pairs), DigitGreaterThan(tens, digits), n, n, "greater_than", "P(next digit > start tens digit) - P(next digit < it)")
    answers = [_ids(model, p.answer, "answer", i) for i, p in enumerate(pairs)]
    wrong = [_ids(model, p.wrong_answer, "wrong answer", i) for i, p in enumerate(pairs)]
    name = spec.name
    if name == "auto":
        name = "logit_diff" if all(len(a) == 1 for a in answers + wrong) else "logprob_diff"
    if name == "logit_diff":
        multi = [i for i in range(n) if len(answers[i]) != 1 or len(wrong[i]) != 1]
        if multi:
            i = multi[0]
            raise PairError(f"pair {i}: logit_diff needs one-token answers, but {pairs[i].answer!r} / {pairs[i].wrong_answer!r} are not; use logprob_diff")
        metric = AnswerLogitDiff(torch.tensor([a[0] for a in answers]), torch.tensor([w[0] for w in wrong]))
        return Prepared(tokenize_pairs(model, pairs), metric, n, n, name, "logit_diff(last, each pair's answer - wrong answer)")
    if name in ("answer_logprob", "answer_prob"):
        targets, lengths = _right_aligned(answers)
        groups = tokenize_pairs(model, pairs, [a[:-1] for a in answers])
        metric = AnswerLogProb(targets, lengths, probability=name == "answer_prob")
        what = "P" if name == "answer_prob" else "log P"
        return Prepared(groups, metric, n, n, name, f"{what}(answer | prompt), teacher-forced, summed over the answer's tokens")
    if name == "logprob_diff":
        conts = [c for i in range(n) for c in (answers[i], wrong[i])]
        targets, lengths = _right_aligned(conts)
        groups = tokenize_pairs(model, pairs, [c[:-1] for c in conts], rows_of=[i for i in range(n) for _ in (0, 1)])
        metric = AnswerLogProb(targets, lengths, pair_difference=True)
        return Prepared(groups, metric, 2 * n, n, name, "log P(answer) - log P(wrong answer), teacher-forced, summed (nats)")
    groups = tokenize_pairs(model, pairs)
    ref = torch.zeros(n, M.shape_of(model).d_vocab)
    with torch.no_grad():
        for g in groups:
            ref[torch.tensor(g.indices)] = M.run(model, g.clean)[:, -1].float().log_softmax(-1).cpu()
    return Prepared(groups, KLToReference(ref), n, n, "kl", "KL(p(next | clean) || p(next | x)), last position (nats)")


@torch.no_grad()
def mean_activations(model: HookedLM, tokens: Int[Tensor, "batch pos"], names: Sequence[str]) -> dict[str, Tensor]:
    """Reference means for :class:`~circuits.probing.interventions.Mean`: the batch mean per position.

    Args:
        model: A ``TransformerBridge``.
        tokens: Reference prompts (one length).
        names: Hook names.

    Returns:
        ``{hook_name: activation.mean(0)}`` (shape of the activation without the batch axis).
    """
    _, cache = M.run_with_cache(model, tokens, names)
    return {n: cache[n].mean(0) for n in names}


@torch.no_grad()
def position_mean_activations(model: HookedLM, groups: Sequence[TokenGroup], names: Sequence[str]) -> dict[str, Tensor]:
    """Means over every position of every clean and corrupted prompt of ``groups`` (any lengths).

    For :class:`~circuits.probing.interventions.Mean` with ``over_positions=True``. Not for
    ``hook_pattern`` (whose axes are not positions first).

    Returns:
        ``{hook_name: mean}`` with the batch and position axes averaged out.
    """
    sums: dict[str, Tensor] = {}
    count = 0
    for g in groups:
        _, cache = M.run_with_cache(model, torch.cat([g.clean, g.corrupted]), names)
        for n in names:
            sums[n] = sums.get(n, 0) + cache[n].sum(dim=(0, 1))
        count += 2 * g.clean.shape[0] * g.clean.shape[1]
    return {n: v / count for n, v in sums.items()}


def metric_for_suite(model: HookedLM, suite: Suite) -> LogitDiff:
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
        return M.single_token_id(model, words) if isinstance(words, str) else tuple(M.single_token_id(model, w) for w in words)

    return LogitDiff(positive=ids(m.positive), negative=ids(m.negative))


def induction(model: HookedLM, *, n: int = 16, block: int = 25, seed: int = 0) -> Any:
    """Repeated random tokens, tokenised: clean ``[BOS, A, A]``, corrupted ``[BOS, B, A]`` (BOS as the tokenization policy says).

    The metric (:class:`circuits.metrics.PerPromptLogit`) is the mean over the second copy's last
    ``block − 2`` positions of ``logit(next token of A) − mean logit``: in-context copying.

    Returns:
        :class:`Prepared` (one group).
    """
    g = torch.Generator().manual_seed(seed)
    vocab = M.shape_of(model).d_vocab
    bos = M.bos_token_id(model) if model.tokenization.prepend_bos else None
    a = torch.randint(1000, min(vocab, 20000), (n, block), generator=g)
    b = torch.randint(1000, min(vocab, 20000), (n, block), generator=g)
    head = torch.full((n, 1 if bos is not None else 0), bos if bos is not None else 0)
    clean = torch.cat([head, a, a[:, :-1]], 1)
    corrupted = torch.cat([head, b, a[:, :-1]], 1)
    metric = PerPromptLogit(a[:, 2:])
    return Prepared([TokenGroup(list(range(n)), clean, corrupted)], metric, n, n, "induction", f"copying logit over the second copy's last {block - 2} positions")
