"""Did the SmolLM2 findings depend on the chat token? Atlases and the main edit, before vs after the BOS policy.

Until schema 0.4 every text was encoded with TransformerLens' default, a BOS token first; for
SmolLM2-Instruct that token is ``<|im_start|>``, the chat-turn marker, which its own tokenizer does not
add. The committed atlases and edits were re-made under the default policy (text encoded as the
model's tokenizer encodes it, no BOS). This script compares, per behaviour, the atlas at ``--old``
(a git revision) with the one in the working tree: top components, flagged sets, the rank correlation
of every component's effect, and the main result (the gender-bias ablation edit), and writes
``results/tokenization/bos-policy.json`` (a :mod:`circuits.results` file).

    .venv/bin/python scripts/bos_policy.py --old 6407b73
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
ATLASES = [
    "atlas/smollm2-135m/gender-occupation.atlas.json",
    "atlas/smollm2-135m/toxicity.atlas.json",
    "atlas/smollm2-135m/name-sentiment.atlas.json",
    "atlas/smollm2-135m/identity-harm-religion.atlas.json",
    "atlas/smollm2-135m/name-sentiment-v2.atlas.json",
    "atlas/smollm2-135m/tasks/ioi.atlas.json",
    "atlas/smollm2-135m/tasks/greater-than.atlas.json",
    "atlas/smollm2-135m/tasks/factual-recall.atlas.json",
    "atlas/smollm2-135m/own-behaviour/office-pronouns.atlas.json",
]
OLD_MAIN = "atlas/smollm2-135m/headline-v1/reports/gender-occupation.ablation.seed0.json"
NEW_MAIN = "atlas/smollm2-135m/edits/gender-occupation.comparison.json"


def _old_text(rev: str, path: str) -> str | None:
    r = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def behaviour_change(old, new) -> dict:  # noqa: ANN001 - two Behaviour records
    """Top components, flagged sets and the rank agreement of all effects, old vs new."""
    o = {c.id: c for c in old.components}
    n = {c.id: c for c in new.components}
    shared = sorted(set(o) & set(n))
    rho = spearmanr([o[i].effect.mean for i in shared], [n[i].effect.mean for i in shared]).statistic if len(shared) > 2 else float("nan")
    fo, fn = {c.id for c in old.flagged()}, {c.id for c in new.flagged()}
    top = lambda b: [[c.id, round(c.effect.mean, 4)] for c in b.top(5)]  # noqa: E731
    top_ids = lambda b, k: {c.id for c in b.top(k)}  # noqa: E731
    return {
        "metric": new.metric,
        "n_pairs": [old.suite.n_pairs, new.suite.n_pairs],
        "clean_metric_mean": [old.clean_metric_mean, new.clean_metric_mean],
        "corrupted_metric_mean": [old.corrupted_metric_mean, new.corrupted_metric_mean],
        "top5": [top(old), top(new)],
        "top10_overlap": len(top_ids(old, 10) & top_ids(new, 10)),
        "flagged": [len(fo), len(fn)],
        "flagged_kept": len(fo & fn),
        "flagged_jaccard": len(fo & fn) / len(fo | fn) if fo | fn else 1.0,
        "spearman_effects": None if rho != rho else float(rho),
        "n_components": len(shared),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="6407b73", help="Git revision of the atlases measured with BOS prepended.")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "results/tokenization/bos-policy.json")
    args = parser.parse_args()

    from circuits.atlas.schema import Atlas
    from circuits.results import ModelRecord, provenance, read_result, write_result

    behaviours, models = [], {}
    for path in ATLASES:
        text = _old_text(args.old, path)
        if text is None or not (ROOT / path).is_file():
            continue
        old, new = Atlas.parse(text, source=f"{args.old}:{path}"), Atlas.load(ROOT / path)
        if new.model.tokenization.prepend_bos:
            raise SystemExit(f"{path} is still measured with BOS prepended: rescan it first")
        models[new.model.fingerprint] = ModelRecord(name=new.model.name, fingerprint=new.model.fingerprint, file_sha256=new.model.source.get("file_sha256"), tokenization=new.model.tokenization.model_dump())
        for nb in new.behaviours:
            try:
                ob = old.behaviour(nb.name)
            except Exception:  # noqa: BLE001 - a behaviour new in this atlas
                continue
            behaviours.append({"atlas": path, "behaviour": nb.name, **behaviour_change(ob, nb)})
    old_main = json.loads(_old_text(args.old, OLD_MAIN) or "{}").get("report", {})
    new_rows = read_result(ROOT / NEW_MAIN, kind="edit-comparison").data["rows"]
    new_main = next(r for r in new_rows if r["kind"] == "ablation")
    pick = lambda rep: {m["name"]: [m["before"], m["after"], m["p_value"]] for m in rep.get("measures", [])}  # noqa: E731
    main_result = {
        "old": {"components": old_main and json.loads(_old_text(args.old, OLD_MAIN))["cost"]["components"], "harm_reduction": old_main.get("harm_reduction"), "measures": pick(old_main)},
        "new": {"components": new_main["components"].split(", "), "harm_reduction": new_main["harm_reduction"], "meets_target": new_main["meets_target"], "measures": pick(new_main["report"])},
    }
    write_result(
        args.out, kind="bos-policy", title="SmolLM2 atlases and the main edit with BOS prepended (before schema 0.4) vs encoded as the tokenizer does",
        data={"old_revision": args.old, "behaviours": behaviours, "main_result": main_result},
        provenance=provenance(models=list(models.values())),
    )
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
