"""Behaviour suites: counterfactual prompt pairs with answers, from shipped names, files or Python.

See :mod:`circuits.suites.core` (the :class:`Suite` type), :mod:`circuits.suites.templates` (template
suites, the shipped format), :mod:`circuits.suites.files` (pair files: JSONL, JSON, CSV) and
:mod:`circuits.suites.tasks` (standard circuit tasks: IOI, greater-than, factual recall, induction).
"""

from circuits.suites.core import (
    MetricName,
    MetricSpec,
    PromptPair,
    SplitName,
    Suite,
    SuiteError,
    SuiteKind,
    seeded_split,
)
from circuits.suites.files import (
    PairRecord,
    available_suites,
    aligned,
    bind_model,
    load_suite,
    made_per_model,
    parse_suite,
    shipped_suite,
)
from circuits.suites.templates import SuiteSpec

__all__ = [
    "MetricName", "MetricSpec", "PairRecord", "PromptPair", "SplitName", "Suite", "SuiteError", "SuiteKind", "SuiteSpec",
    "aligned", "available_suites", "bind_model", "load_suite", "made_per_model", "parse_suite", "seeded_split", "shipped_suite",
]
