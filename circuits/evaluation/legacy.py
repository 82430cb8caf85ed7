"""Reading layout-1 evaluation reports: each measure and benchmark row in layout 2 (direction, reference, the unit of a suite's gap)."""

from __future__ import annotations

import functools
from typing import Any

from circuits.evaluation import measures as R
from circuits.suites import SuiteError, load_suite


@functools.lru_cache(maxsize=None)
def _suite_gap_unit(name: str) -> str | None:
    """The unit a shipped suite's gap is in, from its metric alone (None if that needs the model's tokenizer)."""
    try:
        suite = load_suite(name)
    except (SuiteError, ValueError, OSError):
        return None
    unit = {"logit_diff": "logits", "answer_logprob": "nats", "logprob_diff": "nats", "answer_prob": "probability",
            "greater_than": "probability", "kl": "nats"}.get(suite.metric.name)
    if suite.metric.name == "auto" and suite.metric.positive is not None:
        unit = "logits"
    if unit is None:
        return None
    return f"|{unit}|" if suite.kind == "spurious" else unit


def _upgrade_v1_measure(raw: dict[str, Any]) -> dict[str, Any]:
    """A layout-1 measure in layout 2: direction, reference and (for suite gaps) the unit its metric measures in."""
    m = {k: v for k, v in raw.items() if k not in ("reduction",)}
    if m.get("better") == "closer to 0.5":
        m["better"], m["reference"] = "lower", 0.5
    name = str(m.get("name", ""))
    if name.startswith("bias_gap.") and (unit := _suite_gap_unit(name.removeprefix("bias_gap."))) is not None:
        m["unit"] = unit
    return m


def _upgrade_v1_benchmark(raw: dict[str, Any]) -> dict[str, Any]:
    """A layout-1 ``benchmarks`` row (``BenchmarkChange``) as a layout-2 measure."""
    name = f"{raw['benchmark']}.{raw['name']}"
    spec = R.spec_of(name)
    ideal = raw.get("ideal")
    return {
        "name": name, "kind": spec.kind if spec else "info", "data": str(raw["benchmark"]), "unit": raw["unit"],
        "better": spec.better if spec else "lower", "reference": spec.reference if spec else ideal,
        "before": raw["before"], "after": raw["after"], "change": raw["change"], "ci_low": raw["ci_low"], "ci_high": raw["ci_high"],
        "p_value": raw["p_value"], "test": raw["test"], "n": raw["n"] if raw.get("n") is not None else 0,
        "group": raw.get("group"), "source": raw.get("citation", ""),
    }


def upgrade_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """A layout-1 report's raw dict in layout 2 (its ``benchmarks`` rows become measures)."""
    return {**raw, "measures": [_upgrade_v1_measure(m) for m in raw["measures"]] + [_upgrade_v1_benchmark(b) for b in raw.get("benchmarks", [])]}
