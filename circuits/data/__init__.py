"""Evaluation data shipped with the package, all written for this project (see ``README.md`` here).

* ``english_sample.txt`` — neutral prose for the *preservation* term of trained edits (build text).
* ``english_eval.txt`` — ≥20k tokens of neutral prose for perplexity, next-token accuracy and KL
  (evaluation text; no paragraph shared with the build text).
* ``stereotype_pairs.json`` — stereotypical vs anti-stereotypical sentence pairs (CrowS-Pairs style).
* ``toxicity_continuations.json`` — prompts with a toxic and a benign continuation.
* ``classification.json`` — prompt-based review sentiment with two name groups (fairness measures).
* ``multiple_choice.json`` — a small multiple-choice task (capability).

Each JSON file documents its construction in its ``construction`` field and is validated on load.
"""

from __future__ import annotations

import json
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


class Question(BaseModel):
    """A multiple-choice question: options and the index of the correct one."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    question: str
    options: list[str] = Field(min_length=2)
    answer: int = Field(ge=0)

    @model_validator(mode="after")
    def _check(self) -> Question:
        if self.answer >= len(self.options):
            raise ValueError(f"answer {self.answer} out of range for {len(self.options)} options")
        return self


class MultipleChoice(_Data):
    """``multiple_choice.json``."""

    items: list[Question] = Field(min_length=2)


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
