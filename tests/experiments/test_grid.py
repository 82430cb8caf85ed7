"""The grid runner (circuits.experiments.grid) on a tiny model: cells, resuming, skips, seeds, aggregation, re-measuring."""

from __future__ import annotations

import json

import pytest

from circuits.atlas.build import scan
from circuits.editing import EditError
from circuits.experiments import Grid, Row, aggregate, cell_path, remeasure, run_grid, sweep
from circuits.model import load_model
from circuits.model.tiny import save_tiny_hf
from circuits.suites import load_suite

EVAL = {"groups": ("suites",), "max_pairs": 2, "max_tokens": 512, "other_suites": False}


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    lm = load_model(str(save_tiny_hf("llama", tmp_path_factory.mktemp("m") / "tiny-llama", seed=5)))
    suite = load_suite("gender-occupation")
    atlas = scan(lm, suite, max_pairs=1, attribution=False, mean_ablation=False, progress=False)  # rows select the top heads
    return lm, suite, atlas


def test_a_grid_runs_each_cell_once_resumes_and_aggregates(setting, tmp_path):
    lm, suite, atlas = setting
    rows = (*sweep("scaling", "scaling", "alpha", [0.0, 0.5], options={"k": 1, "select": "top"}),
            Row("offset", "offset", {"k": 1, "select": "top"}, seeded=True))
    grid = Grid(suites=(suite.name,), rows=rows, seeds=(0, 1), shared={"steps": 2, "progress": False}, evaluate=EVAL)
    seen = []
    cells, skipped = run_grid(lm, atlas, grid, tmp_path, suites=lambda n: suite, on_cell=seen.append)
    # Unseeded rows once (first seed), the seeded row once per seed; every report written as measured.
    assert [(c.row, c.seed, c.reused) for c in cells] == [
        ("scaling.alpha0.0", 0, False), ("scaling.alpha0.5", 0, False), ("offset", 0, False), ("offset", 1, False)]
    assert seen == cells and not skipped
    for c in cells:
        raw = json.loads(cell_path(tmp_path, suite.name, c.row, c.seed).read_text())
        assert raw["cost"]["components"] == c.cost["components"] and raw["report"]["measures"]
    assert (tmp_path / "edits" / f"{suite.name}.offset.json").exists()
    # Strengths differ in the edit, not the components: alpha 0 is zero ablation, 0.5 half of it.
    zero, half = (c.report.get(f"bias_gap.{suite.name}") for c in cells[:2])
    assert zero.before == half.before and zero.after != half.after
    # Resuming reads every cell back and measures nothing.
    again, _ = run_grid(lm, atlas, grid, tmp_path, suites=lambda n: pytest.fail("nothing to measure"), measure=False)
    assert all(c.reused for c in again) and [c.report for c in again] == [c.report for c in cells]
    table = aggregate(grid, again)
    assert [(r["kind"], r["seeds"]) for r in table] == [("scaling.alpha0.0", 1), ("scaling.alpha0.5", 1), ("offset", 2)]
    gap = next(m for m in table[2]["measures"] if m["name"] == f"bias_gap.{suite.name}")
    afters = [c.report.get(f"bias_gap.{suite.name}").after for c in cells[2:]]
    assert gap["after_mean"] == pytest.approx(sum(afters) / 2)


def test_a_row_the_data_cannot_build_is_recorded_as_skipped(setting, tmp_path):
    lm, suite, atlas = setting
    unlabelled = load_suite("identity-harm-religion", model=lm)  # CARE's accuracy objective needs pairs with two answers
    grid = Grid(suites=(unlabelled.name,), rows=(Row("care", "care", {"candidates": 2}, seeded=True),), seeds=(0, 1), evaluate=EVAL)
    cells, skipped = run_grid(lm, atlas, grid, tmp_path, suites=lambda n: unlabelled)
    assert not cells and len(skipped) == 1 and skipped[0].startswith(f"care on {unlabelled.name} (")
    # Recorded: a table made later says it too, without the model.
    assert run_grid(None, atlas, grid, tmp_path, suites=lambda n: pytest.fail("loaded"), measure=False)[1] == skipped


def test_bad_rows_are_refused_before_anything_runs(setting, tmp_path):
    lm, suite, atlas = setting
    with pytest.raises(EditError, match="rank"):
        run_grid(lm, atlas, Grid(suites=(suite.name,), rows=(Row("a", "ablation", {"rank": 2}),)), tmp_path, suites=lambda n: pytest.fail("built"))
    with pytest.raises(ValueError, match="repeat"):
        Grid(suites=(suite.name,), rows=(Row("a", "ablation"), Row("a", "scaling")))


@pytest.mark.slow  # two trained edits rebuilt and evaluated twice (~15 s)
def test_remeasure_checks_the_rebuilt_edit_reproduces_the_report(setting, tmp_path):
    lm, suite, atlas = setting
    grid = Grid(suites=(suite.name,), rows=(Row("offset", "offset", {"k": 1, "select": "top"}, seeded=True),), seeds=(0, 1),
                shared={"steps": 2, "progress": False}, evaluate=EVAL)
    cells, _ = run_grid(lm, atlas, grid, tmp_path, suites=lambda n: suite)
    changed = remeasure(lm, atlas, grid, tmp_path, ["text"], suites=lambda n: suite)
    assert [(c.seed, c.report.get("perplexity").after > 0) for c in changed] == [(0, True), (1, True)]
    raw = json.loads(cells[1].path.read_text())
    assert raw["remeasured"][0]["edit"] == "rebuilt from seed 1" and "reproduced" in raw["remeasured"][0]["check"]
    assert changed[1].report.primary == cells[1].report.primary  # the harm is the report's, not re-measured
    # A report the rebuilt edit does not reproduce is refused and left as it was.
    raw["report"]["measures"] = [dict(m, after=m["after"] + 1.0) if m["name"] == f"bias_gap.{suite.name}" else m for m in raw["report"]["measures"]]
    raw.pop("remeasured")
    cells[1].path.write_text(json.dumps(raw))
    before = cells[1].path.read_text()
    with pytest.raises(RuntimeError, match="does not reproduce"):
        remeasure(lm, atlas, grid, tmp_path, ["text"], suites=lambda n: suite)
    assert cells[1].path.read_text() == before
