"""Edge attribution speed and accuracy against exact edge patching, measured in one run (ratios, not times).

For one model and one batch of clean/corrupted pairs this times

* **EAP** (``edge_attribution``, 1 step) and **EAP-IG** (5 steps) over *every* edge, and
* **exact edge patching** (``edge_patching``, the ground truth: one patched forward per edge, packed
  ``--edges-per-pass`` to a forward) over a random sample of edges, extrapolated per edge, and
* a **naive per-edge hook loop**: the same exact patch, one edge per forward (``edges_per_pass=1``),

and reports the per-edge cost ratios plus the agreement of EAP / EAP-IG with the exact effects on the
sample (Pearson, Spearman, top-k overlap). Usage::

    .venv/bin/python benchmarks/edges.py                    # planted induction model (seconds)
    .venv/bin/python benchmarks/edges.py --model tiny-llama # a tiny random Llama (HF bridge path)
    .venv/bin/python benchmarks/edges.py --model smollm2-135m --sample 64 --pairs 4
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from scipy.stats import pearsonr, spearmanr

from circuits.probing.eap import edge_attribution
from circuits.probing.edge_patching import edge_patching, graph_of


def _setup(name: str, n_pairs: int):  # noqa: ANN202
    if name == "planted-induction":
        from circuits.planted import induction_pairs, load_planted

        group, metric = induction_pairs(n_pairs, seed=3)
        return load_planted("induction"), [group], metric
    from circuits.probing.pairs import induction

    if name == "tiny-llama":
        from circuits.model.tiny import tiny_hf_model

        model = tiny_hf_model("llama", n_layers=4)
    else:
        from circuits.model import load_model

        model = load_model(name)
    prepared = induction(model, n=n_pairs, block=8, seed=0)
    return model, prepared.groups, prepared.metric


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="planted-induction", help="planted-induction, tiny-llama, or a model name")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--sample", type=int, default=48, help="edges patched exactly")
    parser.add_argument("--edges-per-pass", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, groups, metric = _setup(args.model, args.pairs)
    graph = graph_of(model)
    edges = graph.edges()
    g = torch.Generator().manual_seed(args.seed)
    sample = [edges[i] for i in torch.randperm(len(edges), generator=g)[: args.sample].tolist()]

    def timed(fn):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start

    eap, t_eap = timed(lambda: edge_attribution(model, groups, metric, graph=graph, progress=False))
    ig, t_ig = timed(lambda: edge_attribution(model, groups, metric, graph=graph, ig_steps=5, progress=False))
    exact, t_exact = timed(lambda: edge_patching(model, groups, metric, graph=graph, edges=sample, edges_per_pass=args.edges_per_pass, progress=False))
    few = sample[: max(4, len(sample) // 4)]
    _, t_loop = timed(lambda: edge_patching(model, groups, metric, graph=graph, edges=few, edges_per_pass=1, progress=False))
    per_edge_exact, per_edge_loop = t_exact / len(sample), t_loop / len(few)
    rows = [eap.edges.index(e) for e in sample]
    truth = exact.mean_effects
    k = max(1, len(sample) // 8)
    top_truth = set(truth.abs().argsort(descending=True)[:k].tolist())
    result = {
        "model": args.model,
        "pairs": sum(len(x.indices) for x in groups),
        "edges": graph.n_edges,
        "sample": len(sample),
        "threads": args.threads,
        "exact_all_edges_over_eap": per_edge_exact * graph.n_edges / t_eap,
        "hook_loop_all_edges_over_eap": per_edge_loop * graph.n_edges / t_eap,
        "exact_all_edges_over_eap_ig5": per_edge_exact * graph.n_edges / t_ig,
        "eap_ig5_over_eap": t_ig / t_eap,
    }
    for name, est in (("eap", eap), ("eap_ig5", ig)):
        v = est.mean_effects[rows]
        result[f"{name}_pearson"] = float(pearsonr(truth, v)[0])
        result[f"{name}_spearman"] = float(spearmanr(truth, v)[0])
        result[f"{name}_top{k}_overlap"] = len(top_truth & set(v.abs().argsort(descending=True)[:k].tolist())) / k
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
