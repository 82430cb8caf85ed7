"""Every report opens in a real browser (headless Chromium driven by Playwright) with no console error,
every figure drawn, and a hostile atlas's strings shown as text, never run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from circuits.atlas.report import write_report
from circuits.atlas.schema import Atlas
from tests.atlas.test_report import with_trace
from tests.atlas.test_report_escaping import PAYLOAD, hostile
from tests.atlas.test_schema import make_atlas

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Chromium on a closed network: no background connections, no first-run work (see the machine notes).
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.slow  # a browser start per page: make test runs it (and installs chromium), make test-fast does not


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[browser]'")
    assert Path(CHROMIUM).exists(), "headless Chromium is needed: apt-get install -y chromium (make test installs it)"
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def _open(browser, path: Path) -> dict:
    page = browser.new_page()
    errors, dialogs = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_timeout(300)
    out = {
        "errors": errors, "dialogs": dialogs,
        "figures": page.eval_on_selector_all("div.plotly-graph-div", "els => els.length"),
        "drawn": page.eval_on_selector_all("div.plotly-graph-div .main-svg", "els => new Set(els.map(e => e.closest('.plotly-graph-div').id)).size"),
        "imgs": page.eval_on_selector_all("img", "els => els.length"),
        "text": page.inner_text("body"),
    }
    page.close()
    return out


@pytest.mark.parametrize("atlas", ["smollm2-135m.atlas.json", "tasks/tasks.atlas.json"])
def test_committed_reports_open_with_every_figure_drawn_and_no_error(browser, atlas):
    page = ROOT / "atlas/smollm2-135m" / ("report.html" if atlas.startswith("smollm2") else "tasks/report.html")
    got = _open(browser, page)
    a = Atlas.load(ROOT / "atlas/smollm2-135m" / atlas)
    expected = len(a.behaviours) * 2 + len(a.traces) + (len(a.behaviours) > 1)  # heads + MLPs per behaviour, traces, shared view
    assert not got["errors"] and not got["dialogs"]
    assert got["figures"] == got["drawn"] == expected, got


def test_a_report_of_another_model_opens_too(browser, tmp_path):
    """A tiny model's atlas (another family, another shape) renders as well."""
    got = _open(browser, write_report(with_trace(make_atlas()), tmp_path / "tiny.html"))
    assert not got["errors"] and got["figures"] == got["drawn"] == 3


def test_a_hostile_atlas_runs_nothing_in_the_browser(browser, tmp_path):
    got = _open(browser, write_report(hostile(with_trace(make_atlas())), tmp_path / "hostile.html"))
    assert not got["dialogs"] and got["imgs"] == 0 and not got["errors"]  # no alert ran, no <img onerror> exists
    assert PAYLOAD.split("<img")[0] in got["text"]  # shown as the text it is
