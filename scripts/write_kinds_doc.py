"""Write ``docs/edit_kinds.md`` from the edit-kind registry (kinds, forms, bake rules, methods, presets).

    python scripts/write_kinds_doc.py

The same lists are printed by ``circuits edit --help``; ``tests/editing/test_registry.py`` checks that the
committed file is current.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from circuits.editing.registry_docs import kinds_markdown  # noqa: E402
from circuits.io import atomic_write_text  # noqa: E402

if __name__ == "__main__":
    out = ROOT / "docs" / "edit_kinds.md"
    atomic_write_text(out, kinds_markdown())
    print(f"wrote {out}")
