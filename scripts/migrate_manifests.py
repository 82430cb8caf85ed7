"""Upgrade edit manifests of schema 0.1–0.4 to the current schema, in place (idempotent).

    python scripts/migrate_manifests.py                 # every edit manifest under atlas/
    python scripts/migrate_manifests.py PATH [PATH...]  # these manifests (or every one under these directories)
    python scripts/migrate_manifests.py --check         # list what would change; exit 1 if anything would

An edit manifest is a JSON object with ``schema_version`` and ``kind`` (atlases, reports and results
have no ``kind``). For each one of an earlier schema it rewrites, and nothing else:

* ``kind``: earlier manifests could name a recipe as their kind; it becomes the kind and a form —
  ``pruning`` → ``ablation`` as weights, ``orthogonalization`` → ``directional_ablation`` as
  weights, ``invariance`` → ``low_rank`` by the ``invariance`` objective, ``mean_ablation`` →
  ``ablation`` with ``mode: mean``;
* ``form``: absent before 0.3 (``hooks``, the default then; ``weights`` for the weight-only kinds);
* ``objective``: from the ``objective`` hyperparameter trained edits recorded (moved out of the
  hyperparameters), else from how that kind was built: ``reference`` (ablation), ``constant``
  (scaling), ``mean_difference`` (steering, directional ablation), ``care`` (neuron repair by particle
  swarm, ``optimiser: pso``), ``aifs``;
* ``tokenization``: absent before 0.4; the policy of that time (BOS prepended, ``source: "legacy"``);
* ``schema_version``.

The tensor file is never touched, so the manifest's ``tensors_sha256`` stays valid; a manifest whose
tensor file does not match it is reported and left alone. A manifest already at the current schema is
left byte for byte as it is. Each rewrite is atomic, and the result is loaded back with
:func:`circuits.editing.load_edit` before the next file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from circuits.atlas.upgrade import LEGACY_TOKENIZATION  # noqa: E402
from circuits.editing.edit import EDIT_SCHEMA_VERSION, EditError, EditManifest, load_edit  # noqa: E402
from circuits.io import atomic_write_text  # noqa: E402

#: Kind names of schema ≤ 0.4 manifests that were recipes → (kind, form, objective or None, hyperparameters to add).
RENAMED: dict[str, tuple[str, str, str | None, dict[str, str]]] = {
    "pruning": ("ablation", "weights", "reference", {}),
    "orthogonalization": ("directional_ablation", "weights", "mean_difference", {}),
    "invariance": ("low_rank", "weights", "invariance", {}),
    "mean_ablation": ("ablation", "hooks", "reference", {"mode": "mean"}),
}
#: The objective of a kind whose edits were built one way only (schema ≤ 0.4 recorded none for these).
BUILT_BY: dict[str, str] = {"ablation": "reference", "scaling": "constant", "steering": "mean_difference", "directional_ablation": "mean_difference", "aifs": "aifs"}
#: Kinds with no hook form.
WEIGHTS_ONLY = ("low_rank", "weight_delta")


def is_edit_manifest(raw: Any) -> bool:
    """An edit manifest: a JSON object with ``schema_version`` and ``kind`` (not a results file, which has ``provenance`` and ``data``)."""
    return isinstance(raw, dict) and "schema_version" in raw and "kind" in raw and not ("provenance" in raw and "data" in raw)


def migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """A manifest of any schema → the current schema (a current one is returned unchanged).

    Raises:
        EditError: An unknown schema version, or a kind whose objective cannot be told.
    """
    version = raw.get("schema_version")
    if version == EDIT_SCHEMA_VERSION:
        return raw
    if version not in ("0.1", "0.2", "0.3", "0.4"):
        raise EditError(f"unknown edit manifest schema {version!r}")
    out = dict(raw)
    hp = dict(out.get("hyperparameters") or {})
    kind, form, objective = out["kind"], out.get("form"), None
    if kind in RENAMED:
        kind, form, objective, extra = RENAMED[kind]
        hp = {**extra, **hp}
    if kind in WEIGHTS_ONLY:
        form = "weights"
    recorded = hp.pop("objective", None)
    objective = recorded if recorded is not None else objective
    if objective is None:
        if kind == "neuron_repair" and hp.get("optimiser") == "pso":
            objective = "care"
        elif kind in BUILT_BY:
            objective = BUILT_BY[kind]
        else:
            raise EditError(f"a {kind} manifest without an objective hyperparameter: cannot tell how it was trained")
    out.update(schema_version=EDIT_SCHEMA_VERSION, kind=kind, form=form or "hooks", objective=objective, hyperparameters=hp)
    out.setdefault("tokenization", LEGACY_TOKENIZATION)
    return out


def manifests(paths: list[Path]) -> list[Path]:
    """The edit manifests among ``paths`` (directories searched recursively for ``*.json``), sorted."""
    found: list[Path] = []
    for p in paths:
        candidates = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        for c in candidates:
            try:
                raw = json.loads(c.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if is_edit_manifest(raw):
                found.append(c)
    return found


def migrate_file(path: Path, *, write: bool = True) -> bool:
    """Upgrade one manifest in place (atomically; its tensor file untouched) and load it back.

    Args:
        path: The manifest.
        write: ``False``: only tell whether it would change.

    Returns:
        Whether it changed (or would).

    Raises:
        EditError: A manifest that cannot be upgraded, whose tensor file does not match its
            ``tensors_sha256``, or that does not load once upgraded (nothing is written then).
    """
    raw = json.loads(path.read_text(encoding="utf-8"))
    new = migrate(raw)
    if new is raw:
        return False
    text = EditManifest.model_validate(new).model_dump_json(indent=2) + "\n"
    tensors = path.with_suffix(".safetensors")
    if hashlib.sha256(tensors.read_bytes()).hexdigest() != new.get("tensors_sha256"):
        raise EditError(f"{tensors} does not match the sha256 recorded in {path.name}; not migrated")
    if write:
        atomic_write_text(path, text)
        load_edit(path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[ROOT / "atlas"], help="manifests or directories (default: atlas/)")
    parser.add_argument("--check", action="store_true", help="change nothing; list the manifests that need migrating and exit 1 if any do")
    args = parser.parse_args()
    changed, failed = [], []
    for path in manifests(args.paths):
        try:
            if migrate_file(path, write=not args.check):
                changed.append(path)
        except (EditError, OSError, KeyError) as e:
            failed.append(f"{path}: {e}")
    verb = "need migrating" if args.check else "migrated"
    print(f"{len(changed)} manifest(s) {verb}" + "".join(f"\n  {p}" for p in changed))
    for f in failed:
        print(f"error: {f}", file=sys.stderr)
    if failed or (args.check and changed):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
