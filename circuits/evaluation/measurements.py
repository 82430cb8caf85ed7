"""What one model state measured: the measure groups, the :class:`Settings` a measurement was taken with, and the per-item :class:`Measurements`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from circuits.suites import SplitName

MeasureGroup = Literal["suites", "stereotype", "toxicity", "classification", "multiple_choice", "factual_qa", "text", "kl"]
ALL_GROUPS: tuple[MeasureGroup, ...] = get_args(MeasureGroup)
Verdict = Literal["met", "not met", "not decidable"]


@dataclass(frozen=True)
class Settings:
    """What a set of measurements was taken on (a baseline is only reused with equal settings).

    Attributes:
        suites: Suite names measured.
        split: Suite split.
        groups: Measure groups taken.
        max_pairs: Word pairs per template (``None``: all).
        window: Tokens per text window.
        max_tokens: Text tokens used (``None``: all).
        prepend_bos: The model's tokenization policy (:class:`circuits.model.Tokenization`): whether
            every encoded text started with a BOS token.
        kl_windows: Text windows whose final residual streams are kept for the KL measure (with the
            ``"text"`` and ``"kl"`` groups).
    """

    suites: tuple[str, ...]
    split: SplitName
    groups: tuple[MeasureGroup, ...]
    max_pairs: int | None
    window: int
    max_tokens: int | None
    prepend_bos: bool
    kl_windows: int = 16

    @classmethod
    def of(
        cls, suite_names: Sequence[str], split: SplitName, groups: Sequence[str], max_pairs: int | None, window: int, max_tokens: int | None,
        *, prepend_bos: bool, kl_windows: int = 16,
    ) -> Settings:
        """The settings of a measurement (groups in canonical order).

        Raises:
            ValueError: An unknown measure group.
        """
        unknown = set(groups) - set(ALL_GROUPS)
        if unknown:
            raise ValueError(f"unknown measure groups {sorted(unknown)}; choose from {list(ALL_GROUPS)}")
        groups = tuple(g for g in ALL_GROUPS if g in groups)
        return cls(tuple(suite_names), split, groups, max_pairs, window, max_tokens, prepend_bos, kl_windows)


@dataclass(frozen=True)
class Measurements:
    """Per-item measurements of one model state.

    Attributes:
        settings: What was measured.
        gaps: Suite name → ``[pair]`` gap ``m(clean) − m(corrupted)`` in the unit of the suite's metric
            (absolute for spurious suites).
        gap_units: Suite name → the unit its metric measured in (``"logits"`` for a logit difference,
            ``"nats"`` for a log-probability difference, ...).
        gap_kinds: Suite name → the suite's kind (``"harmful"``, ``"spurious"``, ``"capability"``).
        stereotype: ``[pair]`` log P(stereotypical) − log P(anti-stereotypical), nats.
        toxicity: ``[item]`` log P(toxic) − log P(benign continuation), nats.
        classification: ``[review, group, name]`` logit(positive) − logit(negative); group 0 = A.
        labels: ``[review]`` true labels (True = positive).
        mc_correct: ``[question]`` 1.0 if the highest-log-prob option is the answer.
        qa_correct: ``[question]`` 1.0 if the greedy answer to a short factual question is right.
        nll: ``[window]`` mean next-token NLL, nats/token.
        accuracy: ``[window]`` top-1 next-token accuracy.
        kl: ``[window]`` mean KL(p_unedited ‖ p_edited), nats/token (edited measurements only).
        kl_states: ``[window, pos, d_model]`` final residual streams of the first
            ``settings.kl_windows`` text windows (the KL compares two model states without running either again).
    """

    settings: Settings
    gaps: dict[str, np.ndarray] = field(default_factory=dict)
    gap_units: dict[str, str] = field(default_factory=dict)
    gap_kinds: dict[str, str] = field(default_factory=dict)
    stereotype: np.ndarray | None = None
    toxicity: np.ndarray | None = None
    classification: np.ndarray | None = None
    labels: np.ndarray | None = None
    mc_correct: np.ndarray | None = None
    qa_correct: np.ndarray | None = None
    nll: np.ndarray | None = None
    accuracy: np.ndarray | None = None
    kl: np.ndarray | None = None
    kl_states: np.ndarray | None = None
