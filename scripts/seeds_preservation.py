"""Seed 004's low-rank preservation term as written (‖W′x − Wx‖₂ on neutral activations) vs the KL term, on SmolLM2.

    .venv/bin/python scripts/seeds_preservation.py

Builds the headline's ``low_rank`` edit of ``identity-harm-religion`` (k = 3, rank 4, 40 steps, seed 0)
with ``TrainConfig(preservation_kind="weights")`` and evaluates it exactly as the headline does
(:func:`circuits.evaluation.run.evaluate`, eval split, every measure, the cached unedited baseline); the
KL-term edit is the headline's own seed-0 report (``headline/reports/identity-harm-religion.low_rank.seed0.json``).
Writes ``atlas/smollm2-135m/seeds/preservation.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "atlas/smollm2-135m/seeds/preservation.json"
SUITE = "identity-harm-religion"
MEASURES = ("perplexity", "kl_neutral", "multiple_choice_accuracy", "factual_qa_accuracy", "classification_accuracy", "stereotype_preference")


def summary(report: dict) -> dict:
    by = {m["name"]: m for m in report["measures"]}
    return {"harm_reduction": report["harm_reduction"], "meets_target": report["meets_target"], "capability_failures": report["capability_failures"],
            **{n: {"before": by[n]["before"], "after": by[n]["after"], "change": by[n]["change"], "p_value": by[n]["p_value"]} for n in MEASURES}}


def main() -> None:
    from circuits.atlas.schema import Atlas
    from circuits.editing.recipes import build_edit, recipe
    from circuits.evaluation.run import evaluate
    from circuits.io import atomic_write_text
    from circuits.model import cache_root, load_model
    from circuits.suites import load_suite

    model = load_model("smollm2-135m")
    atlas = Atlas.load(ROOT / "atlas/smollm2-135m/smollm2-135m.atlas.json")
    suite = load_suite(SUITE, model=model)
    t0 = time.perf_counter()
    r = recipe("low_rank", k=3, rank=4, steps=40, seed=0, progress=False, preservation_kind="weights")
    edit = build_edit(model, atlas, suite, r)
    build_s = time.perf_counter() - t0
    weights = evaluate(model, edit, suite=suite, baseline_cache=cache_root() / "measurements", seed=0).as_dict()
    kl = json.loads((ROOT / f"atlas/smollm2-135m/headline/reports/{SUITE}.low_rank.seed0.json").read_text())["report"]
    out = {"suite": SUITE, "recipe": {"kind": "low_rank", "k": 3, "rank": 4, "steps": 40, "seed": 0},
           "seed004": "the low-rank breaker keeps ‖W′x − Wx‖₂ small on neutral activations (seed 004, surgical interventions)",
           "kl_term": summary(kl), "weights_term": {**summary(weights), "build_seconds": round(build_s, 1), "components": [str(c) for c in edit.components]}}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT, json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    for k in ("kl_term", "weights_term"):
        s = out[k]
        print(f"{k}: harm {s['harm_reduction']:+.1%}, ppl {s['perplexity']['change']:+.2%}, KL {s['kl_neutral']['after']:.4f}, "
              f"MC {100 * s['multiple_choice_accuracy']['change']:+.1f}, QA {100 * s['factual_qa_accuracy']['change']:+.1f}, "
              f"cls {100 * s['classification_accuracy']['change']:+.1f}, met {s['meets_target']}, fails {s['capability_failures']}")


if __name__ == "__main__":
    main()
