"""``circuits atlas top|show|diff``: reading an atlas from the command line, checked against the Atlas API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from circuits.atlas.merge import diff
from circuits.atlas.schema import Atlas
from circuits.cli import app

ROOT = Path(__file__).resolve().parents[2]
MERGED = ROOT / "atlas/smollm2-135m/smollm2-135m.atlas.json"
GENDER = ROOT / "atlas/smollm2-135m/gender-occupation.atlas.json"


def run(*args: str):  # noqa: ANN201
    return CliRunner().invoke(app, ["atlas", *args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def atlas() -> Atlas:
    return Atlas.load(MERGED)


def test_top_lists_the_same_components_in_the_same_order_as_atlas_top(atlas):
    r = run("top", str(MERGED), "-k", "4", "--behaviour", "gender-occupation", "--kind", "head")
    assert r.exit_code == 0, r.output
    want = [bc.entry.id for bc in atlas.top(4, behaviour="gender-occupation", kind="head")]
    positions = [r.output.index(f" {cid} ") for cid in want]
    assert positions == sorted(positions)  # listed largest first
    ns = [str(bc.entry.effect.n) for bc in atlas.top(4, behaviour="gender-occupation", kind="head")]
    rows = [line for line in r.output.splitlines() if any(f" {cid} " in line for cid in want)]
    assert len(rows) == 4 and all(re.search(rf"│\s*{n}\s*│", row) for row, n in zip(rows, ns))  # the n column


def test_show_component_lists_it_in_every_behaviour(atlas):
    r = run("show", str(MERGED), "L26H2")
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if " L26H2 " in line]
    assert len(rows) == len(atlas.behaviours)


def test_show_summarises_model_behaviours_and_tokenization(atlas):
    r = run("show", str(MERGED))
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    for b in atlas.behaviours:
        flagged = sum(c.flagged for c in b.components)
        assert f"{b.name} ({b.kind}, {b.suite.n_pairs} pairs" in text and f"{flagged} flagged" in text
    assert "'prepend_bos': False" in text and "causal trace" in text


def test_diff_of_an_atlas_with_itself_reports_no_change():
    r = run("diff", str(GENDER), str(GENDER), "--min-delta", "1e-9")
    assert r.exit_code == 0, r.output
    assert re.search(r"^\s*0 components moved", r.output, flags=re.M), r.output


def test_diff_counts_match_atlas_diff(atlas):
    gender = Atlas.load(GENDER)
    changes = diff(gender, atlas, min_delta=0.0)
    r = run("diff", str(GENDER), str(MERGED), "-k", "3")
    assert r.exit_code == 0, r.output
    assert re.search(rf"^\s*{len(changes)} components moved", r.output, flags=re.M), r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (("show", str(MERGED), "L99H2"), "L99H2 is in no behaviour"),
        (("show", str(MERGED), "foo"), "not a component name"),
        (("top", str(MERGED), "--behaviour", "nope"), "nope"),
        (("top", str(MERGED), "--by", "nope"), "nope"),
        (("top", "missing.json"), "missing.json"),
    ],
)
def test_bad_input_is_one_error_and_exit_2(args, message):
    r = run(*args)
    assert r.exit_code == 2 and message in " ".join(r.output.split()), r.output


def test_top_by_a_score_shows_the_value_it_ranks_by(atlas):
    r = run("top", str(MERGED), "-k", "3", "--behaviour", "name-sentiment", "--by", "R")
    assert r.exit_code == 0, r.output
    top = atlas.top(3, behaviour="name-sentiment", by="R")
    for bc in top:
        row = next(line for line in r.output.splitlines() if f" {bc.entry.id} " in line)
        assert f"{bc.entry.scores['R']:+.4f}" in row
