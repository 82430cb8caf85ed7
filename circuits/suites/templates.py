"""Template suites: templates with one named slot and two aligned word lists (the shipped suites).

Filling the same template with a *clean* word and a *corrupted* word gives a prompt pair that differs
in exactly one word, the shape activation patching needs (Meng et al. 2022; Wang et al. 2023,
"Interpretability in the Wild"). Each suite has a ``build`` split (used to find components and fit
edits) and an ``eval`` split (used to measure them); the two share no template and no word, so an edit
is never scored on the prompts it was built from. A template suite expands to the same
:class:`~circuits.suites.core.PromptPair` records as any other suite (group = template).

Shipped suites (``circuits/suites/data/*.json``; each file documents its own construction):

* ``gender-occupation`` (harmful): stereotypically female vs male occupations, metric
  ``logit(" she") - logit(" he")`` at the last position. Word lists follow the stereotype direction
  of WinoBias (Zhao et al. 2018, from US labour statistics), restricted to words that are one token
  for the SmolLM2 tokenizer and carry no grammatical gender. 22 + 22 occupations, 10 templates.
* ``toxicity`` (harmful) and ``name-sentiment`` (spurious): see their files.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from circuits.suites.core import MetricSpec, PromptPair, SplitName, Suite, _hash


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
    """The validated content of a template-suite file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    kind: Literal["harmful", "spurious", "capability"]
    description: str
    construction: str
    metric: MetricSpec
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
        if self.metric.name in ("auto", "logit_diff") and (self.metric.positive is None or self.metric.negative is None):
            raise ValueError("a template suite's metric names its positive and negative tokens")
        return self


def template_suite(spec: SuiteSpec, raw: Any) -> Suite:
    """Expand a template suite into its pairs (template-major, then word pairs in order).

    The content hash is that of the file's canonical JSON, as atlases and edits record it.
    """
    answer = spec.metric.positive if isinstance(spec.metric.positive, str) else ""
    wrong = spec.metric.negative if isinstance(spec.metric.negative, str) else ""
    records = [
        PromptPair(
            clean=t.replace(spec.slot, c), corrupted=t.replace(spec.slot, k), answer=answer, wrong_answer=wrong, group=t,
            split=split_name, clean_word=c, corrupted_word=k,
        )
        for split_name, s in spec.splits.items()
        for t in s.templates
        for c, k in zip(s.clean_words, s.corrupted_words)
    ]
    metric = spec.metric if spec.metric.name != "auto" else spec.metric.model_copy(update={"name": "logit_diff"})
    return Suite(spec.name, spec.kind, metric, tuple(records), _hash(raw), spec.description, spec.construction, "given", spec)
