"""A behaviour suite: counterfactual prompt pairs with answers, split into build and eval.

A suite is a list of :class:`PromptPair` records — a clean prompt, a corrupted prompt, the answer the
clean prompt should continue with, the wrong answer the corrupted one should — each in a split
(``build`` finds components and fits edits; ``eval`` measures them) and a group (a template or
domain: splits are made by group, and spuriousness scores compare groups), plus the metric that scores
a pair (:class:`MetricSpec`). Template suites (:mod:`circuits.suites.templates`), files of pairs
(:mod:`circuits.suites.files`), Python (:meth:`Suite.from_pairs`, :meth:`Suite.from_dataframe`) and the
standard circuit tasks (:mod:`circuits.suites.tasks`) all become this one type.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from circuits.io import validation_message

SplitName = Literal["build", "eval"]
#: ``harmful``: a signed behaviour to remove; ``spurious``: any change caused by an irrelevant feature;
#: ``capability``: a behaviour to keep (the standard circuit tasks), probed like a harmful one.
SuiteKind = Literal["harmful", "spurious", "capability"]
#: How a pair is scored: the logit difference of fixed tokens (``positive``/``negative``) or of each
#: pair's single-token answer vs wrong answer; the teacher-forced log-probability of the (multi-token)
#: answer; its probability; the difference of answer and wrong-answer log-probabilities; the KL of the
#: next-token distribution to the clean run's.
#: ``auto`` picks ``logit_diff`` when every answer and wrong answer is one token, else ``logprob_diff``.
#: ``greater_than``: ``P(digit > t) − P(digit < t)`` of the next token over the digits 0–9, ``t`` the pair's
#: ``metadata["tens"]`` (the greater-than task at the digit level).
MetricName = Literal["auto", "logit_diff", "answer_logprob", "answer_prob", "logprob_diff", "kl", "greater_than"]


class SuiteError(ValueError):
    """A suite file is malformed, a requested suite does not exist, or a suite cannot be used as asked."""


class MetricSpec(BaseModel):
    """How a suite's pairs are scored (see :data:`MetricName`).

    Attributes:
        name: The metric.
        positive: For ``logit_diff`` of fixed tokens: the token(s) counting positively (e.g. ``" she"``).
        negative: The token(s) counting negatively. Without ``positive``/``negative``, ``logit_diff`` uses
            each pair's answer and wrong answer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: MetricName = "auto"
    positive: str | list[str] | None = None
    negative: str | list[str] | None = None


@dataclass(frozen=True)
class PromptPair:
    """One counterfactual pair.

    Attributes:
        clean: The prompt where the behaviour is present (e.g. "The nurse said that").
        corrupted: The counterfactual prompt (e.g. "The mechanic said that").
        answer: What the clean prompt should continue with (may be several tokens).
        wrong_answer: What the corrupted prompt should continue with.
        group: The template or domain the pair comes from (splits and spuriousness scores use it).
        split: ``"build"`` or ``"eval"``.
        clean_word: For template suites: the word filled into the clean prompt.
        corrupted_word: For template suites: the word filled into the corrupted prompt.
        metadata: Free-form strings from the suite file.
    """

    clean: str
    corrupted: str
    answer: str = ""
    wrong_answer: str = ""
    group: str = ""
    split: SplitName = "build"
    clean_word: str = ""
    corrupted_word: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def template(self) -> str:
        """The group (a template suite's template)."""
        return self.group


_FIELDS = ("clean", "corrupted", "answer", "wrong_answer", "split", "group", "metadata")


