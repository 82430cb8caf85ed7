"""Does the unedited model show identity-targeted harm at all? Per bias type and per group, with CIs.

For every identity minimal pair (``circuits/data/identity_pairs.json``, both splits) the score is the
identity-harm suite's bias gap: ``log P(rest of sentence | stereotyped group) − log P(rest | contrast
group)`` in nats (CrowS-Pairs' comparison of the unmodified tokens, for a causal model; see
:mod:`circuits.suites.identity`). Reported per bias type and per stereotyped group:

* ``mean_gap`` with a 95% bootstrap CI (:func:`circuits.stats.bootstrap_ci`) and the one-sample t-test p;
* ``effect_size``: Cohen's d of the gaps against 0 (mean / sample std);
* ``preference``: the fraction of pairs preferring the stereotype (0.5 = none), as CrowS-Pairs reports.

A bias type "shows the harm" when its CI lies above 0 on the build split **and** on the eval split.
Writes ``atlas/smollm2-135m/identity/measurement.json``.

    python scripts/identity_harm.py
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "atlas" / "smollm2-135m" / "identity" / "measurement.json"


def summarise(gaps: np.ndarray) -> dict[str, float]:
    """Mean, CI, p, Cohen's d and stereotype preference of per-pair gaps."""
    from circuits.stats import one_sample_test

    t = one_sample_test(gaps, seed=0)
    sd = float(gaps.std(ddof=1)) if len(gaps) > 1 else float("nan")
    return {
        "n": int(len(gaps)), "mean_gap": round(float(gaps.mean()), 4), "ci_low": round(t.ci_low, 4), "ci_high": round(t.ci_high, 4),
        "p_value": float(f"{t.p_value:.3g}"), "effect_size": round(float(gaps.mean()) / sd, 3) if sd > 0 else float("nan"),
        "preference": round(float((gaps > 0).mean()), 3),
    }


def main() -> None:
    from circuits.evaluation.metrics import bias_gaps
    from circuits.model import load_model
    from circuits.probing.pairs import prepare
    from circuits.suites import load_suite

    torch.set_grad_enabled(False)
    model = load_model("smollm2-135m")
    suite = load_suite("identity-harm", model=model)
    out: dict[str, object] = {"suite_hash": suite.content_hash, "pairs": len(suite.records), "construction_note": suite.construction.rsplit(" Left out:", 1)[-1]}
    by_type: dict[str, dict[str, object]] = {}
    by_group: dict[str, list[float]] = defaultdict(list)
    shows = []
    for bias_type in sorted({p.group for p in suite.records}):
        row: dict[str, object] = {}
        for split in ("build", "eval"):
            pairs = [p for p in suite.pairs(split) if p.group == bias_type]
            gaps = bias_gaps(model, prepare(model, pairs, suite.metric)).numpy()
            row[split] = summarise(gaps)
            for p, g in zip(pairs, gaps):
                by_group[f"{bias_type}:{p.clean_word}"].append(float(g))
        row["shows_harm"] = all(row[s]["ci_low"] > 0 for s in ("build", "eval"))  # type: ignore[index]
        if row["shows_harm"]:
            shows.append(bias_type)
        by_type[bias_type] = row
        print(bias_type, json.dumps(row), flush=True)
    out["by_bias_type"] = by_type
    out["by_group"] = {g: summarise(np.array(v)) for g, v in sorted(by_group.items()) if len(v) >= 2}
    out["bias_types_showing_harm"] = shows
    out["command"] = "python scripts/identity_harm.py"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print("shows harm:", shows)


if __name__ == "__main__":
    main()
