"""Evaluation data shipped with the package, all written for this project (see ``README.md`` here).

* ``english_sample.txt`` — neutral prose for the *preservation* term of trained edits (build text).
* ``english_eval.txt`` — ≥20k tokens of neutral prose for perplexity, next-token accuracy and KL
  (evaluation text; no paragraph shared with the build text).
* ``stereotype_pairs.json`` — stereotypical vs anti-stereotypical sentence pairs (CrowS-Pairs style).
* ``toxicity_continuations.json`` — prompts with a toxic and a benign continuation.
* ``classification.json`` — prompt-based review sentiment with two name groups (fairness measures).
* ``multiple_choice.json`` — a multiple-choice task in eight skills (capability).
* ``factual_qa.json`` — short-answer factual questions scored on a greedy continuation (capability).
* ``identity_pairs.json`` — identity-targeted stereotype minimal pairs over 8 bias types, with build/eval splits.
* ``identity_prompts.json`` — neutral prompts mentioning an identity group, for generation-based toxicity.

Each JSON file documents its construction in its ``construction`` field and is validated on load.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from functools import cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from circuits.io import validation_message


class DataError(ValueError):
    """A shipped data file is malformed."""


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str
    construction: str


class StereotypePair(BaseModel):
    """One sentence pair: the stereotypical and the anti-stereotypical version."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stereotype: str = Field(min_length=1)
    anti_stereotype: str = Field(min_length=1)


class StereotypePairs(_Data):
    """``stereotype_pairs.json``."""

    pairs: list[StereotypePair] = Field(min_length=2)


class Continuation(BaseModel):
    """A prompt with a toxic and a benign continuation (each starting with a space)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt: str = Field(min_length=1)
    toxic: str = Field(min_length=1)
    benign: str = Field(min_length=1)


class ToxicityContinuations(_Data):
    """``toxicity_continuations.json``."""

    items: list[Continuation] = Field(min_length=2)


class Review(BaseModel):
    """A review template (with the name slot) and its true label."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    template: str
    label: Literal["positive", "negative"]


class ClassificationTask(_Data):
    """``classification.json``: every review × every name of groups ``A`` and ``B`` (aligned by index)."""

    slot: str
    labels: dict[Literal["positive", "negative"], str]
    groups: dict[Literal["A", "B"], list[str]]
    items: list[Review] = Field(min_length=2)

    @model_validator(mode="after")
    def _check(self) -> ClassificationTask:
        if set(self.labels) != {"positive", "negative"} or set(self.groups) != {"A", "B"}:
            raise ValueError("labels must be {positive, negative} and groups {A, B}")
        if len(self.groups["A"]) != len(self.groups["B"]) or not self.groups["A"]:
            raise ValueError("groups A and B must be non-empty and of equal size (names align by index)")
        for r in self.items:
            if r.template.count(self.slot) != 1:
                raise ValueError(f"template {r.template!r} must contain {self.slot} once")
        if {r.label for r in self.items} != {"positive", "negative"}:
            raise ValueError("items must include both labels")
        return self


Skill = Literal[
    "science", "geography", "arithmetic", "vocabulary", "grammar", "common_sense", "time_and_units", "animals_and_nature"
]
"""The skills of ``multiple_choice.json`` (accuracy can be reported per skill)."""


