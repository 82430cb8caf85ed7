"""The headline experiment (#7): for each committed behaviour on SmolLM2-135M, compare edit kinds on
harm reduction, capability change and cost, with ≥3 seeds for every trained kind.

    .venv/bin/python scripts/headline.py [--seeds 0 1 2] [--steps 40] [--suites ...] [--kinds ...]

Every edit is built on its suite's *build* split (trained kinds hold out a quarter of the build
templates for early stopping; direction edits choose their layer on the build split and build text)
and evaluated with :func:`circuits.evaluation.run.evaluate` on held-out data only: the suite's
``eval`` split (no shared template or word), the stereotype, toxicity, classification and
multiple-choice sets of ``circuits/data``, and the ≥20k-token evaluation text. The unedited model is
measured once and reused as the baseline of every edit.

Writes, under ``atlas/smollm2-135m/headline/``: one report per (behaviour, kind, seed)
(``reports/{suite}.{kind}.seed{n}.json``; an existing report is reused, so an interrupted run resumes),
the seed-0 edit of each (behaviour, kind) with its evaluation in the manifest (``edits/``),
``headline.json`` (mean ± std over seeds) and ``headline.md`` (the README table).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "atlas/smollm2-135m/headline"
SUITES = ["gender-occupation", "toxicity", "name-sentiment"]
KINDS = ["ablation", "offset", "low_rank", "orthogonalization", "invariance"]
TRAINED = {"offset", "low_rank", "invariance", "neuron_repair"}
RECIPES: dict[str, dict[str, object]] = {
    "ablation": {"k": 3, "mode": "mean"},
    "offset": {"k": 3},
    "low_rank": {"k": 3, "rank": 4},
    "orthogonalization": {},
    "invariance": {"k": 3, "rank": 4},
}
LAYERS = [2, 6, 10, 14, 18, 22, 26]
#: A second harm measure per behaviour, from data no builder sees.
SECONDARY = {"gender-occupation": "stereotype_preference", "toxicity": "toxicity_propensity", "name-sentiment": "spurious_flip_rate"}


def _fmt(mean: float, std: float, spec: str, n: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:{spec}}" + (f" ± {std:{spec.lstrip('+')}}" if n > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="*", default=SUITES)
    parser.add_argument("--kinds", nargs="*", default=KINDS)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()

    from circuits.atlas.build import package_versions
    from circuits.atlas.schema import Atlas
    from circuits.editing import save_edit
    from circuits.editing.recipes import EditRecipe, build_edit, choose_direction_layer
    from circuits.editing.train import TrainConfig
    from circuits.evaluation.run import EvalReport, Measure, evaluate, measure, seed_table
    from circuits.io import atomic_write_text
    from circuits.model import load_model
    from circuits.suites import available_suites, load_suite

    model = load_model("smollm2-135m")
    atlas = Atlas.load(ROOT / "atlas/smollm2-135m/smollm2-135m.atlas.json")
    (OUT / "reports").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    baseline = measure(model, suites=[load_suite(n) for n in available_suites()])
    print(f"baseline measured in {time.perf_counter() - t0:.0f} s", flush=True)

    def load_report(path: Path) -> EvalReport:
        raw = json.loads(path.read_text())
        measures = tuple(Measure(**{k: v for k, v in m.items() if k != "reduction"}) for m in raw["report"]["measures"])
        r = raw["report"]
        return EvalReport(tuple(r["edits"]), r["suite"], r["split"], measures, r["seconds"])

    rows = []
    for suite_name in args.suites:
        suite = load_suite(suite_name)
        for kind in args.kinds:
            reports, costs = [], []
            for seed in args.seeds if kind in TRAINED else args.seeds[:1]:
                path = OUT / "reports" / f"{suite.name}.{kind}.seed{seed}.json"
                if path.exists():
                    reports.append(load_report(path))
                    costs.append(json.loads(path.read_text())["cost"])
                    print(f"reuse {path.name}", flush=True)
                    continue
                t = time.perf_counter()
                extra: dict[str, object] = {}
                if kind in ("orthogonalization", "directional_ablation"):
                    layer, sweep = choose_direction_layer(model, suite, LAYERS, kind=kind)  # type: ignore[arg-type]
                    extra = {"layer": layer}
                recipe = EditRecipe(kind=kind, train=TrainConfig(steps=args.steps, seed=seed, progress=False), **{**RECIPES[kind], **extra})  # type: ignore[arg-type]
                edit = build_edit(model, atlas, suite, recipe)
                build_s = time.perf_counter() - t
                report = evaluate(model, edit, suite=suite, baseline=baseline, seed=seed)
                cost = {"build_seconds": round(build_s, 1), "parameters_changed": edit.n_parameters, "components": [str(c) for c in edit.components]}
                if extra:
                    cost["layer_sweep"] = sweep
                atomic_write_text(path, json.dumps({"cost": cost, "report": report.as_dict()}, indent=1) + "\n")
                if seed == args.seeds[0]:
                    save_edit(edit.with_evaluation(report.flat()), OUT / "edits" / f"{suite.name}.{kind}.json", packages=package_versions())
                reports.append(report)
                costs.append(cost)
                p = report.primary
                print(f"{suite.name} {kind} seed {seed}: harm {p.before:.3f} → {p.after:.3f} ({report.harm_reduction:+.1%}, p={p.p_value:.1e}), "
                      f"ppl {report.perplexity_change:+.2%}, built in {build_s:.0f} s", flush=True)
            table = seed_table(reports)
            row = {
                "suite": suite.name,
                "kind": kind,
                "seeds": len(reports),
                "components": ", ".join(costs[0]["components"][:3]) + (f" +{len(costs[0]['components']) - 3}" if len(costs[0]["components"]) > 3 else ""),
                "build_seconds_mean": sum(c["build_seconds"] for c in costs) / len(costs),
                "parameters_changed": costs[0]["parameters_changed"],
                "meets_target": [r.meets_target for r in reports],
                "p_max": max(r.primary.p_value for r in reports),
                "measures": table.to_dict(orient="records"),
            }
            rows.append(row)
    atomic_write_text(OUT / "headline.json", json.dumps(rows, indent=1) + "\n")

    def m(row: dict, name: str) -> dict:
        return next(x for x in row["measures"] if x["name"] == name)

    lines = [
        "| behaviour | kind | seeds | harm (eval split) before → after | harm reduced | max p | second harm measure before → after "
        "| perplexity change | KL neutral (nats/token) | MC accuracy change | build time (s) | parameters changed | target met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        h = m(r, f"bias_gap.{r['suite']}")
        n = r["seeds"]
        ppl, kl, mc = m(r, "perplexity"), m(r, "kl_neutral"), m(r, "multiple_choice_accuracy")
        met = sum(r["meets_target"])
        s2 = m(r, SECONDARY.get(r["suite"], "stereotype_preference"))
        lines.append(
            f"| {r['suite']} | {r['kind']} | {n} | {h['before_mean']:.3f} → {_fmt(h['after_mean'], h['after_std'], '.3f', n)} "
            f"| {_fmt(h['reduction_mean'], h['reduction_std'], '+.1%', n)} | {r['p_max']:.1e} "
            f"| {s2['name']}: {s2['before_mean']:.3f} → {_fmt(s2['after_mean'], s2['after_std'], '.3f', n)} "
            f"| {_fmt(ppl['change_mean'], ppl['change_std'], '+.2%', n)} | {_fmt(kl['after_mean'], kl['after_std'], '.3f', n)} "
            f"| {_fmt(mc['change_mean'], mc['change_std'], '+.1%', n)} | {r['build_seconds_mean']:.0f} | {r['parameters_changed']} | {met}/{n} |"
        )
    atomic_write_text(OUT / "headline.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
