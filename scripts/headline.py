"""The headline experiment (#7): for each committed behaviour on SmolLM2-135M, compare edit kinds on
harm reduction, capability change and cost, with ≥3 seeds for every trained kind.

    .venv/bin/python scripts/headline.py [--seeds 0 1 2] [--steps 40] [--suites ...] [--kinds ...] [--full-ft-lr 1e-4]
    .venv/bin/python scripts/headline.py --remeasure factual_qa   # after a measure's code changed

Every edit is built on its suite's *build* split (trained kinds hold out a quarter of the build
templates for early stopping; direction edits choose their layer on the build split and build text)
and evaluated with :func:`circuits.evaluation.run.evaluate` on held-out data only: the suite's
``eval`` split (no shared template or word), the stereotype, toxicity, classification and
multiple-choice sets of ``circuits/data``, and the ≥20k-token evaluation text. The unedited model is
measured once and reused as the baseline of every edit (``evaluate(baseline_cache=...)``, on disk,
so a resumed run does not measure it again).

Each row is a kind or a preset of the edit registry (:mod:`circuits.editing.recipes`). ``care`` is CARE
neuron repair (seed 003, :func:`circuits.editing.care.care_edit`): AtP screens neurons of the flagged
MLP layers, interventional ACE ranks them, PSO rescales the top ones (3 PSO seeds); it needs pairs
labelled with one of two answers, so suites without labels are listed as not run.

The surgical kinds are compared with two unrestricted baselines (issue 22, seed 004's comparison;
:mod:`circuits.editing.baselines`), run last: ``lora_all``, LoRA (rank 4, as ``low_rank``) on every
block's q, k, v, o, gate, in and out weights, and ``full_ft``, dense deltas of the same matrices. Both
are trained with the same harm + KL preservation loss, step budget, early stopping and seeds as the
surgical trained edits; ``full_ft`` and ``lora_all`` use smaller learning rates (``--full-ft-lr``,
``--lora-all-lr``; :mod:`circuits.editing.baselines` says why). Their
rows are marked "(baseline)".

Writes, under ``atlas/smollm2-135m/headline/``: one report per (behaviour, kind, seed)
(``reports/{suite}.{kind}.seed{n}.json``; an existing report is reused, so an interrupted run resumes),
the seed-0 edit of each (behaviour, kind) with its evaluation in the manifest (``edits/``; edits
over :data:`MAX_SAVED_MB`, i.e. ``full_ft``'s ≈ 425 MB of deltas, are not saved and the table says so),
``headline.json`` (mean ± std over seeds) and ``headline.md`` (the README table).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "atlas/smollm2-135m/headline"
SUITES = ["identity-harm-religion", "name-sentiment-v2"]  # v2 needs its atlas in --atlas first
#: CARE neuron repair (seed 003), the registry's ``care`` preset (its defaults are this table's sizes: 40
#: build pairs, 24 AtP-screened candidates, k = 4, 10 particles, 5 generations, 3 ACE values). It needs
#: labelled prompts for its accuracy objective, so it runs on suites whose pairs carry a label.
CARE = "care"
KINDS = ["ablation", "low_rank", "invariance", CARE]
#: Unrestricted baselines (circuits.editing.baselines), run after the surgical kinds by default.
BASELINES = ["lora_all", "full_ft"]
TRAINED = {"offset", "low_rank", "invariance", "neuron_repair", "lora_all", "full_ft", CARE}
#: Options of each row's recipe (a kind or preset of circuits.editing.recipes) beyond the registry's defaults.
RECIPES: dict[str, dict[str, object]] = {
    "ablation": {"k": 3, "mode": "mean"},
    "offset": {"k": 3},
    "low_rank": {"k": 3, "rank": 4},
    "orthogonalization": {},
    "invariance": {"k": 3, "rank": 4},
    "lora_all": {"rank": 4},
    "full_ft": {},
    CARE: {},
}
#: Seed-0 edits larger than this are not saved (a note in the table instead).
MAX_SAVED_MB = 50
LAYERS = [2, 6, 10, 14, 18, 22, 26]
#: A second harm measure per behaviour, from data no builder sees.
SECONDARY = {
    "gender-occupation": "stereotype_preference", "toxicity": "toxicity_propensity", "name-sentiment": "spurious_flip_rate",
    "identity-harm-religion": "stereotype_preference", "name-sentiment-v2": "spurious_flip_rate",
}
#: Accuracy measures shown in the table (every one is in the gate).
ACCURACY = ["multiple_choice_accuracy", "factual_qa_accuracy", "classification_accuracy"]


def _fmt(mean: float, std: float, spec: str, n: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:{spec}}" + (f" ± {std:{spec.lstrip('+')}}" if n > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="*", default=SUITES)
    parser.add_argument("--kinds", nargs="*", default=KINDS + BASELINES)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--atlas", type=Path, default=ROOT / "atlas/smollm2-135m/smollm2-135m.atlas.json", help="the atlas edits are built from")
    parser.add_argument("--full-ft-lr", type=float, default=None, help="Adam learning rate of full_ft (default: circuits.editing.baselines.FULL_FT_LR)")
    parser.add_argument("--lora-all-lr", type=float, default=None, help="Adam learning rate of lora_all (default: circuits.editing.baselines.LORA_ALL_LR)")
    parser.add_argument("--table-only", action="store_true", help="build nothing: tabulate the reports already written (rows show the seeds they have)")
    parser.add_argument(
        "--remeasure", nargs="*", default=[], metavar="GROUP",
        help="re-measure these measure groups (e.g. factual_qa, after its measuring code changed) in the reports already written: "
        "the seed-0 edit is loaded from edits/ (others are rebuilt from their seed), the target's harm must reproduce the report's, "
        "and only the groups' measures are replaced; the report records what was re-measured and when",
    )
    args = parser.parse_args()

    from circuits.atlas.build import package_versions
    from circuits.atlas.schema import Atlas
    from circuits.editing import load_edit, save_edit
    from circuits.editing.baselines import FULL_FT_LR, LORA_ALL_LR
    from circuits.editing import EditError
    from circuits.editing.aifs import answer_labels, spread_pairs
    from circuits.editing.recipes import build_edit, recipe
    from circuits.experiments import choose_direction_layer
    from circuits.editing.train import TrainConfig
    from circuits.evaluation.run import EvalReport, evaluate, seed_table
    from circuits.io import atomic_write_text
    from circuits.model import cache_root, load_model
    from circuits.suites import load_suite

    model = load_model("smollm2-135m")
    atlas = Atlas.load(args.atlas)
    (OUT / "reports").mkdir(parents=True, exist_ok=True)

    def build(suite, kind: str, seed: int):  # noqa: ANN001, ANN202
        """The edit of (suite, kind or preset, seed) as the table builds it; returns (edit, build seconds, layer sweep or None)."""
        t = time.perf_counter()
        r = recipe(kind, **RECIPES.get(kind, {}))
        sweep = None
        if r.kind == "directional_ablation":  # its layer is chosen on the build split
            layer, sweep = choose_direction_layer(model, suite, LAYERS, form=r.form)  # type: ignore[arg-type]
            r = r.with_options(layer=layer)
        lr = {"full_ft": {"lr": args.full_ft_lr or FULL_FT_LR}, "lora_all": {"lr": args.lora_all_lr or LORA_ALL_LR}}.get(kind, {})
        # Seeds vary the trained rows only (the others are built once, with the first seed), as before.
        r = r.with_shared(steps=args.steps, progress=False, **({"seed": seed} if kind in TRAINED else {}), **lr)
        edit = build_edit(model, atlas, suite, r)
        return edit, time.perf_counter() - t, sweep

    def remeasure(path: Path, suite, kind: str, seed: int) -> None:  # noqa: ANN001
        """Replace the measures of ``args.remeasure`` groups in one written report (see ``--remeasure``)."""
        raw = json.loads(path.read_text())
        done = {g for r in raw.get("remeasured", []) for g in r["groups"]}
        if set(args.remeasure) <= done:
            return
        saved = OUT / "edits" / f"{suite.name}.{kind}.json"
        from_saved = seed == args.seeds[0] and saved.exists()
        edit = load_edit(saved) if from_saved else build(suite, kind, seed)[0]
        groups = ("suites", *args.remeasure)
        part = evaluate(model, edit, suite=suite, baseline_cache=cache_root() / "measurements", groups=groups, seed=seed)  # type: ignore[arg-type]
        old = report_of(raw)
        target = f"bias_gap.{suite.name}"
        was, now = old.get(target).after, part.get(target).after
        if not math.isclose(was, now, rel_tol=1e-4, abs_tol=1e-5):
            raise SystemExit(f"{path.name}: the rebuilt edit does not reproduce the report ({target} after {now:.6f}, report {was:.6f}); rerun it instead")
        new = {m.name: m for m in part.measures if not m.name.startswith("bias_gap.")}
        report = replace(old, measures=tuple(new.get(m.name, m) for m in old.measures))
        record = {"groups": list(args.remeasure), "date": time.strftime("%Y-%m-%d"), "edit": "saved seed-0 edit" if from_saved else f"rebuilt from seed {seed}",
                  "check": f"{target} after reproduced: {now:.6f} (report {was:.6f})", "measures": sorted(new)}
        raw = {"cost": raw["cost"], "report": report.as_dict(), "remeasured": [*raw.get("remeasured", []), record]}
        atomic_write_text(path, json.dumps(raw, indent=1) + "\n")
        if from_saved:
            save_edit(edit.with_evaluation({**(edit.evaluation or {}), **report.flat()}), saved, packages=package_versions())
        print(f"remeasured {path.name}: " + ", ".join(f"{n} {old.get(n).after:.3f} -> {m.after:.3f} (before {m.before:.3f})" for n, m in new.items()), flush=True)

    def report_of(raw: dict) -> EvalReport:
        """The :class:`EvalReport` of a written report's JSON (any layout; :meth:`EvalReport.from_dict`)."""
        return EvalReport.from_dict(raw)

    rows, skipped = [], []
    for suite_name in args.suites:
        suite = load_suite(suite_name, model=model)
        for kind in args.kinds:
            reports, costs = [], []
            if kind == CARE:
                try:
                    answer_labels(spread_pairs(suite.pairs("build"), recipe(CARE).params.max_pairs))
                except EditError as e:  # CARE's accuracy objective needs labelled pairs
                    skipped.append(f"{kind} on {suite.name} ({e})")
                    continue
            for seed in args.seeds if kind in TRAINED else args.seeds[:1]:
                path = OUT / "reports" / f"{suite.name}.{kind}.seed{seed}.json"
                if args.table_only and not path.exists():
                    continue
                if path.exists():
                    if args.remeasure and not args.table_only:
                        remeasure(path, suite, kind, seed)
                    reports.append(EvalReport.load(path))
                    costs.append(json.loads(path.read_text())["cost"])
                    print(f"reuse {path.name}", flush=True)
                    continue
                edit, build_s, sweep = build(suite, kind, seed)
                report = evaluate(model, edit, suite=suite, baseline_cache=cache_root() / "measurements", seed=seed)
                cost = {"build_seconds": round(build_s, 1), "parameters_changed": edit.n_parameters, "components": [str(c) for c in edit.components]}
                if sweep is not None:
                    cost["layer_sweep"] = sweep
                if kind == CARE:  # ACE of the repaired neurons before/after, unfairness and accuracy on the build pairs
                    cost["care"] = dict(edit.evaluation or {})
                cost["edit_mb"] = round(sum(x.numel() * x.element_size() for x in edit.tensors.values()) / 2**20, 1)
                atomic_write_text(path, json.dumps({"cost": cost, "report": report.as_dict()}, indent=1) + "\n")
                if seed == args.seeds[0] and cost["edit_mb"] <= MAX_SAVED_MB:
                    save_edit(edit.with_evaluation({**(edit.evaluation or {}), **report.flat()}), OUT / "edits" / f"{suite.name}.{kind}.json", packages=package_versions())
                del edit  # full_ft's deltas: free before the next seed trains
                reports.append(report)
                costs.append(cost)
                p = report.primary
                print(f"{suite.name} {kind} seed {seed}: harm {p.before:.3f} → {p.after:.3f} ({report.harm_reduction:+.1%}, p={p.p_value:.1e}), "
                      f"ppl {report.perplexity_change:+.2%}, built in {build_s:.0f} s", flush=True)
            if not reports:
                continue
            table = seed_table(reports)
            row = {
                "suite": suite.name,
                "kind": kind,
                "seeds": len(reports),
                "components": ", ".join(costs[0]["components"][:3]) + (f" +{len(costs[0]['components']) - 3}" if len(costs[0]["components"]) > 3 else ""),
                "build_seconds_mean": sum(c["build_seconds"] for c in costs) / len(costs),
                "parameters_changed": costs[0]["parameters_changed"],
                "baseline": kind in BASELINES,
                "edit_mb": costs[0].get("edit_mb", 0.0),
                "meets_target": [r.meets_target for r in reports],
                "capability_failures": sorted({f for r in reports for f in r.capability_failures}),
                "p_max": max(r.primary.p_value for r in reports),
                "measures": table.to_dict(orient="records"),
            }
            rows.append(row)
    atomic_write_text(OUT / "headline.json", json.dumps(rows, indent=1) + "\n")

    def m(row: dict, name: str) -> dict:
        return next(x for x in row["measures"] if x["name"] == name)

    lines = [
        "| behaviour | kind | seeds | harm (eval split) before → after | harm reduced | max p | second harm measure before → after "
        "| perplexity change | KL neutral (nats/token) | MC / factual QA / classification accuracy change (points) | build time (s) "
        "| parameters changed | target met | failing capability measures |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        h = m(r, f"bias_gap.{r['suite']}")
        n = r["seeds"]
        ppl, kl = m(r, "perplexity"), m(r, "kl_neutral")
        acc = " / ".join(_fmt(100 * m(r, a)["change_mean"], 100 * m(r, a)["change_std"], "+.1f", n) for a in ACCURACY)
        met = sum(r["meets_target"])
        s2 = m(r, SECONDARY.get(r["suite"], "stereotype_preference"))
        lines.append(
            f"| {r['suite']} | {r['kind']}{' (baseline)' if r.get('baseline') else ''} | {n} | {h['before_mean']:.3f} → {_fmt(h['after_mean'], h['after_std'], '.3f', n)} "
            f"| {_fmt(h['reduction_mean'], h['reduction_std'], '+.1%', n)} | {r['p_max']:.1e} "
            f"| {s2['name']}: {s2['before_mean']:.3f} → {_fmt(s2['after_mean'], s2['after_std'], '.3f', n)} "
            f"| {_fmt(ppl['change_mean'], ppl['change_std'], '+.2%', n)} | {_fmt(kl['after_mean'], kl['after_std'], '.3f', n)} "
            f"| {acc} | {r['build_seconds_mean']:.0f} | {r['parameters_changed']} | {met}/{n} | {', '.join(r['capability_failures']) or '—'} |"
        )
    if any(r.get("baseline") for r in rows):
        lines += ["", "Baselines (issue 22): trained with the same harm + KL preservation loss, step budget, early stopping and seeds as the "
                  "surgical trained kinds, on every block's q, k, v, o, gate, in and out weights (embeddings, unembedding, norms and biases "
                  f"frozen); Adam lr {args.full_ft_lr or FULL_FT_LR:g} for full_ft and {args.lora_all_lr or LORA_ALL_LR:g} for lora_all "
                  f"(the surgical kinds: {TrainConfig.lr:g}; lora_all at {TrainConfig.lr:g} is in headline/superseded-lora-all-lr1e-2/). "
                  "Parameters changed counts trained numbers: for lora_all, r·(in + out) per matrix, though W + αBA differs from W in every entry."]
    if skipped:
        lines.append("Not run: " + "; ".join(skipped) + ".")
    unsaved = sorted({f"{r['kind']} ({r['edit_mb']:.0f} MB)" for r in rows if r.get("edit_mb", 0) > MAX_SAVED_MB})
    if unsaved:
        lines.append(f"Edits over {MAX_SAVED_MB} MB are not saved under edits/ (reports only): {', '.join(unsaved)}.")
    atomic_write_text(OUT / "headline.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
