"""Edge circuits on SmolLM2-135M (#24): the induction circuit and the gender-bias circuit, recorded and summarised.

    .venv/bin/python scripts/circuits_smollm2.py [--pairs 4] [--ig-steps 3] [--target 0.8]

* **Induction** (repeated random tokens, :func:`circuits.suites.tasks.induction`): EAP-IG scores of all
  edges, the smallest top-n circuit whose faithfulness reaches ``--target`` (rest ablated to the corrupted
  run), and the key-composition edges among the top edges, each with its sender's previous-token
  attention and its receiver's induction attention measured on the clean run (Olsson et al. 2022's
  two-head mechanism: a previous-token head writes "the token before me was X", the induction head's key
  reads it). Written to ``atlas/smollm2-135m/tasks/induction.circuit.json`` (a circuit graph, the
  schema of ``circuits circuit``).
* **Gender bias** (the shipped ``gender-occupation`` suite, build split): the same circuit search; the
  circuit is added to ``gender-occupation.atlas.json`` and to the merged ``smollm2-135m.atlas.json``
  (drawn by ``circuits report``), and the strongest upstream inputs (q/k/v edges, kept or not) of the
  atlas's top heads are listed.

Both write their numbers to ``atlas/smollm2-135m/circuits.json`` (README quotes it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "atlas" / "smollm2-135m"


def _attention_scores(model, tokens: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[layer, head]`` mean previous-token attention and mean induction attention over the second copy."""
    from circuits import model as M
    from circuits.sites import HeadRef

    shape = M.shape_of(model)
    names = [HeadRef(layer, 0, "pattern").hook_name for layer in range(shape.n_layers)]
    _, cache = M.run_with_cache(model, tokens, names)
    prev, ind = torch.zeros(shape.n_layers, shape.n_heads), torch.zeros(shape.n_layers, shape.n_heads)
    # tokens: [BOS, a_1..a_block, a_1..a_{block-1}]; position q in the second copy (q = block + j, j >= 1)
    # holds a_j, whose earlier occurrence is at position j; the induction target is the token after it, j + 1.
    qs = torch.arange(block + 1, tokens.shape[1])
    for layer, name in enumerate(names):
        pat = cache[name].float()  # [batch, head, q, k]
        prev[layer] = pat[:, :, qs, qs - 1].mean((0, 2))
        ind[layer] = pat[:, :, qs, qs - block + 1].mean((0, 2))
    return prev, ind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4, help="induction sequences / gender pairs per template")
    parser.add_argument("--block", type=int, default=20, help="random tokens per induction copy")
    parser.add_argument("--ig-steps", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.8, help="faithfulness the circuit must reach")
    parser.add_argument("--only", nargs="*", default=["induction", "gender"])
    args = parser.parse_args()

    from circuits.atlas.circuit import circuit_from_scores
    from circuits.atlas.schema import Atlas
    from circuits.io import atomic_write_text
    from circuits.model import load_model
    from circuits.probing.eap import edge_attribution
    from circuits.probing.pairs import prepare
    from circuits.sites import HeadRef
    from circuits.suites import load_suite
    from circuits.probing.pairs import induction

    model = load_model("smollm2-135m")
    findings_path = OUT / "circuits.json"
    findings: dict[str, object] = json.loads(findings_path.read_text()) if findings_path.exists() else {}

    def search(groups, metric):
        t0 = time.perf_counter()
        scores = edge_attribution(model, groups, metric, ig_steps=args.ig_steps, batch_size=2, progress=False)
        t_scores = time.perf_counter() - t0
        graph = circuit_from_scores(model, groups, metric, scores, target=args.target)
        info = {
            "edges_total": scores.graph.n_edges, "eap_ig_steps": args.ig_steps, "eap_ig_seconds": round(t_scores, 1),
            "search_seconds": round(time.perf_counter() - t0 - t_scores, 1), "circuit_edges": len(graph.edges),
            "faithfulness": round(graph.faithfulness, 4), "completeness": round(graph.completeness, 4),
            "curve": [(n, round(f, 4)) for n, f in graph.curve], "top_edges": [(str(e), round(v, 4)) for e, v in scores.top(12)],
        }
        return scores, graph, info

    if "induction" in args.only:
        prepared = induction(model, n=args.pairs, block=args.block, seed=0)
        scores, graph, info = search(prepared.groups, prepared.metric)
        atomic_write_text(OUT / "tasks" / "induction.circuit.json", graph.model_dump_json(indent=1))
        prev, ind = _attention_scores(model, prepared.groups[0].clean, args.block)
        kept = {f"{e.sender}->{e.receiver}" for e in graph.edges}
        k_edges = [(e, v) for e, v in scores.top(2000) if isinstance(e.receiver, HeadRef) and e.receiver.act == "k" and isinstance(e.sender, HeadRef)][:10]
        info["k_composition"] = [
            {"edge": str(e), "score": round(v, 4), "in_circuit": str(e) in kept,
             "sender_prev_token_attention": round(float(prev[e.sender.layer, e.sender.head]), 3),
             "receiver_induction_attention": round(max(float(ind[e.receiver.layer, h]) for h in _query_heads(model, e.receiver)), 3)}
            for e, v in k_edges
        ]
        flat = [(f"L{layer}H{h}", float(prev[layer, h]), float(ind[layer, h])) for layer in range(prev.shape[0]) for h in range(prev.shape[1])]
        info["previous_token_heads"] = [(n, round(p, 3)) for n, p, _ in sorted(flat, key=lambda t: -t[1])[:5]]
        info["induction_heads"] = [(n, round(i, 3)) for n, _, i in sorted(flat, key=lambda t: -t[2])[:5]]
        info["settings"] = {"sequences": args.pairs, "block": args.block}
        findings["induction"] = info
        print("induction", json.dumps(info, indent=1), flush=True)
        atomic_write_text(findings_path, json.dumps(findings, indent=2) + "\n")

    if "gender" in args.only:
        suite = load_suite("gender-occupation", model=model)
        prepared = prepare(model, suite.pairs("build", max_pairs=args.pairs), suite.metric)
        scores, graph, info = search(prepared.groups, prepared.metric)
        for path in (OUT / "gender-occupation.atlas.json", OUT / "smollm2-135m.atlas.json"):
            atlas = Atlas.load(path)
            atlas.model_copy(update={"behaviours": [b.model_copy(update={"circuit": graph}) if b.name == suite.name else b for b in atlas.behaviours]}).save(path)
        top_heads = [c.id for c in Atlas.load(OUT / "gender-occupation.atlas.json").behaviour(suite.name).top(3, kind="head")]
        kept = {f"{e.sender}->{e.receiver}" for e in graph.edges}
        info["upstream_of_top_heads"] = {
            h: [(str(e), round(v, 4), str(e) in kept) for e, v in scores.top(len(scores.components)) if str(e.receiver).split(".")[0] == h][:8]
            for h in top_heads
        }
        info["settings"] = {"pairs_per_template": args.pairs, "pairs": prepared.n_pairs}
        findings["gender-occupation"] = info
        print("gender", json.dumps(info, indent=1), flush=True)
        atomic_write_text(findings_path, json.dumps(findings, indent=2) + "\n")


def _query_heads(model, receiver) -> list[int]:
    """Query heads that read a key/value receiver (its GQA group)."""
    from circuits import model as M

    shape = M.shape_of(model)
    group = shape.n_heads // shape.n_kv_heads
    return list(range(receiver.head, receiver.head + group))


if __name__ == "__main__":
    main()
