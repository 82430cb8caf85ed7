"""The public surface, ``import circuits``: every name resolves, and the module's example runs."""

from __future__ import annotations

import re
import subprocess
import sys

import circuits


def test_every_public_name_resolves_to_its_documented_object():
    for name in circuits.__all__:
        value = getattr(circuits, name)
        assert value is not None, name
        if callable(value) and name != "__version__":
            assert (value.__doc__ or "").strip(), f"circuits.{name} has no docstring"
    assert set(circuits.__all__) <= set(dir(circuits))
    assert circuits.load is circuits.model.load_model and circuits.trace.__name__ == "causal_trace"


def test_unknown_names_raise_attribute_error():
    try:
        circuits.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_import_is_lazy():
    code = "import sys, circuits; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_the_module_example_runs_from_model_to_edited_generation(monkeypatch):
    """The example in ``circuits.__doc__``, verbatim, with ``load`` returning a tiny Llama (SmolLM2's tokenizer)."""
    from circuits.model.tiny import tiny_hf_model

    tiny = tiny_hf_model("llama", seed=0)
    lines = []
    for line in circuits.__doc__.split("::\n", 1)[1].splitlines()[1:]:
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    code = "\n".join(lines).strip()
    assert 0 < len([x for x in code.splitlines() if x.strip()]) <= 10 and "circuits.load(" in code
    monkeypatch.setattr(circuits, "load", lambda *a, **k: tiny)
    before = circuits.generate(tiny, "The nurse said that", max_new_tokens=8)
    printed: list[str] = []
    namespace = {"print": printed.append}
    exec(compile(code, "circuits.__doc__", "exec"), namespace)  # noqa: S102 - the documented example itself
    atlas, edit = namespace["atlas"], namespace["edit"]
    assert isinstance(atlas, circuits.Atlas) and isinstance(edit, circuits.Edit) and len(edit.components) == 3
    assert len(printed) == 1 and isinstance(printed[0], str)
    assert circuits.generate(tiny, "The nurse said that", max_new_tokens=8) == before  # the edit is gone after the block
    assert re.fullmatch(r"\d+\.\d+\.\d+", circuits.__version__)


def test_notebooks_import_only_the_public_surface_and_documented_submodules():
    """Notebooks are what users copy: every ``circuits`` import is ``import circuits`` or a module with a page in docs/api.md."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    documented = set(re.findall(r"^::: (circuits[\w.]*)$", (root / "docs/api.md").read_text(encoding="utf-8"), flags=re.M))
    seen = set()
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        for module in re.findall(r"^\s*from (circuits[\w.]*) import", code, flags=re.M):
            assert module in documented, f"{path.name} imports from {module}, which has no page in docs/api.md"
            seen.add(module)
        for module in re.findall(r"^\s*import (circuits[\w.]*)", code, flags=re.M):
            assert module == "circuits", f"{path.name}: import {module}"
    assert seen, "the check found no imports: the pattern is wrong"
