"""Shared pieces of the benchmark tests: fixture paths and a hand-written fake scorer (no model)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


class FakeScorer:
    """A :class:`~circuits.evaluation.benchmarks.base.Scorer` answering from hand-written tables.

    A text missing from a table raises ``KeyError``, so a test fails if a scoring rule asks for a text
    in another form than the one the test spelled out.
    """

    def __init__(
        self,
        seq: Mapping[str, float] | None = None,
        cont: Mapping[tuple[str, str], float] | None = None,
        samples: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.seq = dict(seq or {})
        self.cont = dict(cont or {})
        self.samples = dict(samples or {})
        self.sample_calls: list[dict] = []

    def sequence_logprob(self, texts: Sequence[str]) -> list[float]:
        return [self.seq[t] for t in texts]

    def continuation_logprob(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        return [self.cont[(p, c)] for p, c in zip(prompts, continuations, strict=True)]

    def sample(self, prompts: Sequence[str], *, n: int, max_new_tokens: int, seed: int) -> list[list[str]]:
        self.sample_calls.append({"prompts": list(prompts), "n": n, "max_new_tokens": max_new_tokens, "seed": seed})
        return [list(self.samples[p][:n]) for p in prompts]


def table_toxicity(table: Mapping[str, float]):
    """A toxicity classifier answering from a table (KeyError for an unexpected text)."""

    def toxicity(texts: Sequence[str]) -> list[float]:
        return [table[t] for t in texts]

    return toxicity
