"""Reading earlier atlas schema versions: ``0.1``, ``0.2`` and ``0.3`` files are upgraded to ``0.4`` before validation.

An upgrade only renames and reshapes fields it recognises; anything of an unexpected type is passed on
unchanged, so the upgraded file is validated exactly like a current one and a wrongly typed field gets
the same :class:`~circuits.atlas.schema.AtlasError` naming it, never a traceback.
"""

from __future__ import annotations

from typing import Any


def upgrade(raw: Any) -> Any:
    """Upgrade a parsed atlas of an earlier schema version to ``0.4`` (other values pass through).

    ``0.1`` → ``0.2``: one ``method`` per behaviour becomes ``methods``; ``provenance.seed`` becomes
    ``seeds``. ``0.2`` → ``0.3``: adds the optional ``model.source``. ``0.3`` → ``0.4``: records the
    tokenization those files were measured under, ``model.tokenization = {prepend_bos: true, source:
    "legacy"}`` (TransformerLens' bridge prepended BOS to every text before the policy existed).
    """
    if isinstance(raw, dict) and raw.get("schema_version") == "0.1":
        raw = _upgrade_0_1(raw)
    if isinstance(raw, dict) and raw.get("schema_version") == "0.2":
        raw = dict(raw, schema_version="0.3")
    if isinstance(raw, dict) and raw.get("schema_version") == "0.3":
        raw = dict(raw, schema_version="0.4")
        if isinstance(raw.get("model"), dict) and "tokenization" not in raw["model"]:
            raw["model"] = {**raw["model"], "tokenization": LEGACY_TOKENIZATION}
    return raw


#: The tokenization of every record written before the policy existed (BOS always prepended).
LEGACY_TOKENIZATION = {"prepend_bos": True, "source": "legacy"}


def _upgrade_0_1(raw: dict[str, Any]) -> dict[str, Any]:
    raw = dict(raw, schema_version="0.2")
    prov = raw.get("provenance")
    if isinstance(prov, dict) and "seed" in prov:
        prov = dict(prov)
        prov["seeds"] = [prov.pop("seed")]
        raw["provenance"] = prov
    behaviours = raw.get("behaviours")
    if not isinstance(behaviours, list):
        return raw
    out = []
    for b in behaviours:
        if isinstance(b, dict) and isinstance(b.get("method"), dict):
            b = dict(b)
            m = b.pop("method")
            b["methods"] = [{"name": m.get("name"), "direction": m.get("direction"), "metric": b.get("metric", "")}]
        out.append(b)
    raw["behaviours"] = out
    return raw
