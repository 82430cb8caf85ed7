"""Every generated results page is what its committed results file gives (``make results`` rewrites them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from circuits.results import read_result

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tokenization_page_is_generated_from_its_results_file():
    bos = _script("bos_policy")
    result = read_result(ROOT / "results/tokenization/bos-policy.json", kind="bos-policy")
    assert (ROOT / "docs/results/tokenization.md").read_text(encoding="utf-8") == bos.page(result)
    main = result.data["main_result"]
    assert main["new"]["components"] == ["L26H2", "L25H2", "L27H5"] and result.provenance.models  # measured on a recorded model


def test_the_timings_page_is_generated_from_its_results_files():
    timing = _script("time_targets")
    assert (ROOT / "docs/results/timings.md").read_text(encoding="utf-8") == timing.page()
    files = sorted((ROOT / "results/tests").glob("*.json"))
    assert files, "no timing results committed (scripts/time_targets.py test-fast test scan)"
    for path in files:
        r = read_result(path, kind="timing")
        assert r.provenance.git_commit and r.provenance.lock_sha256 and r.data["seconds"] > 0, path


def test_pytest_output_is_parsed_into_counts_and_slowest_tests():
    timing = _script("time_targets")
    slow = "12.50s call     tests/test_a.py::test_x\n3.00s setup    tests/test_b.py::test_y\n"
    for summary in ("== 1038 passed, 2 failed, 3 deselected in 1200.55s (0:20:00) ==\n", "1038 passed, 2 failed, 3 deselected in 1200.55s (0:20:00)\n"):
        got = timing.parse_pytest("....... [100%]\n" + slow + summary)  # pytest's summary line with and without -q
        assert got["counts"] == {"passed": 1038, "failed": 2, "deselected": 3} and got["pytest_seconds"] == 1200.55, summary
        assert got["slowest"][0] == {"test": "tests/test_a.py::test_x", "phase": "call", "seconds": 12.5}


def test_the_atlas_page_table_is_generated_from_the_committed_atlas():
    from circuits.atlas.schema import Atlas

    page = _script("atlas_page")
    text = (ROOT / "docs/results/atlas.md").read_text(encoding="utf-8")
    assert text == page.page(text, Atlas.load(page.ATLAS))
    assert page.BEGIN in text and "| gender-occupation | harmful |" in text


def test_the_committed_reports_are_what_their_atlases_give():
    """`make reports` regenerates them (and report.png from the first)."""
    from circuits.atlas.report import render
    from circuits.atlas.schema import Atlas

    for atlas, page in (("smollm2-135m.atlas.json", "report.html"), ("tasks/tasks.atlas.json", "tasks/report.html")):
        base = ROOT / "atlas/smollm2-135m"
        assert (base / page).read_text(encoding="utf-8") == render(Atlas.load(base / atlas)), f"{page}: run make reports"


def test_the_tradeoff_page_is_generated_from_its_results_file():
    tradeoff = _script("tradeoff")
    result = read_result(ROOT / "results/tradeoff/gender-occupation.json", kind="tradeoff")
    assert (ROOT / "docs/results/tradeoff.md").read_text(encoding="utf-8") == tradeoff.page(result)
    points = result.data["points"]
    assert [p["row"] for p in points][:2] == ["ablation.k1", "ablation.k2"] and result.provenance.models
    assert all(p["components"] and "perplexity" in p for p in points)  # every point has its edit and its costs
