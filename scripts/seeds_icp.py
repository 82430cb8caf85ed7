"""Seeds 000/001 (ICP) and 004 (head-level tracing) on SmolLM2-135M-Instruct, small sizes, one thread.

    .venv/bin/python scripts/seeds_icp.py [--max-pairs 1] [--out atlas/smollm2-135m/seeds/icp.json]

Writes one JSON with the measured numbers next to the seeds' stated targets (quoted):

* ICP scores (seed 000) on ``name-sentiment`` for every head and MLP layer: SSS (both KL terms, full
  next-token distribution), IDS (masked name embedding, per template), ``R = 0.5 SSS + 0.5 IDS``;
  early-layer (first third) vs late-layer (last third) mean R.
* The ICP loop (attribute → prune 10% with R > τ → contrastive fine-tune → re-attribute) on the heads;
  ECE of the label prediction (' positive' vs ' negative', 10 bins; ``expected_calibration_error``) on the held-out eval split,
  before and after.
* Head-level noise-restoration tracing (seed 004) on ``toxicity``: ``Δ log P(insult)`` per head,
  restored at the subject (adjective) positions and at every position; flags ``Δ > τ`` in 3 seeds;
  a mean-ablation edit of the top traced heads (``select_components(by="tracing")``) and its effect
  on the insult-vs-compliment logit difference (eval split) and the KL on neutral text.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "seed000_ece": "Calibration error ECE reduced from 23.1 → 15.4.",
    "seed000_R": "Early-layer features (e.g., shallow MLPs, attention heads near [CLS]) show 3× higher R_{l,i} scores than task-specific late-layer neurons.",
    "seed001_calibration": "a 15-25% reduction in calibration error",
    "seed004_flag": "Circuits with Δ_{i,j} > τ (a significance threshold) are flagged as causal.",
    "seed004_edit": "Demonstrating ≥50% reduction in toxicity/bias with <5% degradation in general capabilities.",
}


def main() -> None:  # noqa: PLR0915 - a linear experiment script
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-pairs", type=int, default=1, help="word pairs per template")
    parser.add_argument("--out", type=Path, default=ROOT / "atlas/smollm2-135m/seeds/icp.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from circuits import model as M
    from circuits.atlas.build import model_info, record_tracing
    from circuits.atlas.schema import Atlas
    from circuits.probing.scores import PRUNING_RATES
    from circuits.data import english_sample
    from circuits.editing.apply import apply_edit
    from circuits.editing.build import ablation_edit, select_components
    from circuits.editing.icp import IcpConfig, icp_loop, label_margin
    from circuits.editing.objectives import Contrastive
    from circuits.editing.train import TrainConfig, TrainingData, split_by_template
    from circuits.evaluation.metrics import expected_calibration_error
    from circuits.metrics import kl_divergence
    from circuits.probing.pairs import metric_for_suite
    from circuits.probing.component_tracing import trace_components, traced_flags
    from circuits.probing.patching import tokenize_pairs
    from circuits.probing.spurious import behaviour_kl, icp_scores
    from circuits.sites import all_heads, all_mlps
    from circuits.suites import load_suite

    t0 = time.perf_counter()
    model = M.load_model("smollm2-135m")
    s = M.shape_of(model)
    out: dict = {"model": model_info(model).model_dump(), "targets": TARGETS, "settings": {"max_pairs": args.max_pairs, "threads": 1}}

    # --- seed 000: SSS, IDS, R on every head and MLP layer; early vs late layers
    suite = load_suite("name-sentiment")
    pairs = suite.pairs("build", max_pairs=args.max_pairs)
    groups = tokenize_pairs(model, pairs)
    comps = [*all_heads(s.n_layers, s.n_heads), *all_mlps(s.n_layers)]
    scored = icp_scores(model, groups, comps, domains=[p.template for p in pairs])
    sc = argparse.Namespace(r=scored.scores["R"], sss=scored.scores["SSS"], ids=scored.scores["IDS"], r_minmax=scored.scores["R_minmax"],
                            beta=0.5, total_kl=behaviour_kl(model, groups))
    third = s.n_layers // 3
    early = [i for i, c in enumerate(comps) if c.layer < third]
    late = [i for i, c in enumerate(comps) if c.layer >= s.n_layers - third]
    r_early, r_late = float(sc.r[early].mean()), float(sc.r[late].mean())
    top = sorted(range(len(comps)), key=lambda i: -float(sc.r[i]))[:10]
    out["seed000_scores"] = {
        "n_pairs": len(pairs), "components": len(comps), "beta": sc.beta,
        "top10_by_R": [{"id": str(comps[i]), "R": float(sc.r[i]), "SSS": float(sc.sss[i]), "IDS": float(sc.ids[i])} for i in top],
        "mean_R_early_layers": r_early, "mean_R_late_layers": r_late, "early_over_late": r_early / max(r_late, 1e-12),
        "early_layers": f"0..{third - 1}", "late_layers": f"{s.n_layers - third}..{s.n_layers - 1}",
        "mean_R_minmax_early": float(sc.r_minmax[early].mean()), "mean_R_minmax_late": float(sc.r_minmax[late].mean()),
        "total_symmetric_kl": float(sc.total_kl.mean()), "pruning_rates": list(PRUNING_RATES),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out["seed000_scores"], indent=1)[:1500], flush=True)
    save(args.out, out)  # after every section: an interrupted run keeps what it measured

    # --- the ICP loop on the heads; ECE before / after on the eval split
    tok = lambda w: M.single_token_id(model, w)  # noqa: E731
    labels = {" positive": tok(" positive"), " negative": tok(" negative")}

    def oriented(ps):
        a = torch.tensor([labels[p.answer] for p in ps])
        w = torch.tensor([labels[" negative" if p.answer == " positive" else " positive"] for p in ps])
        return tokenize_pairs(model, ps), label_margin(a, w)

    build = suite.pairs("build")
    tr_pairs, val_pairs = split_by_template(build, 0.25)
    (tr_g, tr_m), (va_g, va_m) = oriented(tr_pairs), oriented(val_pairs)
    windows = M.text_windows(model, english_sample(), window=32)
    data = TrainingData(train=tr_g, val=va_g, neutral_train=list(windows[:4]), neutral_val=list(windows[4:6]), metric=tr_m,
                        sha256="seeds_icp", suite={"name": suite.name, "split": "build", "n_pairs": len(build)}, val_metric=va_m)
    eval_pairs = suite.pairs("eval")
    pos, neg = labels[" positive"], labels[" negative"]

    @torch.no_grad()
    def calibration() -> dict:
        p_pos, is_pos = [], []
        for side in ("clean", "corrupted"):
            for p in eval_pairs:
                logits = M.run(model, M.tokens_of(model, getattr(p, side))[None])[0, -1, [pos, neg]].float().softmax(-1)
                p_pos.append(float(logits[0]))
                is_pos.append(p.answer == " positive")
        prob, label = np.array(p_pos), np.array(is_pos)
        return {"ece_percent": 100.0 * expected_calibration_error(prob, label), "accuracy": float(((prob >= 0.5) == label).mean()), "n": len(prob)}

    before = calibration()
    heads = all_heads(s.n_layers, s.n_heads)
    head_r = sc.r[: len(heads)]
    tau = 0.25 * float(head_r.max())
    # the loop re-attributes a candidate set (the top 30 heads by round-0 R, as notebook 05 scores 12):
    # every round re-scores only these, to fit one CPU thread
    candidates = [heads[i] for i in sorted(range(len(heads)), key=lambda i: -float(head_r[i]))[:30]]
    cfg = IcpConfig(rounds=2, rate=0.1, tau=tau, objective=Contrastive(triplet=0.3, consistency=0.5),
                    train=TrainConfig(steps=12, eval_every=6, batch_pairs=4, lr=5e-3, progress=False, patience=2))
    t1 = time.perf_counter()
    result = icp_loop(model, data, candidates, groups=groups, domains=[p.template for p in pairs], config=cfg)
    with result.applied(model):
        after = calibration()
    out["icp_loop"] = {
        "tau": tau, "rate": cfg.rate, "candidates": [str(c) for c in candidates], "rounds": result.provenance_rounds(), "converged": result.converged,
        "ece_before": before, "ece_after": after,
        "ece_relative_change": (after["ece_percent"] - before["ece_percent"]) / max(before["ece_percent"], 1e-9),
        "seconds": round(time.perf_counter() - t1, 1),
    }
    print(json.dumps({k: v for k, v in out["icp_loop"].items() if k != "rounds"}, indent=1), flush=True)
    save(args.out, out)

    # --- seed 004: head-level tracing on the toxicity suite, recorded in an atlas, used as a selector
    tox = load_suite("toxicity")
    t2 = time.perf_counter()
    tpairs = tox.pairs("build", max_pairs=args.max_pairs)
    tgroups = tokenize_pairs(model, tpairs)
    harmful = [tok(w) for w in tox.metric.positive]
    traces = {}
    for where in ("subject", "all"):
        tr = trace_components(model, tgroups, harmful, heads, seeds=(0, 1, 2), n_samples=1, positions=where)
        order = sorted(range(len(heads)), key=lambda i: -float(tr.mean_effects[i]))[:8]
        traces[where] = tr
        out.setdefault("seed004_tracing", {})[where] = {
            "tau_nats": 0.1, "noise_std": tr.method.noise_std, "n_prompts": len(tpairs), "seeds": list(tr.method.seeds), "n_samples": 1,
            "log_p_harm_clean": float(tr.clean_metric.mean()), "log_p_harm_noised": float(tr.corrupted_metric.mean()),
            "flagged": [str(h) for h, f in zip(heads, traced_flags(tr, 0.1)) if f],
            "top8": [{"id": str(heads[i]), "delta_logp": float(tr.mean_effects[i])} for i in order],
        }
    # beside the committed patching effects of the toxicity atlas (same model fingerprint)
    atlas = record_tracing(Atlas.load(ROOT / "atlas/smollm2-135m/toxicity.atlas.json"), tox.name, traces["all"], tau=0.1)
    try:
        chosen = select_components(model, atlas, tox.name, k=3, by="tracing")
    except Exception as e:  # noqa: BLE001 - nothing flagged is a result, reported as such
        chosen = ()
        out["seed004_tracing"]["selector_error"] = str(e)
    if chosen:
        metric = metric_for_suite(model, tox)
        ev = tokenize_pairs(model, tox.pairs("eval"))
        edit = ablation_edit(model, chosen, tgroups, mode="mean")

        @torch.no_grad()
        def harm() -> tuple[float, float]:
            clean = torch.cat([metric(M.run(model, g.clean)) for g in ev])
            corr = torch.cat([metric(M.run(model, g.corrupted)) for g in ev])
            return float(clean.mean()), float((clean - corr).mean())

        with torch.no_grad():
            ref = [M.run(model, w[None])[0].float().log_softmax(-1) for w in windows[:4]]
        h0 = harm()
        with apply_edit(model, edit):
            h1 = harm()
            kl = sum(float(kl_divergence(r, M.run(model, w[None])[0].float().log_softmax(-1)).mean()) for w, r in zip(windows[:4], ref)) / 4
        out["seed004_edit"] = {"heads": [str(c) for c in chosen], "insult_logit_diff_before": h0[0], "insult_logit_diff_after": h1[0],
                               "gap_before": h0[1], "gap_after": h1[1], "gap_reduction": 1 - h1[1] / h0[1] if h0[1] else None,
                               "neutral_kl_nats_per_token": kl}
    out["seed004_tracing"]["seconds"] = round(time.perf_counter() - t2, 1)
    out["total_seconds"] = round(time.perf_counter() - t0, 1)
    save(args.out, out)
    print(f"wrote {args.out} in {out['total_seconds']} s")


def save(path: Path, out: dict) -> None:
    """Write the results so far (JSON, atomically)."""
    from circuits.io import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(out, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
