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
from circuits.stats import fdr_q_values

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "atlas/smollm2-135m/gender-occupation.atlas.json"  # records the gender circuit


@pytest.fixture(scope="module")
def atlas():
    return Atlas.load(COMMITTED)


def test_components_table_adds_bh_within_each_behaviour(atlas):
    t = components_table(atlas)
    assert len(t) == sum(len(b.components) for b in atlas.behaviours)
    assert t["p_value_bh"].between(0, 1).all()
    for name, part in t.groupby("behaviour", sort=False):  # the flag rule's q-values: BH on one-sided p within each behaviour
        assert np.allclose(part["p_value_bh"], fdr_q_values(part["p_value"].to_numpy(), part["mean"].to_numpy())), name


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
