"""Evaluation records: what was measured (:class:`Measurements`), each measure before vs after
(:class:`Measure`), and the report of one evaluation with its verdict (:class:`EvalReport`).

A report is written as JSON (:meth:`EvalReport.as_dict`, layout :data:`SCHEMA_VERSION`) and read back
with :meth:`EvalReport.load`, which also reads every earlier layout: the reports written before the
measure registry (no ``schema_version``; "layout 1") are upgraded on read, never rewritten. The
upgrade takes each measure's reference, test family and the unit its suite's metric measures in from
the registry (:mod:`circuits.evaluation.measures`), maps the old ``"closer to 0.5"`` direction to
"lower, reference 0.5", turns the ``benchmarks`` list of ``circuits eval`` into measures, and
estimates each capability measure's smallest detectable loss from its CI (the recorded numbers are
kept as they are).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from circuits import stats
from circuits.editing.edit import Scalar
from circuits.evaluation import measures as R
from circuits.evaluation.legacy import upgrade_v1
from circuits.evaluation.measurements import (  # noqa: F401 - re-exported
    ALL_GROUPS,
    MeasureGroup,
    Measurements,
    Settings,
    Verdict,
)
from circuits.evaluation.measures import ACCURACY_DROP, Better, Kind  # noqa: F401 - ACCURACY_DROP: part of this module's API
from circuits.io import MAX_JSON_BYTES, atomic_write_text, decode_utf8, read_bounded

#: The layout :meth:`EvalReport.as_dict` writes (reports without a version are layout 1).
SCHEMA_VERSION = "2"


class ReportError(ValueError):
    """An evaluation report that cannot be read (unreadable, malformed, or of an unknown layout)."""


@dataclass(frozen=True)
class Measure:
    """One measure before vs after an edit (the one before/after type of the package: suites and benchmarks).

    Attributes:
        name: e.g. ``"bias_gap.gender-occupation"``, ``"perplexity"``, ``"crows-pairs.stereotype_preference"``
            (its spec: :func:`circuits.evaluation.measures.spec_of`).
        kind: ``"harm"``, ``"capability"`` or ``"info"``.
        data: The data set and split the numbers come from (e.g. ``"gender-occupation/eval"``).
        unit: Unit of ``before``/``after``, as measured.
        better: Which direction is an improvement (``"lower"`` or ``"higher"``).
        before: Unedited value.
        after: Edited value.
        change: ``after - before`` (perplexity: ``after / before - 1``).
        ci_low: Lower end of the 95% bootstrap CI of ``change`` (NaN for counts).
        ci_high: Upper end.
        p_value: Two-sided p-value of the paired test named in ``test``.
        test: The test used.
        n: Number of items (pairs, reviews, windows, questions).
        reference: The value that means "no harm" (harm measures; default: the registry's).
        detectable: Capability measures: the smallest loss (in ``unit``; relative for perplexity) the
            item set detects with 80% power at one-sided α = 0.05 (default: estimated from the CI); None
            for other measures.
        group: A benchmark's subgroup (``"bias_type=gender"``), None for the whole set.
        source: Where the measure comes from (a benchmark's citation).
    """

    name: str
    kind: Kind
    data: str
    unit: str
    better: Better
    before: float
    after: float
    change: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    n: int
    reference: float | None = None
    detectable: float | None = None
    group: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        spec = R.spec_of(self.name)
        if self.reference is None and self.kind == "harm" and spec is not None:
            object.__setattr__(self, "reference", spec.reference)
        gated = spec is not None and spec.kind == "capability" and spec.gated
        if self.kind == "capability" and gated and (self.detectable is None or math.isnan(self.detectable)):
            object.__setattr__(self, "detectable", _estimated_detectable(self, spec))

    @property
    def spec(self) -> R.MeasureSpec | None:
        """The registry's spec of this measure, if it has one."""
        return R.spec_of(self.name)

    @property
    def reduction(self) -> float:
        """Harm measures: the fraction of the harm (distance from ``reference`` on the harmful side) removed.

        1 = all, 0 = none, < 0 = worse; never above 1 (going past the reference is :attr:`overshoot`);
        NaN when the unedited model shows no harm or the measure has no reference
        (:func:`circuits.evaluation.measures.reduction`). For capability measures, the same formula with
        the registry's reference where one exists (else NaN).
        """
        return R.reduction(self.before, self.after, self.better, self.reference)

    @property
    def overshoot(self) -> float:
        """How far past the reference the change went, as a fraction of the original harm (0: not past it)."""
        return R.overshoot(self.before, self.after, self.better, self.reference)

    @property
    def loss(self) -> float:
        """Capability lost: ``change`` in the worse direction (perplexity: its relative increase)."""
        return self.change if self.better == "lower" else -self.change

    @property
    def loss_p(self) -> float:
        """One-sided p-value of a loss (half the two-sided p in the loss's direction; Student 1908 / McNemar 1947)."""
        return self.p_value / 2 if self.loss > 0 else 1.0 - self.p_value / 2

    @property
    def verdict(self) -> Verdict | None:
        """Capability measures in the gate: ``"met"``, ``"not met"`` or ``"not decidable"`` (module docstring of
        :mod:`circuits.evaluation.measures`); None for measures that are not gated."""
        spec = self.spec
        if self.kind != "capability" or spec is None or spec.kind != "capability" or not spec.gated or self.group is not None:
            return None
        if spec.tolerance is not None and self.loss >= spec.tolerance and (not spec.needs_significance or self.loss_p < R.ALPHA):
            return "not met"
        if spec.decidable_at is not None and not (self.detectable is not None and self.detectable <= spec.decidable_at):
            return "not decidable"
        return "met"


def _estimated_detectable(m: Measure, spec: R.MeasureSpec | None) -> float:
    """A capability measure's smallest detectable loss when none was recorded: from its CI, and for 0/1
    items never below what the exact McNemar test can detect on ``n`` items."""
    est = R.detectable_from_ci(m.ci_low, m.ci_high)
    if spec is not None and spec.test == R.MCNEMAR:
        floor = stats.mcnemar_detectable_drop(m.n, 0.0) * spec.scale
        est = floor if math.isnan(est) else max(est, floor)
    return est


@dataclass(frozen=True)
class Gate:
    """The project's target judged on one report.

    Attributes:
        harm: ``"met"`` when at least half of the primary harm is removed (:attr:`Measure.reduction` ≥
            0.5), at most half of it reversed (:attr:`Measure.overshoot` ≤ 0.5) and the change is
            significant (paired p < 0.05); ``"not decidable"`` when the unedited model shows no harm;
            else ``"not met"``.
        capabilities: ``(name, verdict)`` for every gated capability measure taken (:attr:`Measure.verdict`),
            and ``("perplexity", "not decidable")`` when perplexity was not measured.
        overall: ``"not met"`` if any part is not met, else ``"not decidable"`` if any part is not
            decidable, else ``"met"``.
    """

    harm: Verdict
    capabilities: tuple[tuple[str, Verdict], ...]
    overall: Verdict

    def names(self, verdict: Verdict) -> tuple[str, ...]:
        """The capability measures with this verdict."""
        return tuple(n for n, v in self.capabilities if v == verdict)


def _finite_or_none(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


@dataclass(frozen=True)
class EvalReport:
    """Every measure of one evaluation, and the project's target judged on them (:attr:`gate`).

    Attributes:
        edits: The edits evaluated, as text (``kind(components)``), in application order.
        suite: The behaviour the edits target (its bias gap is the primary harm).
        split: Suite split of the harm numbers (``"eval"``: held out from building).
        measures: All measures (the benchmarks' too, with their ``group``).
        seconds: Wall time of the evaluation.
        tokenization: The tokenization policy text was encoded under (``{"prepend_bos", "source"}``).
        timings: Seconds per measurement group (unedited ones marked ``"(unedited)"``), as measured.
        upgraded_from: The layout this report was read from when it was older than :data:`SCHEMA_VERSION`.
    """

    edits: tuple[str, ...]
    suite: str
    split: str
    measures: tuple[Measure, ...]
    seconds: float
    tokenization: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    upgraded_from: str | None = None

    def get(self, name: str, group: str | None = None) -> Measure:
        """The measure called ``name`` (on a benchmark's ``group``; None: the whole set).

        Raises:
            KeyError: No such measure (the message lists the available ones).
        """
        for m in self.measures:
            if m.name == name and m.group == group:
                return m
        raise KeyError(f"no measure {name!r}" + (f" for group {group!r}" if group else "") + f"; have {sorted({m.name for m in self.measures})}")

    @property
    def primary(self) -> Measure:
        """The bias gap of the target suite."""
        return self.get(f"bias_gap.{self.suite}")

    @property
    def harm_reduction(self) -> float:
        """Fraction of the primary harm removed (at most 1; see :attr:`Measure.reduction`)."""
        return self.primary.reduction

    @property
    def overshoot(self) -> float:
        """How far the primary harm was pushed past its reference, as a fraction of the original harm."""
        return self.primary.overshoot

    @property
    def perplexity_change(self) -> float:
        """``ppl_after / ppl_before - 1`` on the evaluation text (NaN if not measured)."""
        try:
            return self.get("perplexity").change
        except KeyError:
            return float("nan")

    @property
    def gate(self) -> Gate:
        """The target judged part by part: the primary harm and every gated capability measure (:class:`Gate`)."""
        p = self.primary
        red, over = p.reduction, p.overshoot
        if math.isnan(red):
            harm: Verdict = "not decidable"
        else:
            harm = "met" if red >= R.HARM_TARGET and over <= 1 - R.HARM_TARGET and p.p_value < R.ALPHA else "not met"
        caps = [(m.name, m.verdict) for m in self.measures if m.verdict is not None]
        if not any(m.name == "perplexity" for m in self.measures):
            caps.append(("perplexity", "not decidable"))
        verdicts = {harm, *(v for _, v in caps)}
        overall: Verdict = "not met" if "not met" in verdicts else "not decidable" if "not decidable" in verdicts else "met"
        return Gate(harm, tuple(caps), overall)  # type: ignore[arg-type]

    @property
    def verdict(self) -> Verdict:
        """``"met"``, ``"not met"`` or ``"not decidable"`` (:attr:`gate`)."""
        return self.gate.overall

    @property
    def capability_failures(self) -> tuple[str, ...]:
        """Capability measures the edit failed ("not met", :attr:`Measure.verdict`), by name.

        A perplexity increase of ≥ 5% fails; an accuracy measure fails when it dropped by ≥ 2 points
        **and** the drop is significant (one-sided p < 0.05, half the two-sided p of its paired test in
        the drop's direction).
        """
        return self.gate.names("not met")

    @property
    def not_decidable(self) -> tuple[str, ...]:
        """Capability measures whose item set cannot detect a 5-point (5%) loss, or that were not measured."""
        return self.gate.names("not decidable")

    @property
    def meets_target(self) -> bool:
        """The project's target: ≥50% of the primary harm removed (paired p < 0.05) at < 5% capability loss.

        Capability loss is judged on **every** gated capability measure taken, not on perplexity alone
        (:attr:`gate`): nothing may fail, and each measure's item set must be able to detect a 5-point
        (perplexity: 5%) loss, so an undecidable measure never passes as "kept". The KL on neutral text
        is reported with its CI but not gated (it has no agreed threshold).
        """
        return self.gate.overall == "met"

    def to_dataframe(self) -> pd.DataFrame:
        """One row per measure (with ``reduction`` and ``overshoot`` for harm measures, ``verdict`` for gated ones)."""
        rows = [
            dict(asdict(m), reduction=m.reduction if m.kind == "harm" else float("nan"),
                 overshoot=m.overshoot if m.kind == "harm" else float("nan"), verdict=m.verdict)
            for m in self.measures
        ]
        return pd.DataFrame(rows)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able content (layout :data:`SCHEMA_VERSION`; non-finite numbers as ``null``)."""
        gate = self.gate
        return {
            "schema_version": SCHEMA_VERSION,
            "edits": list(self.edits),
            "suite": self.suite,
            "split": self.split,
            "seconds": self.seconds,
            "tokenization": dict(self.tokenization),
            "timings": dict(self.timings),
            "harm_reduction": _finite_or_none(self.harm_reduction),
            "overshoot": _finite_or_none(self.overshoot),
            "perplexity_change": _finite_or_none(self.perplexity_change),
            "verdict": gate.overall,
            "meets_target": gate.overall == "met",
            "gate": {"harm": gate.harm, "capabilities": dict(gate.capabilities)},
            "capability_failures": list(gate.names("not met")),
            "not_decidable": list(gate.names("not decidable")),
            "measures": [
                {k: _finite_or_none(v) for k, v in {**asdict(m), "reduction": m.reduction, "overshoot": m.overshoot, "verdict": m.verdict}.items()}
                for m in self.measures
            ],
        }

    def save(self, path: Path | str, **extra: Any) -> Path:
        """Write :meth:`as_dict` (plus ``extra`` top-level fields) as JSON, atomically."""
        return atomic_write_text(path, json.dumps({**self.as_dict(), **extra}, indent=2, allow_nan=False) + "\n")

    @classmethod
    def from_dict(cls, raw: Any) -> EvalReport:
        """The report of a JSON object in any layout (see the module docstring), or of a file that wraps one
        under ``"report"`` (the headline's ``{"cost", "report"}``).

        Raises:
            ReportError: Not a report, an unknown layout, or a field missing or of the wrong type.
        """
        if not isinstance(raw, dict):
            raise ReportError(f"an evaluation report is a JSON object, got {type(raw).__name__}")
        if "report" in raw and "measures" not in raw:
            raw = raw["report"]
            if not isinstance(raw, dict):
                raise ReportError("field report: expected an object")
        version = str(raw.get("schema_version", "1"))
        try:
            if version == "1":
                return _upgrade_v1(raw)
            if version == SCHEMA_VERSION:
                return _read(raw, upgraded_from=None)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ReportError):
                raise
            raise ReportError(f"malformed evaluation report (layout {version}): {type(e).__name__}: {e}") from None
        raise ReportError(f"unknown evaluation report layout {version!r} (this version reads 1 and {SCHEMA_VERSION})")

    @classmethod
    def load(cls, path: Path | str) -> EvalReport:
        """Read a report written by ``circuits eval``, :meth:`save`, or the headline script, in any layout.

        Older layouts are upgraded in memory (:attr:`upgraded_from` says from which); the file is never
        rewritten.

        Raises:
            ReportError: Unreadable, not JSON, or not a report (:meth:`from_dict`).
        """
        text = decode_utf8(read_bounded(path, error=ReportError, max_bytes=MAX_JSON_BYTES, what="evaluation report"), error=ReportError, source=str(path))
        try:
            raw = json.loads(text)  # layout-1 reports hold NaN, which strict readers refuse
        except json.JSONDecodeError as e:
            raise ReportError(f"{path}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(raw)
        except ReportError as e:
            raise ReportError(f"{path}: {e}") from None

    def flat(self) -> dict[str, Scalar]:
        """Flat ``name.field → value`` dict for an edit manifest's ``evaluation``."""
        out: dict[str, Scalar] = {
            "suite": self.suite,
            "split": self.split,
            "harm_reduction": _finite(self.harm_reduction),
            "overshoot": _finite(self.overshoot),
            "perplexity_change": _finite(self.perplexity_change),
            "meets_target": int(self.meets_target),
            "verdict": self.verdict,
        }
        if self.tokenization:
            out["tokenization.prepend_bos"] = int(bool(self.tokenization["prepend_bos"]))
        for m in self.measures:
            key = m.name if m.group is None else f"{m.name}[{m.group}]"
            out.update({f"{key}.before": _finite(m.before), f"{key}.after": _finite(m.after), f"{key}.p_value": _finite(m.p_value)})
        return out


def _finite(x: float) -> float | str:
    return float(x) if math.isfinite(x) else "nan"


def _number(v: Any) -> float:
    """A recorded number: ``null`` and the string ``"nan"`` (layout-1 benchmark rows) are NaN."""
    if v is None or v == "nan":
        return float("nan")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ReportError(f"expected a number, got {v!r}")
    return float(v)


_MEASURE_FIELDS = {f.name for f in fields(Measure)}
_NUMBERS = ("before", "after", "change", "ci_low", "ci_high", "p_value")


def _measure(raw: dict[str, Any]) -> Measure:
    kw = {k: v for k, v in raw.items() if k in _MEASURE_FIELDS}
    for k in _NUMBERS:
        if k in kw:
            kw[k] = _number(kw[k])
    for k in ("reference", "detectable"):
        if kw.get(k) is not None:
            kw[k] = _number(kw[k])
    if kw.get("kind") not in ("harm", "capability", "info") or kw.get("better") not in ("lower", "higher"):
        raise ReportError(f"measure {raw.get('name')!r}: kind {kw.get('kind')!r} / better {kw.get('better')!r} not understood")
    return Measure(**kw)


def _read(raw: dict[str, Any], *, upgraded_from: str | None) -> EvalReport:
    return EvalReport(
        edits=tuple(str(e) for e in raw["edits"]),
        suite=str(raw["suite"]),
        split=str(raw["split"]),
        measures=tuple(_measure(m) for m in raw["measures"]),
        seconds=_number(raw["seconds"]),
        tokenization=dict(raw.get("tokenization") or {}),
        timings={str(k): float(v) for k, v in (raw.get("timings") or {}).items()},
        upgraded_from=upgraded_from,
    )


def _upgrade_v1(raw: dict[str, Any]) -> EvalReport:
    return _read(upgrade_v1(raw), upgraded_from="1")
