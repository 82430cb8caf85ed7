import json

from typer.testing import CliRunner

from circuits.atlas.report import head_matrix, render, write_report
from circuits.atlas.schema import Atlas, TraceRecord
from circuits.cli import app
from tests.atlas.test_schema import make_atlas


def with_trace(a: Atlas) -> Atlas:
    t = TraceRecord(
        prompt="The Eiffel Tower is in", subject="The Eiffel Tower", target=" Paris", kind="resid", window=1, severed=False,
        n_samples=2, seed=0, noise_std=0.3, clean_prob=0.3, corrupted_prob=0.01, tokens=["<s>", "The", " E", "iffel"],
        subject_positions=[1, 2, 3], probs=[[0.01, 0.2, 0.1, 0.3]],
    )
    return a.model_copy(update={"traces": [t]})


def test_head_matrix_places_each_head():
    a = make_atlas()
    m = head_matrix(a, a.behaviours[0])
    assert m.shape == (1, 2) and abs(m[0, 0] - 0.5875) < 1e-6


def test_report_is_self_contained_and_names_everything(tmp_path):
    a = with_trace(make_atlas())
    html = render(a)
    assert html.count("<script") >= 2 and "plotly" in html.lower()  # plotly.js inlined, figures present
    for needle in ["gender-occupation", "L0H0", "causal tracing", "Provenance", "Flagged components"]:
        assert needle in html
    assert 'src="http' not in html  # no external script: opens offline
    path = write_report(a, tmp_path / "r.html")
    assert path.read_text() == html == render(a)  # deterministic


def test_cli_report_schema_and_merge(tmp_path):
    runner = CliRunner()
    a = with_trace(make_atlas())
    p = a.save(tmp_path / "a.json")
    r = runner.invoke(app, ["report", str(p), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r.html").is_file()
    r = runner.invoke(app, ["atlas", "schema", "-o", str(tmp_path / "schema.json")])
    assert r.exit_code == 0 and json.loads((tmp_path / "schema.json").read_text())["title"] == "Atlas"
    other = a.model_copy(update={"model": a.model.model_copy(update={"fingerprint": "sha256:" + "2" * 64})}).save(tmp_path / "b.json")
    r = runner.invoke(app, ["atlas", "merge", str(p), str(other), "-o", str(tmp_path / "m.json")])
    assert r.exit_code == 2 and "different models" in r.output
    assert not (tmp_path / "m.json").exists()
    (tmp_path / "bad.json").write_text("{}")
    r = runner.invoke(app, ["report", str(tmp_path / "bad.json"), "-o", str(tmp_path / "x.html")])
    assert r.exit_code == 2 and "field" in r.output


def test_the_report_opens_with_figures_and_shows_shared_components():
    """Figures come before the tables; heads carry CI, p and q on hover; components flagged in several behaviours are shown together."""
    from circuits.atlas.report import shared_components

    a = make_atlas()
    b = a.behaviours[0]
    two = a.model_copy(update={"behaviours": [b, b.model_copy(update={"name": "copy"})]})
    html = render(two)
    assert html.index("id=\"shared\"") < html.index("id=\"heads-0\"") < html.index("Top components")
    assert "95% CI [%{customdata[0]" in html and "q %{customdata[3]" in html
    ids, names, z, flags = shared_components(two)
    assert names == [b.name, "copy"] and set(ids) == {c.id for c in b.flagged()}
    assert (flags.sum(1) == 2).all() and abs(z).max() <= 1 + 1e-12  # each behaviour scaled by its largest effect
    assert "id=\"shared\"" not in render(a)  # one behaviour: nothing to share
