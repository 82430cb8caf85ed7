"""EvalReport.load: every committed report reads back (older layouts upgraded on read), and what it says."""

from __future__ import annotations

import io
import json
import math
import runpy
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from circuits.evaluation.report import SCHEMA_VERSION, EvalReport, Measure, ReportError

ROOT = Path(__file__).resolve().parents[2]
ATLAS = ROOT / "atlas/smollm2-135m"
# Cell reports (a row the data cannot build leaves a *.skipped.json record beside them, not a report).
COMMITTED = sorted(ATLAS.glob("headline*/reports/*.seed*.json")) + sorted(ATLAS.glob("headline/superseded*/*.seed*.json"))
README_MAIN = ATLAS / "headline-v1/reports/gender-occupation.ablation.seed0.json"


def test_there_are_committed_reports():
    assert len(COMMITTED) >= 60 and README_MAIN in COMMITTED


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_committed_report_loads_with_its_numbers_unchanged(path):
    raw = json.loads(path.read_text())["report"]
    report = EvalReport.load(path)
    assert report.upgraded_from == "1" and report.suite == raw["suite"] and report.edits == tuple(raw["edits"])
    assert len(report.measures) == len(raw["measures"])
    for m, r in zip(report.measures, raw["measures"], strict=True):
        assert m.name == r["name"] and m.kind == r["kind"] and m.n == r["n"] and m.test == r["test"]
        for f in ("before", "after", "change", "ci_low", "ci_high", "p_value"):
            assert getattr(m, f) == r[f] or (math.isnan(getattr(m, f)) and math.isnan(r[f])), (m.name, f)
        if r["better"] == "closer to 0.5":
            assert (m.better, m.reference) == ("lower", 0.5)
    assert report.gate.overall in ("met", "not met", "not decidable")
    assert path.read_text() == path.read_text()  # read, never rewritten (load has no write path)


def test_the_readme_main_result_reads_back_the_same():
    raw = json.loads(README_MAIN.read_text())["report"]
    report = EvalReport.load(README_MAIN)
    p = report.primary
    assert (p.before, p.after) == (0.6980700492858887, 0.10880370438098907)
    assert report.harm_reduction == pytest.approx(raw["harm_reduction"])  # no overshoot: the definition agrees
    assert report.perplexity_change == raw["perplexity_change"]
    # Layout 1 had only 40 multiple-choice questions: a set that cannot see a 5-point loss (issue #32).
    mc = report.get("multiple_choice_accuracy")
    assert mc.n == 40 and mc.verdict == "not decidable" and report.verdict == "not decidable"
    assert report.capability_failures == () and "multiple_choice_accuracy" in report.not_decidable


def test_old_reports_get_the_units_their_suites_measure_in_and_no_sign_error():
    path = ATLAS / "headline/reports/identity-harm-religion.low_rank.seed2.json"
    raw = {m["name"]: m for m in json.loads(path.read_text())["report"]["measures"]}
    report = EvalReport.load(path)
    assert raw["bias_gap.identity-harm-religion"]["unit"] == "logits" and report.primary.unit == "nats"
    tox = report.get("toxicity_propensity")
    assert raw["toxicity_propensity"]["reduction"] == pytest.approx(0.169, abs=1e-3)  # the sign bug, as recorded
    assert math.isnan(tox.reduction) and tox.change > 0 and tox.p_value < 0.01  # worse, and never a reduction


def test_a_written_report_reads_back_equal(tmp_path):
    report = EvalReport.load(README_MAIN)
    path = report.save(tmp_path / "r.json", extra_field=1)
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == SCHEMA_VERSION and raw["extra_field"] == 1 and "NaN" not in path.read_text()
    again = EvalReport.load(path)
    assert again.upgraded_from is None and again.measures == report.measures and again.verdict == report.verdict
    assert EvalReport.from_dict({"cost": {}, "report": raw}).measures == report.measures


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "a JSON object"),
        ('{"schema_version": "9", "measures": []}', "unknown evaluation report layout '9'"),
        ('{"schema_version": "2", "edits": [], "suite": "x", "split": "eval", "seconds": 1}', "malformed"),
        ("{not json", "not valid JSON"),
    ],
)
def test_what_is_not_a_report_is_refused(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ReportError, match=message):
        EvalReport.load(path)


def test_a_measure_with_an_unknown_direction_is_refused():
    raw = json.loads(README_MAIN.read_text())
    raw["report"]["measures"][0]["better"] = "sideways"
    with pytest.raises(ReportError, match="not understood"):
        EvalReport.from_dict(raw)


def test_regate_headline_reads_the_committed_reports(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["regate_headline.py", str(ATLAS / "headline-v1/reports")])
    out = io.StringIO()
    with redirect_stdout(out):
        runpy.run_path(str(ROOT / "scripts/regate_headline.py"), run_name="__main__")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("| behaviour | kind | seeds |") and len(lines) == 2 + 15
    assert any("gender-occupation | ablation | 1 |" in ln and "not decidable" in ln for ln in lines)


def test_a_benchmark_row_of_layout_1_becomes_a_measure():
    raw = json.loads(README_MAIN.read_text())["report"]
    raw["benchmarks"] = [{"benchmark": "crows-pairs", "citation": "Nangia et al.", "name": "stereotype_preference", "group": None, "unit": "%",
                          "ideal": 50.0, "before": 60.0, "after": 55.0, "change": -5.0, "ci_low": -9.0, "ci_high": -1.0, "p_value": 0.02,
                          "test": "paired t-test over items", "n": 100}]
    m = EvalReport.from_dict(raw).get("crows-pairs.stereotype_preference")
    assert isinstance(m, Measure) and m.kind == "harm" and m.reference == 50.0 and m.reduction == pytest.approx(0.5) and m.source == "Nangia et al."
