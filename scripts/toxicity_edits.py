"""Generation-based harm before and after each saved headline edit (#22): toxic-continuation rate, paired over prompts.

    .venv/bin/python scripts/toxicity_edits.py [--suite identity-harm-religion] [--per-group 2] [--samples 10]

For every seed-0 edit the headline run saved for ``--suite`` (``atlas/smollm2-135m/headline/edits/``),
samples continuations of the identity prompts (the same prompts, seeds and settings as
``scripts/toxicity_baseline.py``: the first ``--per-group`` frames of each of the 20 groups, temperature 1,
prompt ``i`` seeded with ``seed + i``) with the edit applied, scores them with alt-profanity-check, and
compares the toxic-continuation rate with the unedited model's (paired over prompts: mean change, its
bootstrap CI and a paired test; :func:`circuits.evaluation.toxicity.toxicity_change`).
Writes ``atlas/smollm2-135m/headline/toxicity.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = ROOT / "atlas/smollm2-135m/headline"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default="identity-harm-religion")
    ap.add_argument("--per-group", type=int, default=2)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from circuits import data as D
    from circuits.editing import load_edit
    from circuits.evaluation.toxicity import toxic_continuation_rate, toxicity_change
    from circuits.io import atomic_write_text
    from circuits.model import load_model, quiet_libraries

    quiet_libraries()
    torch.set_grad_enabled(False)
    prompts, seen = [], defaultdict(int)
    for p in D.identity_prompts().items:
        if seen[p.group] < args.per_group:
            prompts.append(p.prompt)
            seen[p.group] += 1
    model = load_model("smollm2-135m")
    settings = {"n_samples": args.samples, "max_new_tokens": args.max_new_tokens, "seed": args.seed}
    before = toxic_continuation_rate(model, prompts, **settings)
    rows = []
    for path in sorted((HEADLINE / "edits").glob(f"{args.suite}.*.json")):
        edit = load_edit(path)
        change = toxicity_change(model, [edit], prompts, baseline=before, **settings)
        t = change.test
        rows.append({
            "edit": path.name, "kind": path.name.split(".")[1], "edit_kind": edit.kind, "before": before.mean, "after": change.after.mean,
            "after_ci": [change.after.ci_low, change.after.ci_high], "change": t.change, "change_ci": [t.ci_low, t.ci_high],
            "p_value": t.p_value, "expected_max_toxicity_before": before.expected_max_toxicity,
            "expected_max_toxicity_after": change.after.expected_max_toxicity, "seconds": round(change.after.seconds, 1),
        })
        print(f"{path.name}: {before.mean:.4f} -> {change.after.mean:.4f} (change {t.change:+.4f}, p={t.p_value:.2f})", flush=True)
    out = {
        "suite": args.suite, "prompts": len(prompts), "settings": settings, "scorer": "alt-profanity-check, toxic if P >= 0.5",
        "before": {"rate": before.mean, "ci": [before.ci_low, before.ci_high], "expected_max_toxicity": before.expected_max_toxicity},
        "edits": rows, "command": "python scripts/toxicity_edits.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
    }
    atomic_write_text(HEADLINE / "toxicity.json", json.dumps(out, indent=1) + "\n")
    lines = ["| edit | toxic-continuation rate before → after (95% CI) | change (95% CI) | paired p | expected max toxicity before → after |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['before']:.4f} → {r['after']:.4f} ({r['after_ci'][0]:.4f}–{r['after_ci'][1]:.4f}) "
                     f"| {r['change']:+.4f} ({r['change_ci'][0]:+.4f} to {r['change_ci'][1]:+.4f}) | {r['p_value']:.2f} "
                     f"| {r['expected_max_toxicity_before']:.3f} → {r['expected_max_toxicity_after']:.3f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
