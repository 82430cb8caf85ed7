"""Write paths never leave an unreadable atlas: NaN/±inf are refused before writing, the old file stays."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from circuits.atlas.schema import Atlas, AtlasError
from circuits.cli import app
from circuits.probing.causal_tracing import trace_cell
from circuits.probing.effects import Effects, Method
from tests.atlas.test_schema import make_atlas


def with_nan(a: Atlas, value: float = math.nan) -> Atlas:
    """An atlas changed without validation (``model_copy``) so that one effect is not finite."""
    b = a.behaviours[0]
    c = b.components[0]
    bad = c.model_copy(update={"effect": c.effect.model_copy(update={"mean": value})})
    return a.model_copy(update={"behaviours": [b.model_copy(update={"components": [bad, *b.components[1:]]})]})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_saving_a_non_finite_atlas_is_refused_and_the_old_file_stays(tmp_path, value):
    path = make_atlas().save(tmp_path / "a.json")
    before = path.read_bytes()
    with pytest.raises(AtlasError, match="behaviours.0.components.0.effect.mean"):
        with_nan(make_atlas(), value).save(path)
    assert path.read_bytes() == before and Atlas.load(path) == make_atlas()
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atlas_merge_never_writes_an_unreadable_file(tmp_path, monkeypatch):
    import circuits.atlas.merge as merge_module

    a = make_atlas().save(tmp_path / "a.json")
    monkeypatch.setattr(merge_module, "merge", lambda x, y: with_nan(x))  # a merge producing a NaN
    r = CliRunner().invoke(app, ["atlas", "merge", str(a), str(a), "-o", str(tmp_path / "m.json")])
    assert r.exit_code == 2 and "finite" in r.output
    assert not (tmp_path / "m.json").exists()
    # In place (issue 30): an output over one of the inputs is refused before anything runs; the input stays.
    r = CliRunner().invoke(app, ["atlas", "merge", str(a), str(a), "-o", str(a)])
    assert r.exit_code == 2 and "is the input" in r.stderr and Atlas.load(a) == make_atlas()


def test_trace_into_an_atlas_refuses_a_nan_grid_and_leaves_the_atlas_unchanged(tmp_path, monkeypatch):
    import circuits.cli.probe as probe
    import circuits.model as M
    import circuits.probing.causal_tracing as tracing

    atlas = make_atlas()
    path = atlas.save(tmp_path / "a.json")
    before = path.read_bytes()
    restored = torch.tensor([[0.1], [float("nan")], [0.2]])
    result = Effects(
        tuple(trace_cell("resid", 0, p) for p in range(3)), restored - 0.1, "probability",
        Method("causal_tracing", intervention="noise", noise_std=0.3, window=1), clean_metric=torch.tensor([0.5]),
        corrupted_metric=torch.tensor([0.1]), patched=restored,
    )
    monkeypatch.setattr(probe, "_load", lambda *a, **k: object())
    monkeypatch.setattr(M, "token_strings", lambda m, text: ["a", "b", "c"])
    monkeypatch.setattr(M, "subject_positions", lambda m, text, subject: [1])
    monkeypatch.setattr(M, "fingerprint", lambda m: atlas.model.fingerprint)
    monkeypatch.setattr(tracing, "causal_trace", lambda *a, **k: result)
    r = CliRunner().invoke(app, ["trace", "--atlas", str(path), "-o", str(tmp_path / "grid.json")])
    assert r.exit_code == 2 and "trace cannot be recorded" in r.output and "probs" in r.output
    assert path.read_bytes() == before and not (tmp_path / "grid.json").exists()
