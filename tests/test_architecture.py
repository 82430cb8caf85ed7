"""The adapter seam: nothing outside ``circuits.model`` touches TransformerLens or Hugging Face internals."""

from __future__ import annotations

import ast
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
    assert exe is not None, "import-linter is part of the dev extra: the layer contracts must be checked, not skipped"
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


#: The most lines a module of the package may have (split by idea beyond that).
MAX_MODULE_LINES = 450


def test_no_module_is_longer_than_the_limit():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "circuits").rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, long


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.module:
                    found.append((node.lineno, node.module))
                elif isinstance(node, ast.Import):
                    found += [(node.lineno, a.name) for a in node.names]
    return found


def test_no_function_level_import_of_the_package_or_the_standard_library_outside_the_cli():
    """Function-level imports are kept for optional or heavy third-party packages (peft, pymoo, ray, transformers
    in the adapter); one of ``circuits`` itself would dodge an import circle, one of the standard library has no reason."""
    offenders = []
    for path in sorted((ROOT / "circuits").rglob("*.py")):
        if path.is_relative_to(ROOT / "circuits" / "cli"):
            continue
        for line, module in _function_level_imports(path):
            top = module.split(".")[0]
            if top == "circuits" or top in sys.stdlib_module_names:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert not offenders, "\n".join(offenders)


def test_a_wrong_shaped_tensor_raises_the_type_checkers_own_error():
    """Shapes in the annotations are checked at test time (``--jaxtyping-packages`` in pyproject)."""
    import jaxtyping
    import torch

    from circuits.metrics import kl_divergence
    from circuits.probing.causal_tracing import trace_cell

    with pytest.raises(jaxtyping.TypeCheckError):
        kl_divergence(torch.zeros(2, 5).log_softmax(-1), torch.zeros(2, 7).log_softmax(-1))  # vocab 5 vs 7
    with pytest.raises(jaxtyping.TypeCheckError):
        trace_cell("resid", "3", 0)  # a layer must be an int
