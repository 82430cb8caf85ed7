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


def grid(args: argparse.Namespace):  # noqa: ANN201 - a circuits.experiments.Grid
    """The headline grid: this script's configuration of :func:`circuits.experiments.run_grid`."""
    from circuits.editing.baselines import FULL_FT_LR, LORA_ALL_LR
    from circuits.experiments import Grid, Row
    from circuits.model import cache_root

    lr = {"full_ft": args.full_ft_lr or FULL_FT_LR, "lora_all": args.lora_all_lr or LORA_ALL_LR}
    rows = tuple(
        Row(kind, kind, {**RECIPES.get(kind, {}), **({"lr": lr[kind]} if kind in lr else {})}, seeded=kind in TRAINED, baseline=kind in BASELINES)
        for kind in args.kinds
    )
    return Grid(
        suites=tuple(args.suites), rows=rows, seeds=tuple(args.seeds), shared={"steps": args.steps, "progress": False},
        direction_layers=tuple(LAYERS), save_edits_mb=MAX_SAVED_MB, evaluate={"baseline_cache": cache_root() / "measurements"},
    )


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

    from circuits.atlas.schema import Atlas
    from circuits.editing.baselines import FULL_FT_LR, LORA_ALL_LR
    from circuits.editing.train import TrainConfig
    from circuits.experiments import aggregate, remeasure, run_grid
    from circuits.io import atomic_write_text
    from circuits.model import load_model
    from circuits.suites import load_suite

    g = grid(args)
    model = None if args.table_only else load_model("smollm2-135m")
    atlas = Atlas.load(args.atlas)
    suites = lambda name: load_suite(name, model=model)  # noqa: E731

    def say(cell) -> None:  # noqa: ANN001 - a circuits.experiments.Cell
        if cell.reused:
            print(f"reuse {cell.path.name}", flush=True)
            return
        p = cell.report.primary
        print(f"{cell.suite} {cell.row} seed {cell.seed}: harm {p.before:.3f} → {p.after:.3f} ({cell.report.harm_reduction:+.1%}, p={p.p_value:.1e}), "
              f"ppl {cell.report.perplexity_change:+.2%}, built in {cell.cost['build_seconds']:.0f} s", flush=True)

    if args.remeasure and not args.table_only:
        for cell in remeasure(model, atlas, g, OUT, args.remeasure, suites=suites):
            print(f"remeasured {cell.path.name}", flush=True)
    cells, skipped = run_grid(model, atlas, g, OUT, suites=suites, measure=not args.table_only, on_cell=say)
    rows = aggregate(g, cells)
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
