"""CLI errors that need no model: one clear message, exit code 2, nothing written."""

from typer.testing import CliRunner

from circuits.cli import app
from circuits.editing import Edit, save_edit
from circuits.sites import HeadRef


def test_eval_refuses_a_malformed_manifest_and_an_unknown_suite(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = runner.invoke(app, ["eval", "--edit", str(bad)])
    assert r.exit_code == 2 and "bad.json" in r.output
    good = save_edit(Edit("scaling", (HeadRef(0, 1),), {}, "tiny", "sha256:" + "0" * 64, hyperparameters={"alpha": 0.5}), tmp_path / "e.json")
    r = runner.invoke(app, ["eval", "--edit", str(good), "--suite", "no-such-suite"])
    assert r.exit_code == 2 and "no suite named 'no-such-suite'" in r.output
    assert not good.with_suffix(".eval.json").exists()


def test_scan_on_ray_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    from circuits.probing import executor as X

    def no_ray():
        raise ImportError(X.RAY_HINT)

    monkeypatch.setattr(X, "_ray", no_ray)
    r = CliRunner().invoke(app, ["scan", "--executor", "ray", "-o", str(tmp_path / "a.json")])
    assert r.exit_code == 2 and "pip install 'circuit-atlas[ray]'" in r.output
    assert not (tmp_path / "a.json").exists()


def test_version_is_printed_without_loading_anything():
    from typer.testing import CliRunner

    import circuits
    from circuits.cli import app

    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"circuit-atlas {circuits.__version__}"
