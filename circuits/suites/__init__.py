"""Counterfactual behaviour suites shipped as package data.

A suite is a set of templates and two aligned word lists. Filling the same template with a *clean*
word and a *corrupted* word gives a prompt pair that differs in exactly one token, the shape activation
patching needs (Meng et al. 2022; Wang et al. 2023, "Interpretability in the Wild"). Each suite has a
``build`` split (used to find components and fit edits) and an ``eval`` split (used to measure them);
the two share no template and no word, so an edit is never scored on the prompts it was built from.

Shipped suites (``circuits/suites/data/*.json``; each file documents its own construction):

* ``gender-occupation`` (harmful): stereotypically female vs male occupations, metric
  ``logit(" she") - logit(" he")`` at the last position. Word lists follow the stereotype direction
  of WinoBias (Zhao et al. 2018, from US labour statistics), restricted to words that are one token
  for the SmolLM2 tokenizer and carry no grammatical gender. 22 + 22 occupations, 10 templates.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from circuits.io import validation_message

SplitName = Literal["build", "eval"]


class SuiteError(ValueError):
    """A suite file is malformed or a requested suite does not exist."""


class _Metric(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["logit_diff"]
    positive: str | list[str]
    negative: str | list[str]


class _Split(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    templates: list[str] = Field(min_length=1)
    clean_words: list[str] = Field(min_length=1)
    corrupted_words: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _aligned(self) -> _Split:
        if len(self.clean_words) != len(self.corrupted_words):
            raise ValueError(
                f"clean_words ({len(self.clean_words)}) and corrupted_words "
                f"({len(self.corrupted_words)}) must pair up one to one"
            )
        return self


class SuiteSpec(BaseModel):
    """The validated content of a suite file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    kind: Literal["harmful", "spurious"]
    description: str
    construction: str
    metric: _Metric
    slot: str
    splits: dict[SplitName, _Split]

    @model_validator(mode="after")
    def _slots(self) -> SuiteSpec:
        for split_name, split in self.splits.items():
            for t in split.templates:
                if t.count(self.slot) != 1:
                    raise ValueError(f"template {t!r} in split {split_name!r} must contain {self.slot} once")
        build, evaluation = self.splits.get("build"), self.splits.get("eval")
        if build and evaluation:
            shared = (set(build.templates) & set(evaluation.templates)) | (
                set(build.clean_words + build.corrupted_words) & set(evaluation.clean_words + evaluation.corrupted_words)
            )
            if shared:
                raise ValueError(f"build and eval splits share {sorted(shared)}")
        return self


@dataclass(frozen=True)
class PromptPair:
    """One counterfactual pair: same template, one word swapped.

    Attributes:
        clean: Prompt with the clean word (the behaviour is present, e.g. " nurse").
        corrupted: Prompt with the corrupted word (e.g. " mechanic").
        template: The template both were filled from.
        clean_word: The clean word.
        corrupted_word: The corrupted word.
    """

    clean: str
    corrupted: str
    template: str
    clean_word: str
    corrupted_word: str


@dataclass(frozen=True)
class Suite:
    """A loaded suite with its content hash.

    Attributes:
        spec: The validated file content.
        content_hash: ``"sha256:..."`` of the canonical JSON content (provenance for atlases and edits).
    """

    spec: SuiteSpec
    content_hash: str

    @property
    def name(self) -> str:
        """The suite's name."""
        return self.spec.name

    def pairs(self, split: SplitName, *, max_pairs: int | None = None) -> list[PromptPair]:
        """Expand a split into prompt pairs, template-major.

        Args:
            split: ``"build"`` or ``"eval"``.
            max_pairs: Keep at most this many word pairs per template (``None``: all).

        Returns:
            The pairs.

        Raises:
            SuiteError: The split does not exist or ``max_pairs < 1``.
        """
        if split not in self.spec.splits:
            raise SuiteError(f"suite {self.name!r} has no split {split!r}")
        if max_pairs is not None and max_pairs < 1:
            raise SuiteError(f"max_pairs must be >= 1, got {max_pairs}")
        s = self.spec.splits[split]
        words = list(zip(s.clean_words, s.corrupted_words))[:max_pairs]
        return [
            PromptPair(
                clean=t.replace(self.spec.slot, c),
                corrupted=t.replace(self.spec.slot, k),
                template=t,
                clean_word=c,
                corrupted_word=k,
            )
            for t in s.templates
            for c, k in words
        ]


def available_suites() -> list[str]:
    """Names of the suites shipped with the package."""
    files = resources.files(__package__).joinpath("data").iterdir()
    return sorted(f.name.removesuffix(".json").replace("_", "-") for f in files if f.name.endswith(".json"))


def parse_suite(text: str) -> Suite:
    """Validate suite JSON text.

    Args:
        text: The JSON.

    Returns:
        The suite.

    Raises:
        SuiteError: Malformed JSON or a schema violation; the message names the bad field.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise SuiteError(f"suite file is not valid JSON: {e}") from None
    try:
        spec = SuiteSpec.model_validate(raw)
    except ValidationError as e:
        raise SuiteError(f"suite {validation_message(e)}") from None
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Suite(spec=spec, content_hash="sha256:" + hashlib.sha256(canonical.encode()).hexdigest())


def load_suite(name: str) -> Suite:
    """Load a shipped suite by name (``"gender-occupation"``).

    Raises:
        SuiteError: No such suite, or its file is malformed.
    """
    path = resources.files(__package__).joinpath("data", name.replace("-", "_") + ".json")
    if not path.is_file():
        raise SuiteError(f"no suite named {name!r}; available: {available_suites()}")
    return parse_suite(path.read_text(encoding="utf-8"))