class Question(BaseModel):
    """A multiple-choice question: options, the index of the correct one, and its skill."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    question: str
    options: list[str] = Field(min_length=2)
    answer: int = Field(ge=0)
    skill: Skill

    @model_validator(mode="after")
    def _check(self) -> Question:
        if self.answer >= len(self.options):
            raise ValueError(f"answer {self.answer} out of range for {len(self.options)} options")
        return self


class MultipleChoice(_Data):
    """``multiple_choice.json``."""

    items: list[Question] = Field(min_length=2)


class FactQuestion(BaseModel):
    """A short-answer question with its answer and accepted aliases (the answer among them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    aliases: list[str] = Field(min_length=1)
    skill: Literal["geography", "science", "language", "numbers", "everyday"]

    @model_validator(mode="after")
    def _check(self) -> FactQuestion:
        if not 1 <= len(self.answer.split()) <= 2:
            raise ValueError(f"answer {self.answer!r} must be one or two words")
        if self.answer not in self.aliases:
            raise ValueError(f"aliases of {self.question!r} must include the answer {self.answer!r}")
        return self

    def is_correct(self, continuation: str) -> bool:
        """Whether a generated continuation answers the question (the scoring in the file's description).

        Args:
            continuation: The model's greedy continuation of :meth:`FactualQA.prompt`.

        Returns:
            True if the stripped continuation starts, case-insensitively, with the answer or an alias that
            is followed by the end of the text or a character that is not a letter or digit.
        """
        text = continuation.strip().lower()
        return any(re.match(re.escape(a.lower()) + r"(?![^\W_])", text) for a in self.aliases)


class FactualQA(_Data):
    """``factual_qa.json``: few-shot prompts (:meth:`prompt`), scored by :meth:`FactQuestion.is_correct`.

    ``shots`` are worked examples put before every question and never scored (held out: no item repeats
    a shot's question); without them an instruct model mostly ends its turn instead of answering.
    """

    shots: list[FactQuestion] = Field(default_factory=list)
    items: list[FactQuestion] = Field(min_length=2)

    @model_validator(mode="after")
    def _check(self) -> FactualQA:
        questions = [q.question for q in self.items]
        if len(set(questions)) != len(questions):
            raise ValueError("questions must be unique")
        if shared := {s.question for s in self.shots} & set(questions):
            raise ValueError(f"shots must be held out from the items; shared: {sorted(shared)}")
        return self

    def prompt(self, item: FactQuestion) -> str:
        """``"Question: {q}\\nAnswer: {a}\\n\\n"`` per shot, then ``"Question: {question}\\nAnswer:"``."""
        return "".join(f"Question: {s.question}\nAnswer: {s.answer}\n\n" for s in self.shots) + f"Question: {item.question}\nAnswer:"


BiasType = Literal[
    "gender", "religion", "race_ethnicity", "nationality", "disability", "age", "sexual_orientation", "socioeconomic"
]
"""The bias types of the identity data."""


class IdentityPair(BaseModel):
    """One minimal pair: ``template`` filled with the stereotyped group vs the contrast group."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(min_length=1)
    bias_type: BiasType
    template: str
    stereotyped_group: str = Field(min_length=1)
    contrast_group: str = Field(min_length=1)
    template_id: str = Field(min_length=1)
    split: Literal["build", "eval"]

    @model_validator(mode="after")
    def _check(self) -> IdentityPair:
        if self.template.count("{group}") != 1:
            raise ValueError(f"template {self.template!r} must contain {{group}} exactly once")
        if self.stereotyped_group == self.contrast_group:
            raise ValueError(f"item {self.id!r}: the two groups must differ")
        return self

    @property
    def stereotyped(self) -> str:
        """The sentence about the stereotyped group."""
        return self.template.replace("{group}", self.stereotyped_group)

    @property
    def contrast(self) -> str:
        """The same sentence about the contrast group."""
        return self.template.replace("{group}", self.contrast_group)


class IdentityPairs(_Data):
    """``identity_pairs.json``: build and eval share no template and no group term within a bias type."""

    bias_types: list[BiasType] = Field(min_length=1)
    items: list[IdentityPair] = Field(min_length=2)

    @model_validator(mode="after")
    def _check(self) -> IdentityPairs:
        if len({i.id for i in self.items}) != len(self.items):
            raise ValueError("item ids must be unique")
        if {i.bias_type for i in self.items} != set(self.bias_types):
            raise ValueError("bias_types must list exactly the bias types of the items")
        templates: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
        terms: dict[tuple[str, str], set[str]] = defaultdict(set)
        ids: dict[tuple[str, str], set[str]] = defaultdict(set)
        for i in self.items:
            templates[i.template_id].add((i.bias_type, i.split, i.template))
            terms[i.bias_type, i.split] |= {i.stereotyped_group, i.contrast_group}
            ids[i.bias_type, i.split].add(i.template_id)
        for tid, uses in templates.items():
            if len(uses) != 1:
                raise ValueError(f"template_id {tid!r} must have one template, bias type and split")
        for b in self.bias_types:
            shared = terms[b, "build"] & terms[b, "eval"]
            if shared:
                raise ValueError(f"{b}: build and eval share group terms {sorted(shared)}")
            if not ids[b, "build"] or not ids[b, "eval"]:
                raise ValueError(f"{b}: needs items in both the build and the eval split")
        return self


class IdentityPrompt(BaseModel):
    """A neutral prompt that mentions an identity group and ends where a continuation begins."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    group: str = Field(min_length=1)
    bias_type: BiasType
    prompt: str = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> IdentityPrompt:
        if self.prompt != self.prompt.strip():
            raise ValueError(f"prompt {self.prompt!r} must not start or end with whitespace")
        return self


class IdentityPrompts(_Data):
    """``identity_prompts.json``: the same frames for every group (prompt ``i`` of each group uses frame ``i``)."""

    items: list[IdentityPrompt] = Field(min_length=2)

    @model_validator(mode="after")
    def _check(self) -> IdentityPrompts:
        prompts = [p.prompt for p in self.items]
        if len(set(prompts)) != len(prompts):
            raise ValueError("prompts must be unique")
        per_group: dict[str, int] = defaultdict(int)
        for p in self.items:
            per_group[p.group] += 1
        if len(set(per_group.values())) != 1:
            raise ValueError(f"every group must have the same number of prompts, got {dict(per_group)}")
        return self


def _text(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _parse(model: type[_Data], name: str) -> _Data:
    try:
        return model.model_validate(json.loads(_text(name)))
    except json.JSONDecodeError as e:
        raise DataError(f"{name} is not valid JSON: {e}") from None
    except ValidationError as e:
        raise DataError(f"{name}: {validation_message(e)}") from None


def english_sample() -> str:
    """The build text: neutral prose used by trained edits' preservation (KL) term."""
    return _text("english_sample.txt")


def english_eval() -> str:
    """The evaluation text: ≥20k tokens of neutral prose for perplexity, next-token accuracy and KL."""
    return _text("english_eval.txt")


@cache
def stereotype_pairs() -> StereotypePairs:
    """The shipped stereotype sentence pairs (validated). Raises: DataError."""
    return _parse(StereotypePairs, "stereotype_pairs.json")  # type: ignore[return-value]


@cache
def toxicity_continuations() -> ToxicityContinuations:
    """The shipped toxic/benign continuations (validated). Raises: DataError."""
    return _parse(ToxicityContinuations, "toxicity_continuations.json")  # type: ignore[return-value]


@cache
def classification_task() -> ClassificationTask:
    """The shipped review-classification task with two name groups (validated). Raises: DataError."""
    return _parse(ClassificationTask, "classification.json")  # type: ignore[return-value]


@cache
def multiple_choice() -> MultipleChoice:
    """The shipped multiple-choice task (validated). Raises: DataError."""
    return _parse(MultipleChoice, "multiple_choice.json")  # type: ignore[return-value]


@cache
def factual_qa() -> FactualQA:
    """The shipped short-answer factual questions (validated). Raises: DataError."""
    return _parse(FactualQA, "factual_qa.json")  # type: ignore[return-value]


@cache
def identity_pairs() -> IdentityPairs:
    """The shipped identity stereotype minimal pairs (validated). Raises: DataError."""
    return _parse(IdentityPairs, "identity_pairs.json")  # type: ignore[return-value]


@cache
def identity_prompts() -> IdentityPrompts:
    """The shipped identity-mention prompts for generation toxicity (validated). Raises: DataError."""
    return _parse(IdentityPrompts, "identity_prompts.json")  # type: ignore[return-value]
