"""Generation-based harm of the unedited model: the toxic-continuation rate over the identity prompts.

    .venv/bin/python scripts/toxicity_baseline.py [--per-group 2] [--samples 10] [--max-new-tokens 20] [--seed 0]

Takes the first ``--per-group`` frames of each of the 20 identity groups of
``circuits/data/identity_prompts.json`` (every group shares the frames, so groups stay comparable),
samples ``--samples`` continuations of ``--max-new-tokens`` tokens per prompt from SmolLM2-135M-Instruct
(temperature 1, full distribution, prompt ``i`` seeded with ``seed + i``), scores them with
alt-profanity-check (``pip install 'circuit-atlas[harm]'``) and reports the toxic-continuation rate
(RealToxicityPrompts protocol, Gehman et al. 2020) with its 95% bootstrap CI over prompts, per group
and overall. Runs on one CPU thread. Writes ``atlas/smollm2-135m/toxicity_generation.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import sys
from collections import defaultdict
from importlib import metadata, resources
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "atlas/smollm2-135m/toxicity_generation.json"
SCHEMA_VERSION = 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--per-group", type=int, default=2, help="frames per identity group (6 = all 120 prompts)")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("-o", "--out", type=Path, default=OUT)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    from circuits import data as D
    from circuits import stats
    from circuits.atlas.build import package_versions
    from circuits.evaluation.toxicity import toxic_continuation_rate
    from circuits.io import atomic_write_text
    from circuits.model import fingerprint, load_model, quiet_libraries

    quiet_libraries()
    items, seen = [], defaultdict(int)
    for p in D.identity_prompts().items:  # file order: each group's frames in frame order
        if seen[p.group] < args.per_group:
            items.append(p)
            seen[p.group] += 1
    lm = load_model(args.model)
    r = toxic_continuation_rate(lm, [p.prompt for p in items], n_samples=args.samples, max_new_tokens=args.max_new_tokens, seed=args.seed)

    per_group = {}
    for key in ("group", "bias_type"):
        idx: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(items):
            idx[getattr(p, key)].append(i)
        per_group[key] = {
            g: {"rate": float(r.rates[ix].mean()), "ci": list(stats.bootstrap_ci(r.rates[ix], seed=args.seed)), "n_prompts": len(ix)}
            for g, ix in idx.items()
        }
    data_text = resources.files("circuits.data").joinpath("identity_prompts.json").read_bytes()
    content = {
        "schema_version": SCHEMA_VERSION,
        "method": "toxic-continuation rate (RealToxicityPrompts protocol, Gehman et al. 2020): sampled continuations "
                  "scored by alt-profanity-check; toxic if P >= threshold; mean of per-prompt rates, 95% percentile "
                  "bootstrap CI over prompts (circuits.stats.bootstrap_ci)",
        "command": " ".join([".venv/bin/python", "scripts/toxicity_baseline.py", *sys.argv[1:]]),
        "provenance": {
            "model": args.model, "model_fingerprint": fingerprint(lm),
            "packages": {**package_versions(), "alt-profanity-check": metadata.version("alt-profanity-check"),
                         "scikit-learn": metadata.version("scikit-learn")},
            "python": platform.python_version(), "threads": args.threads,
            "data": "circuits/data/identity_prompts.json", "data_sha256": hashlib.sha256(data_text).hexdigest(),
            "prompts_per_group": args.per_group, "seed": args.seed, "sampling": "temperature 1.0, top_p 1.0, prompt i seeded with seed + i",
        },
        "result": r.as_dict(with_samples=True),
        "per_group": per_group,
        "toxic_prompts": int((r.rates > 0).sum()),
    }
    atomic_write_text(args.out, json.dumps(content, indent=2, ensure_ascii=False) + "\n")
    print(f"toxic-continuation rate {r.mean:.4f} [95% CI {r.ci_low:.4f}, {r.ci_high:.4f}] over {len(items)} prompts x "
          f"{args.samples} samples x {args.max_new_tokens} tokens ({r.seconds:.0f} s); expected max toxicity "
          f"{r.expected_max_toxicity:.4f}; written to {args.out}")
    worst = np.argsort(-r.scores.reshape(-1))[:3]
    for k in worst:
        i, j = divmod(int(k), args.samples)
        print(f"  p={r.scores[i, j]:.2f}: {items[i].prompt!r} -> {r.continuations[i][j]!r}")


if __name__ == "__main__":
    main()
