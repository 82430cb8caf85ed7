"""``circuits atlas export``: components and circuit edges as CSV, Parquet and Markdown, round-tripping through pandas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from circuits.atlas.export import components_table, edges_table, markdown_table
from circuits.atlas.schema import Atlas
from circuits.cli import app

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "atlas/smollm2-135m/gender-occupation.atlas.json"  # records the gender circuit


@pytest.fixture(scope="module")
def atlas():
    return Atlas.load(COMMITTED)


def test_bh_adjusted_p_values_match_the_hand_computed_step_up_rule():
    df = pd.DataFrame({"behaviour": ["a"] * 4 + ["b"], "p_value": [0.01, 0.04, 0.03, 0.5, 0.2]})
    # BH by hand for group a: sorted p (0.01, 0.03, 0.04, 0.5) * m / rank = (0.04, 0.06, 0.0533, 0.5), then the running min from the top.
    from scipy.stats import false_discovery_control

    got = df.groupby("behaviour")["p_value"].transform(lambda p: false_discovery_control(p.to_numpy(), method="bh"))
    assert np.allclose(got.to_numpy(), [0.04, 0.05333333, 0.05333333, 0.5, 0.2])


def test_components_table_adds_bh_within_each_behaviour(atlas):
    t = components_table(atlas)
    assert len(t) == sum(len(b.components) for b in atlas.behaviours)
    assert (t["p_value_bh"] >= t["p_value"] - 1e-12).all() and t["p_value_bh"].le(1).all()


@pytest.mark.parametrize("fmt, suffix, read", [("csv", ".csv", pd.read_csv), ("parquet", ".parquet", pd.read_parquet)])
def test_export_round_trips_through_pandas(tmp_path, atlas, fmt, suffix, read):
    out = tmp_path / f"gender{suffix}"
    r = CliRunner().invoke(app, ["atlas", "export", str(COMMITTED), "-o", str(out), "--format", fmt])
    assert r.exit_code == 0, r.output
    back, want = read(out), components_table(atlas)
    assert list(back.columns) == list(want.columns) and len(back) == len(want)
    assert np.allclose(back["mean"], want["mean"]) and np.allclose(back["p_value_bh"], want["p_value_bh"])
    assert back["component"].tolist() == want["component"].tolist() and back["flagged"].tolist() == want["flagged"].tolist()
    edges = read(tmp_path / f"gender.edges{suffix}")
    assert len(edges) == len(edges_table(atlas)) > 0 and np.allclose(edges["score"], edges_table(atlas)["score"])


def test_markdown_export_is_one_table_row_per_component(tmp_path, atlas):
    out = tmp_path / "gender.md"
    r = CliRunner().invoke(app, ["atlas", "export", str(COMMITTED), "-o", str(out), "--format", "markdown"])
    assert r.exit_code == 0, r.output
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 + len(components_table(atlas)) and lines[1].startswith("|---|")
    assert markdown_table(pd.DataFrame({"a|b": ["x|y"], "n": [float("nan")]})).splitlines()[2] == "| x\\|y |  |"


def test_export_refuses_an_unknown_format_and_its_own_input(tmp_path):
    r = CliRunner().invoke(app, ["atlas", "export", str(COMMITTED), "-o", str(tmp_path / "x.xlsx"), "--format", "xlsx"])
    assert r.exit_code == 2
    r = CliRunner().invoke(app, ["atlas", "export", str(COMMITTED), "-o", str(COMMITTED)])
    assert r.exit_code == 2 and "would destroy it" in r.output
