"""The metric protocol: :class:`Metric`, its :class:`MetricInfo` and :class:`MetricContext`, the one call (:func:`call_metric`) and the one boundary for user functions (:func:`as_metric`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

import torch
from jaxtyping import Float, Int
from torch import Tensor


@dataclass(frozen=True)
class MetricContext:
    """What the engine tells a metric about the rows of the logits it scores.

    Attributes:
        pairs: ``[row]`` the item of the metric each logits row belongs to: the index of its prompt pair
            (into the pairs the probing method was given; a row may be one of several packed copies of
            that pair's prompt), or, for metrics with ``rows_per_pair == 2``, ``2·pair`` for the
            answer's row and ``2·pair + 1`` for the wrong answer's.
    """

    pairs: Int[Tensor, " row"]

    @staticmethod
    def rows(n: int, device: torch.device | str | None = None) -> MetricContext:
        """The context of ``n`` rows that are pairs ``0..n-1`` in order."""
        return MetricContext(torch.arange(n, device=device))


@dataclass(frozen=True)
class MetricInfo:
    """What a metric reads and what its numbers mean (declared by the metric, read by the engines).

    Attributes:
        name: Short name (``logit_diff``, ``answer_logprob``, ``kl``, ...).
        unit: Unit of the values (``logits``, ``nats``, ``probability``, ``L2(prob)``, ``metric`` for a
            user function of unknown unit).
        positions: How many final positions it reads (``None``: possibly all); the engine runs the
            unembedding only there.
        vocab: The only token ids whose *raw* logits it reads (no softmax over the vocabulary), or
            ``None``; the engine then unembeds only those rows of ``W_U``.
        rows_per_pair: ``1``, or ``2`` when each pair is scored over two rows (the answer's and the
            wrong answer's continuation) that :meth:`Metric.to_pairs` combines.
        higher_is_behaviour: Larger values mean more of the behaviour (the clean run's side); ``False``
            for distances to a clean reference such as :class:`KLToReference`.
    """

    name: str
    unit: str
    positions: int | None = None
    vocab: tuple[int, ...] | None = None
    rows_per_pair: Literal[1, 2] = 1
    higher_is_behaviour: bool = True

    def describe(self) -> str:
        """``"logit_diff (logits)"``: name and unit, as methods and atlases record a metric."""
        return f"{self.name} ({self.unit})"


class Metric(ABC):
    """A behaviour metric: ``metric(logits, ctx) -> [row]`` with a declared :class:`MetricInfo`.

    Subclasses implement :meth:`score` and :attr:`info`; calling a metric without a context scores the
    rows as pairs ``0..n-1`` (a convenience for direct use: engines always pass one).
    """

    @property
    @abstractmethod
    def info(self) -> MetricInfo:
        """What this metric reads and means."""

    @abstractmethod
    def score(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
        """One value per row of ``logits`` (see :class:`MetricContext`)."""

    def __call__(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext | None = None) -> Float[Tensor, " row"]:
        """Score ``logits``; ``ctx`` says which pair each row belongs to (default: row ``i`` is pair ``i``)."""
        return self.score(logits, ctx if ctx is not None else MetricContext.rows(logits.shape[0], logits.device))

    def to_pairs(self, values: Float[Tensor, "... row"]) -> Float[Tensor, "... pair"]:
        """Row values → pair values: ``row 2i − row 2i+1`` when two rows make a pair, else unchanged."""
        return values[..., 0::2] - values[..., 1::2] if self.info.rows_per_pair == 2 else values

    def pair_labels(self) -> Int[Tensor, " pair"] | None:
        """A label per pair where the metric has one (a pair's answer token), else ``None``."""
        return None


@dataclass(frozen=True, eq=False)
class FunctionMetric(Metric):
    """A user's plain function ``fn(logits) -> [batch]`` as a :class:`Metric` (see :func:`as_metric`).

    Attributes:
        fn: The function; it sees the logits only (its rows are pairs in order).
        unit: Its unit, if known.
        name: Its name.
    """

    fn: Callable[[Tensor], Tensor]
    unit: str = "metric"
    name: str = "custom"

    @property
    def info(self) -> MetricInfo:
        return MetricInfo(self.name, self.unit)

    def score(self, logits: Float[Tensor, "row pos d_vocab"], ctx: MetricContext) -> Float[Tensor, " row"]:
        return self.fn(logits)


#: What public probing functions accept as a metric: a :class:`Metric`, or a plain function of the logits.
MetricLike: TypeAlias = Metric | Callable[[Tensor], Tensor]


def as_metric(metric: MetricLike, *, unit: str = "metric") -> Metric:
    """The one boundary where a user's function becomes a :class:`Metric` (a metric passes through).

    Args:
        metric: A :class:`Metric`, or a function ``logits -> [batch]`` (it reads every position and the
            whole vocabulary as far as the engine knows, one row per pair).
        unit: The function's unit.

    Returns:
        The metric.

    Raises:
        TypeError: Neither a metric nor callable.
    """
    if isinstance(metric, Metric):
        return metric
    if not callable(metric):
        raise TypeError(f"a metric is a circuits.metrics.Metric or a function of the logits, got {type(metric).__name__}")
    return FunctionMetric(metric, unit=unit, name=getattr(metric, "__name__", "custom"))


def call_metric(metric: Metric, logits: Float[Tensor, "row pos d_vocab"], pairs: Int[Tensor, " row"] | None = None) -> Float[Tensor, " row"]:
    """``metric(logits, MetricContext(pairs))`` (``pairs`` default ``0..rows-1``): the engines' one call.

    Args:
        metric: The metric.
        logits: Logits, one row per (pair, packed copy).
        pairs: The pair index of each row.

    Returns:
        One value per row.
    """
    ctx = MetricContext.rows(logits.shape[0], logits.device) if pairs is None else MetricContext(pairs.to(logits.device))
    return metric(logits, ctx)


def kl_divergence(reference_logprobs: Float[Tensor, "... vocab"], logprobs: Float[Tensor, "... vocab"]) -> Float[Tensor, "..."]:
    """``KL(p_ref ‖ p) = Σ p_ref (log p_ref − log p)`` over the last axis, in nats (float32).

    The one KL of the package: metrics, training's preservation term, the evaluation's KL to the
    unedited model and the spurious scores all call it.
    """
    ref = reference_logprobs.float()
    return (ref.exp() * (ref - logprobs.float())).sum(-1)
