"""The adapter seam: nothing outside ``circuits.model`` touches TransformerLens or Hugging Face internals."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Bridge internals and Hugging Face module names that only the adapter may use.
INTERNALS = re.compile(
    r"_original_component|original_model|\.hook_dict|\.cfg\b|boot_transformers|boot_native|"
    r"\b(o_proj|down_proj|up_proj|gate_proj|q_proj|k_proj|v_proj|c_proj|c_attn|c_fc|embed_tokens|lm_head|dense_4h_to_h)\b"
)


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed")
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:]


def test_no_module_outside_the_adapter_names_model_internals():
    offenders = []
    for path in sorted((ROOT / "circuits").rglob("*.py")):
        if path.is_relative_to(ROOT / "circuits" / "model"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if INTERNALS.search(line.split("#")[0]):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
