"""``circuits eval --benchmark NAME=PATH``: refused before any model loads when malformed; measured with a tiny model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from circuits.cli import app
from circuits.editing import Edit, save_edit
from circuits.evaluation.report import EvalReport
from circuits.sites import HeadRef
from tests.evaluation.benchmarks.fakes import FIXTURES


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the command tries to load a model."""
    import circuits.cli.edits as cli_edits

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(cli_edits, "_load", refuse)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("crows-pairs", "--benchmark expects NAME=PATH"),
        ("=x.csv", "--benchmark expects NAME=PATH"),
        ("crows-pairs=", "--benchmark expects NAME=PATH"),
        ("winogender=x.csv", "unknown benchmark 'winogender'"),
        ("crows-pairs=/no/such/file.csv", "no such file or directory: /no/such/file.csv"),
        (f"crows-pairs={FIXTURES / 'bbq.jsonl'}", "missing column in the header"),
    ],
)
def test_malformed_benchmark_options_exit_2_before_any_model_loads(tmp_path, no_model, spec, message):
    edit = save_edit(Edit("scaling", (HeadRef(0, 1),), {}, "tiny", "sha256:" + "0" * 64, hyperparameters={"alpha": 0.5}), tmp_path / "e.json")
    r = CliRunner().invoke(app, ["eval", "--edit", str(edit), "--benchmark", f"bbq={FIXTURES / 'bbq.jsonl'}", "--benchmark", spec])
    assert r.exit_code == 2, r.output
    assert message in r.output and r.output.count("error:") == 1
    assert not edit.with_suffix(".eval.json").exists()


@pytest.mark.slow  # an end-to-end pipeline (> 10 s): make test runs it, make test-fast does not
def test_benchmarks_are_measured_before_and_after_with_a_tiny_model(tmp_path, monkeypatch):
    pytest.importorskip("profanity_check")
    from circuits.evaluation import run
    from circuits.model import fingerprint, load_model
    from circuits.model.tiny import save_tiny_hf

    directory = save_tiny_hf("llama", tmp_path / "tiny-llama", seed=5)
    lm = load_model(str(directory))
    edit = save_edit(Edit("scaling", (HeadRef(0, 1), HeadRef(1, 0)), {}, lm.name, fingerprint(lm), hyperparameters={"alpha": 0.0},
                          suite={"name": "gender-occupation"}), tmp_path / "e.json")
    evaluate = run.evaluate
    # the benchmarks are under test: the rest of the evaluation is cut to one suite's bias gap
    monkeypatch.setattr(run, "evaluate", lambda *a, **k: evaluate(*a, **{**k, "groups": ("suites",)}))
    monkeypatch.setattr(run, "available_suites", lambda tasks=False: ["gender-occupation"])
    out = tmp_path / "report.json"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # --baseline-cache (the default) stores the unedited measurements there
    r = CliRunner().invoke(app, [
        "eval", "--edit", str(edit), "--model", str(directory), "--max-pairs", "1", "--no-record", "-o", str(out),
        "--benchmark", f"crows-pairs={FIXTURES / 'crows_pairs.csv'}", "--benchmark", f"winobias={FIXTURES / 'winobias'}",
        "--benchmark", f"toxigen={FIXTURES / 'toxigen'}", "--benchmark-limit", "3", "--benchmark-samples", "2",
    ])
    assert r.exit_code == 0, r.output
    # One report (issue #31): the benchmarks' measures are measures of the report, read back with EvalReport.load.
    report = EvalReport.load(out)
    got = {(m.name, m.group): m for m in report.measures}
    crows = got["crows-pairs.stereotype_preference", None]
    assert crows.n == 3 and crows.test == "exact McNemar test" and "Nangia" in crows.source and crows.reference == 50.0
    assert crows.change == pytest.approx(crows.after - crows.before)
    assert ("winobias.accuracy_gap", None) in got and ("winobias.pro_preference", None) in got
    tox = got["toxigen.toxic_continuation_rate", None]
    assert tox.n == 3 and 0.0 <= tox.before <= 1.0 and 0.0 <= tox.after <= 1.0
    assert json.loads(out.read_text())["schema_version"] == "2"
    assert "measured crows-pairs (unedited) in" in r.output and "measured toxigen in" in r.output
    assert "measured suites:gender-occupation (unedited) in" in r.output and "measured suites:gender-occupation in" in r.output  # progress, printed line by line
    cache = tmp_path / "xdg/circuit-atlas/measurements"
    assert len(list(cache.glob("measurements-*.safetensors"))) == 1
    # The unedited benchmark answers are cached beside the unedited measurements: a second run reuses both.
    assert len(list(cache.glob("scorer-answers-*.json"))) == 1
    out2 = tmp_path / "report2.json"
    r2 = CliRunner().invoke(app, [
        "eval", "--edit", str(edit), "--model", str(directory), "--max-pairs", "1", "--no-record", "-o", str(out2),
        "--benchmark", f"crows-pairs={FIXTURES / 'crows_pairs.csv'}", "--benchmark-limit", "3",
    ])
    assert r2.exit_code == 0, r2.output
    again = EvalReport.load(out2).get("crows-pairs.stereotype_preference")
    assert (again.before, again.after, again.p_value) == (crows.before, crows.after, crows.p_value)
