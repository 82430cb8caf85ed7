"""Did the SmolLM2 findings depend on the chat token? Atlases and the main edit, before vs after the BOS policy.

Until schema 0.4 every text was encoded with TransformerLens' default, a BOS token first; for
SmolLM2-Instruct that token is ``<|im_start|>``, the chat-turn marker, which its own tokenizer does not
add. The committed atlases and edits were re-made under the default policy (text encoded as the
model's tokenizer encodes it, no BOS). This script compares, per behaviour, the atlas at ``--old``
(a git revision) with the one in the working tree: top components, flagged sets, the rank correlation
of every component's effect, and the main result (the gender-bias ablation edit), and writes
``results/tokenization/bos-policy.json`` (a :mod:`circuits.results` file).

    .venv/bin/python scripts/bos_policy.py --old 6407b73
    .venv/bin/python scripts/bos_policy.py --page-only     # the Markdown page from the results file alone
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
#: The main edit rebuilt from the re-scanned atlas and evaluated on the eval split (its manifest records the evaluation).
NEW_MAIN = "atlas/smollm2-135m/edits/gender-occupation.ablation.json"
PAGE = ROOT / "docs/results/tokenization.md"
#: The one-seed survey of every edit kind at the old revision (a list of rows; its perplexity was on build text, so only the gap is compared).
OLD_KINDS = "atlas/smollm2-135m/edits/gender-occupation.comparison.json"


def _old_text(rev: str, path: str) -> str | None:
    r = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def behaviour_change(old, new) -> dict:  # noqa: ANN001 - two Behaviour records
    """Top components, flagged sets and the rank agreement of all effects, old vs new (both flagged by the current rule)."""
    from circuits.atlas.build import apply_flag_rule

    old, new = apply_flag_rule(old), apply_flag_rule(new)  # the old atlases predate the FDR control: one rule for both sides
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
    parser.add_argument("--page-only", action="store_true", help="Only rewrite docs/results/tokenization.md from the results file (`make results`).")
    args = parser.parse_args()

    from circuits.atlas.schema import Atlas
    from circuits.editing import load_edit
    from circuits.io import atomic_write_text
    from circuits.results import ModelRecord, provenance, read_result, write_result

    if args.page_only:
        atomic_write_text(PAGE, page(read_result(args.out, kind="bos-policy")))
        print(f"written {PAGE.relative_to(ROOT)}")
        return
    behaviours, models, not_rescanned = [], {}, []
    for path in ATLASES:
        text = _old_text(args.old, path)
        if text is None or not (ROOT / path).is_file():
            continue
        old, new = Atlas.parse(text, source=f"{args.old}:{path}"), Atlas.load(ROOT / path)
        if new.model.tokenization.prepend_bos:
            not_rescanned.append(path)  # still the BOS-prepended measurement: nothing to compare
            continue
        models[new.model.fingerprint] = ModelRecord(name=new.model.name, fingerprint=new.model.fingerprint, file_sha256=new.model.source.get("file_sha256"), tokenization=new.model.tokenization.model_dump())
        for nb in new.behaviours:
            try:
                ob = old.behaviour(nb.name)
            except Exception:  # noqa: BLE001 - a behaviour new in this atlas
                continue
            behaviours.append({"atlas": path, "behaviour": nb.name, **behaviour_change(ob, nb)})
    old_main_file = json.loads(_old_text(args.old, OLD_MAIN) or "{}")
    old_main = old_main_file.get("report", {})
    gap = "bias_gap.gender-occupation"
    edit = load_edit(ROOT / NEW_MAIN)
    ev = edit.evaluation or {}
    pick = lambda rep: {m["name"]: [m["before"], m["after"], m["p_value"]] for m in rep.get("measures", [])}  # noqa: E731
    names = sorted({k.rsplit(".", 1)[0] for k in ev if k.endswith(".before")})
    main_result = {
        "old": {"components": old_main_file.get("cost", {}).get("components"), "harm_reduction": old_main.get("harm_reduction"),
                "perplexity_change": old_main.get("perplexity_change"), "meets_target": old_main.get("meets_target"), "measures": pick(old_main)},
        "new": {"components": [str(c) for c in edit.components], "harm_reduction": ev.get("harm_reduction"), "perplexity_change": ev.get("perplexity_change"),
                "meets_target": bool(ev.get("meets_target")), "measures": {n: [ev[f"{n}.before"], ev[f"{n}.after"], ev.get(f"{n}.p_value")] for n in names}},
    }
    old_rows = {r["kind"]: r for r in json.loads(_old_text(args.old, OLD_KINDS) or "[]")}
    kinds, not_rebuilt = [], []
    for kind, row in old_rows.items():
        path = ROOT / f"atlas/smollm2-135m/edits/gender-occupation.{kind}.json"
        e = load_edit(path) if path.is_file() else None
        if e is None or not e.tokenization or e.tokenization.get("prepend_bos") or not e.evaluation:
            not_rebuilt.append(kind)
            continue
        ev = e.evaluation
        # "mean_over" is a description (reworded since), "objective" moved out of the hyperparameters into its own field.
        old_hp = {k: v for k, v in json.loads(_old_text(args.old, f"atlas/smollm2-135m/edits/gender-occupation.{kind}.json") or "{}").get("hyperparameters", {}).items()
                  if k not in ("mean_over", "objective")}
        new_hp = {k: v for k, v in e.hyperparameters.items() if k in old_hp}
        kinds.append({
            "kind": kind,
            "settings_differ": None if new_hp == old_hp else {"old": old_hp, "new": new_hp},
            "old": {"components": row["components"], "bias_before": row["bias_before"], "bias_after": row["bias_after"], "harm_reduction": row["harm_reduction"],
                    "p_value": row["p_value"]},
            "new": {"components": ", ".join(map(str, e.components[:3])) + (f" +{len(e.components) - 3}" if len(e.components) > 3 else ""),
                    "bias_before": ev[f"{gap}.before"], "bias_after": ev[f"{gap}.after"], "harm_reduction": ev.get("harm_reduction"),
                    "p_value": ev.get(f"{gap}.p_value"), "perplexity_change": ev.get("perplexity_change"), "meets_target": bool(ev.get("meets_target"))},
        })
    from migrate_manifests import manifests  # scripts/: the one finder of committed edit manifests

    bos_edits: dict[str, int] = {}  # committed edit manifests still measured with BOS prepended, per directory
    for path in manifests([ROOT / "atlas"]):
        raw = json.loads(path.read_text(encoding="utf-8"))
        if (raw.get("tokenization") or {}).get("prepend_bos"):
            key = str(path.parent.relative_to(ROOT))
            bos_edits[key] = bos_edits.get(key, 0) + 1
    write_result(
        args.out, kind="bos-policy", title="SmolLM2 atlases and the main edit with BOS prepended (before schema 0.4) vs encoded as the tokenizer does",
        data={"old_revision": args.old, "behaviours": behaviours, "main_result": main_result, "not_rescanned": not_rescanned,
              "kinds": kinds, "kinds_not_rebuilt": not_rebuilt, "edits_still_bos": bos_edits},
        provenance=provenance(models=list(models.values())),
    )
    atomic_write_text(PAGE, page(read_result(args.out, kind="bos-policy")))
    print(f"written {args.out} and {PAGE.relative_to(ROOT)}")


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:+.{digits}%}"


def page(result) -> str:  # noqa: ANN001 - a circuits.results.ResultFile
    """The Markdown page of ``results/tokenization/bos-policy.json`` (generated; ``make results`` rewrites it)."""
    d, prov = result.data, result.provenance
    old, new = d["main_result"]["old"], d["main_result"]["new"]
    gap = "bias_gap.gender-occupation"
    ob, nb = old["measures"].get(gap, [None] * 3), new["measures"].get(gap, [None] * 3)
    lines = [
        "# Did the findings depend on the chat token?",
        "",
        "<!-- generated by scripts/bos_policy.py from results/tokenization/bos-policy.json; do not edit -->",
        "",
        "Until atlas schema 0.4 every text was encoded with TransformerLens' default, a BOS token first; for "
        "SmolLM2-Instruct that token is `<|im_start|>`, the chat-turn marker, which its own tokenizer does not add. "
        "The atlases and edits below were re-made with text encoded as the model's tokenizer encodes it (no BOS) and "
        f"compared with the BOS-prepended ones at revision `{d['old_revision']}` "
        f"(commit `{prov.git_commit}`, {prov.date[:10]}).",
        "",
        "## The main result: ablating the top-3 gender heads",
        "",
        "| | components | bias gap before → after (logits, eval split) | harm reduced | p | perplexity change | target met |",
        "|---|---|---|---|---|---|---|",
        f"| BOS prepended (old) | {', '.join(old['components'] or [])} | {ob[0]:.3f} → {ob[1]:.3f} | {_pct(old['harm_reduction'])} | {ob[2]:.1e} "
        f"| {_pct(old['perplexity_change'], 2)} | {'yes' if old['meets_target'] else 'no'} |",
        f"| tokenizer's own, no BOS (new) | {', '.join(new['components'])} | {nb[0]:.3f} → {nb[1]:.3f} | {_pct(new['harm_reduction'])} | {nb[2]:.1e} "
        f"| {_pct(new['perplexity_change'], 2)} | {'yes' if new['meets_target'] else 'no'} |",
        "",
        "## Per behaviour: top components, flagged sets, rank agreement",
        "",
        "| atlas · behaviour | top-5 old | top-5 new | top-10 overlap | flagged old → new (kept; Jaccard) | Spearman ρ of all effects |",
        "|---|---|---|---|---|---|",
    ]
    for b in d["behaviours"]:
        t_old = ", ".join(c for c, _ in b["top5"][0])
        t_new = ", ".join(c for c, _ in b["top5"][1])
        rho = "—" if b["spearman_effects"] is None else f"{b['spearman_effects']:.3f}"
        lines.append(f"| {b['behaviour']} | {t_old} | {t_new} | {b['top10_overlap']}/10 | {b['flagged'][0]} → {b['flagged'][1]} "
                     f"({b['flagged_kept']}; {b['flagged_jaccard']:.2f}) | {rho} |")
    if d.get("kinds"):
        lines += [
            "",
            "## Every edit kind on gender-occupation (one seed), rebuilt from the re-scanned atlas",
            "",
            "Bias gap on the eval split (logits). The old survey's perplexity was measured on build text, so only the new, "
            "held-out perplexity change is shown; the new target column applies the whole gate (≥50% less harm, p < 0.05, "
            "perplexity < +5%, no accuracy measure dropping significantly).",
            "",
            "| kind | components (new) | gap old: before → after (reduced) | gap new: before → after (reduced) | p new | perplexity new | target met (new) |",
            "|---|---|---|---|---|---|---|",
        ]
        differ = []
        for k in d["kinds"]:
            o, n = k["old"], k["new"]
            if k.get("settings_differ"):
                differ.append(f"{k['kind']}: old {k['settings_differ']['old']}, new {k['settings_differ']['new']}")
            lines.append(f"| {k['kind']}{' *' if k.get('settings_differ') else ''} | {n['components']} | {o['bias_before']:.3f} → {o['bias_after']:.3f} ({_pct(o['harm_reduction'])}) "
                         f"| {n['bias_before']:.3f} → {n['bias_after']:.3f} ({_pct(n['harm_reduction'])}) | {n['p_value']:.1e} "
                         f"| {_pct(n['perplexity_change'], 2)} | {'yes' if n['meets_target'] else 'no'} |")
        if differ:
            lines += ["", "\\* Not the same edit: the hyperparameters stored in the old and new manifests differ ("
                      + "; ".join(differ) + "), so that row compares settings as well as the policy."]
        if d.get("kinds_not_rebuilt"):
            lines += ["", "Not rebuilt yet (their committed edits are still the BOS-prepended ones): " + ", ".join(d["kinds_not_rebuilt"]) + "."]
    if d.get("edits_still_bos"):
        lines += ["", "Still measured with BOS prepended (their manifests record it): "
                  + ", ".join(f"{n} edit(s) in `{p}`" for p, n in d["edits_still_bos"].items())
                  + "; their reports and the tables made from them (headline experiments, the seeds' methods) are BOS-era numbers."]
    if d.get("not_rescanned"):
        lines += ["", "Not re-scanned yet (still measured with BOS prepended, and recorded so in their files): "
                  + ", ".join(f"`{p}`" for p in d["not_rescanned"]) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
