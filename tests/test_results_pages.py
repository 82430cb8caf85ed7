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
