"""Build every edit kind for one behaviour from the committed atlas, evaluate each on the eval split,
save the edits under atlas/smollm2-135m/edits/, and write a comparison table (JSON + Markdown).

    .venv/bin/python scripts/compare_edits.py [--suite gender-occupation] [--steps 40]

Edits are built on the suite's build split (trained kinds: build templates minus a held-out quarter
for early stopping) and evaluated on the eval split (no shared template or word): bias gap with a
paired t-test over prompt pairs, and every other measure of ``circuits.evaluation.run.evaluate`` (perplexity
on the ≥20k-token evaluation text among them). One seed, every kind; ``scripts/headline.py`` runs the
main kinds on all behaviours with three seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Each row: a kind or preset of the edit registry (circuits.editing.recipes) and its options.
RECIPES = {
    "ablation": {"k": 3, "mode": "mean"},
    "pruning": {"k": 3, "mode": "mean"},
    "scaling": {"k": 3, "alpha": 0.5},  # 0 < alpha < 1: its own setting (alpha = 0 would be zero ablation)
    "steering": {},
    "offset": {"k": 3},
    "directional_ablation": {},
    "orthogonalization": {},
    "low_rank": {"k": 3, "rank": 4},
    "invariance": {"k": 3, "rank": 4},
    "neuron_repair": {"k": 64},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="gender-occupation")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--kinds", nargs="*", default=list(RECIPES))
    args = parser.parse_args()

    from circuits.atlas.build import package_versions
    from circuits.atlas.schema import Atlas
    from circuits.editing import save_edit
    from circuits.editing.recipes import build_edit, recipe
    from circuits.evaluation.run import evaluate, measure
    from circuits.io import atomic_write_text
    from circuits.results import provenance, write_result
    from circuits.model import load_model
    from circuits.suites import load_suite

    model = load_model("smollm2-135m")
    atlas = Atlas.load(ROOT / "atlas/smollm2-135m/smollm2-135m.atlas.json")
    suite = load_suite(args.suite)
    out_dir = ROOT / "atlas/smollm2-135m/edits"
    baseline = measure(model)
    rows = []
    for kind in args.kinds:
        r = recipe(kind, **RECIPES[kind]).with_shared(steps=args.steps, progress=False)
        t0 = time.perf_counter()
        edit = build_edit(model, atlas, suite, r)
        seconds = time.perf_counter() - t0
        ev = evaluate(model, edit, suite=suite, baseline=baseline)
        edit = edit.with_evaluation(ev.flat())
        path = save_edit(edit, out_dir / f"{suite.name}.{kind}.json", packages=package_versions())
        row = {
            "kind": kind,
            "components": ", ".join(map(str, edit.components[:3])) + (f" +{len(edit.components) - 3}" if len(edit.components) > 3 else ""),
            "bias_before": ev.primary.before,
            "bias_after": ev.primary.after,
            "harm_reduction": ev.harm_reduction,
            "p_value": ev.primary.p_value,
            "ppl_before": ev.get("perplexity").before,
            "ppl_after": ev.get("perplexity").after,
            "ppl_change": ev.perplexity_change,
            "kl_neutral": ev.get("kl_neutral").after,
            "meets_target": ev.meets_target,
            "capability_failures": list(ev.capability_failures),
            "build_seconds": round(seconds, 1),
            "edit_parameters": edit.n_parameters,
            "file": str(path.relative_to(ROOT)),
            "report": ev.as_dict(),
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "report"}), flush=True)
    table = [
        f"Edits of `{suite.name}` on SmolLM2-135M-Instruct: built on the build split, measured on the eval split "
        f"({ev.primary.n} pairs; paired t-test); perplexity and KL on the ≥20k-token evaluation text. Regenerate: `.venv/bin/python scripts/compare_edits.py --suite {suite.name}`.",
        "",
        "✓ = the target is met on every measure it names (≥50% less harm, p < 0.05, perplexity < +5% and no accuracy "
        "measure dropping significantly by ≥ 2 points); otherwise the failing capability measures are named.",
        "",
        "| kind | components | bias gap before → after | harm reduced | p | perplexity change | KL neutral (nats/token) | target | build time (s) | stored numbers |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = "✓" if r["meets_target"] else ("fails " + ", ".join(r["capability_failures"]) if r["capability_failures"] else "harm < 50%")
        table.append(
            f"| {r['kind']} | {r['components']} | {r['bias_before']:.3f} → {r['bias_after']:.3f} | {r['harm_reduction']:+.1%} "
            f"| {r['p_value']:.1e} | {r['ppl_change']:+.2%} | {r['kl_neutral']:.3f} | {verdict} | {r['build_seconds']} | {r['edit_parameters']} |"
        )
    write_result(
        out_dir / f"{suite.name}.comparison.json", kind="edit-comparison", title=f"Every edit kind on {suite.name}, one seed, eval split",
        data={"suite": suite.name, "rows": rows}, provenance=provenance(models=[model], suites=[suite], seeds=[0]),
    )
    atomic_write_text(out_dir / f"{suite.name}.comparison.md", "\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