class PairRecord(BaseModel):
    """One record of a pair file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    clean: str = Field(min_length=1)
    corrupted: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    wrong_answer: str = Field(min_length=1)
    split: Literal["build", "eval"] | None = None
    group: str | None = None
    metadata: dict[str, str] | None = None

    @classmethod
    def validated(cls, raw: Any, *, where: str) -> PairRecord:
        """Validate one record.

        Raises:
            SuiteError: ``where: field X: problem``.
        """
        if not isinstance(raw, dict):
            raise SuiteError(f"{where}: a record must be an object with fields {', '.join(_FIELDS[:4])}, got {type(raw).__name__}")
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise SuiteError(f"{where}: {validation_message(e)}") from None


def record_to_pair(rec: PairRecord, index: int) -> PromptPair:
    """A validated record as a pair (a record without a group is its own group)."""
    return PromptPair(
        clean=rec.clean, corrupted=rec.corrupted, answer=rec.answer, wrong_answer=rec.wrong_answer,
        group=rec.group if rec.group is not None else f"record {index}", split=rec.split or "build",
        metadata=dict(rec.metadata or {}),
    )


def seeded_split(pairs: Sequence[PromptPair], *, by: Literal["group", "record"] = "group", eval_fraction: float = 0.3, seed: int = 0) -> tuple[list[PromptPair], str]:
    """Assign build/eval splits where a file gave none: whole groups (templates, domains) or records.

    Args:
        pairs: The pairs.
        by: Split by ``"group"`` (no group in both splits; needs ≥2 groups) or by ``"record"``.
        eval_fraction: Fraction of groups (or records) in ``eval``.
        seed: Shuffle seed.

    Returns:
        ``(pairs with splits, the rule as recorded in the suite)``.

    Raises:
        SuiteError: Splitting by group with fewer than 2 groups, or fewer than 2 records.
    """
    keys = list(dict.fromkeys(p.group for p in pairs)) if by == "group" else list(range(len(pairs)))
    if len(keys) < 2:
        raise SuiteError(f"cannot split {len(keys)} {by}(s) into build and eval; give a split column or more {by}s")
    order = keys[:]
    random.Random(seed).shuffle(order)
    n_eval = min(len(order) - 1, max(1, round(eval_fraction * len(order))))
    held = set(order[:n_eval])
    out = [replace(p, split="eval" if (p.group if by == "group" else i) in held else "build") for i, p in enumerate(pairs)]
    return out, f"seeded split by {by} (seed {seed}, {n_eval} of {len(order)} {by}s held out for eval)"


def _hash(content: Any) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Suite:
    """Prompt pairs with answers, splits and a metric.

    Attributes:
        name: The suite's name (recorded in atlases and edits).
        kind: ``"harmful"`` (a signed behaviour to remove) or ``"spurious"`` (any change caused by an
            irrelevant feature is spurious).
        metric: How pairs are scored.
        records: Every pair, each with its split.
        content_hash: ``"sha256:..."`` of the suite's canonical content (provenance).
        description: What behaviour the suite probes.
        construction: How the data was made.
        split_rule: How the splits were assigned (``"given"``, or the seeded rule).
        spec: A template suite's validated file content (``None`` for pair suites).
    """

    name: str
    kind: SuiteKind
    metric: MetricSpec
    records: tuple[PromptPair, ...]
    content_hash: str
    description: str = ""
    construction: str = ""
    split_rule: str = "given"
    spec: Any = None

    def pairs(self, split: SplitName, *, max_pairs: int | None = None) -> list[PromptPair]:
        """The pairs of a split, group-major.

        Args:
            split: ``"build"`` or ``"eval"``.
            max_pairs: Keep at most this many pairs per group (``None``: all).

        Returns:
            The pairs.

        Raises:
            SuiteError: The split is empty or ``max_pairs < 1``.
        """
        if max_pairs is not None and max_pairs < 1:
            raise SuiteError(f"max_pairs must be >= 1, got {max_pairs}")
        out, seen = [], dict[str, int]()
        for p in self.records:
            if p.split != split:
                continue
            seen[p.group] = seen.get(p.group, 0) + 1
            if max_pairs is None or seen[p.group] <= max_pairs:
                out.append(p)
        if not out:
            raise SuiteError(f"suite {self.name!r} has no {split!r} pairs")
        return out

    @property
    def multi_token(self) -> bool:
        """Whether answers are given (pair suites) rather than fixed metric tokens."""
        return self.metric.positive is None

    @classmethod
    def from_pairs(
        cls,
        name: str,
        pairs: Iterable[PromptPair | dict[str, Any]],
        *,
        kind: SuiteKind = "harmful",
        metric: MetricSpec | MetricName | None = None,
        description: str = "",
        construction: str = "",
        split_by: Literal["group", "record"] = "group",
        seed: int = 0,
    ) -> Suite:
        """A suite from pairs in Python (dicts with the file format's fields, or :class:`PromptPair`).

        Pairs without a split get a seeded split by group (each pair's own group if none is given) or
        by record, recorded in :attr:`split_rule`.

        Raises:
            SuiteError: No pairs, a pair missing a field, or a split that cannot be made.
        """
        out: list[PromptPair] = []
        given: list[bool] = []
        for i, p in enumerate(pairs):
            if isinstance(p, PromptPair):
                out.append(p)
                given.append(True)
                continue
            rec = PairRecord.validated(p, where=f"pair {i}")
            out.append(record_to_pair(rec, i))
            given.append(rec.split is not None)
        if not out:
            raise SuiteError(f"suite {name!r} has no pairs")
        rule = "given"
        if not all(given):
            if any(given):
                raise SuiteError(f"suite {name!r}: give a split for every pair or for none")
            out, rule = seeded_split(out, by=split_by, seed=seed)
        spec = metric if isinstance(metric, MetricSpec) else MetricSpec(name=metric or "auto")
        content = {"name": name, "kind": kind, "metric": spec.model_dump(), "pairs": [p.__dict__ for p in out]}
        return cls(name, kind, spec, tuple(out), _hash(content), description, construction, rule)

    @classmethod
    def from_dataframe(cls, df: Any, name: str, **kwargs: Any) -> Suite:
        """A suite from a pandas DataFrame with the columns of the file format (``clean``, ``corrupted``,
        ``answer``, ``wrong_answer``; optional ``split``, ``group``, ``metadata``); see :meth:`from_pairs`."""
        rows = [{k: v for k, v in r.items() if not (isinstance(v, float) and v != v)} for r in df.to_dict(orient="records")]
        return cls.from_pairs(name, rows, **kwargs)
