"""Standard circuit tasks on SmolLM2-135M: atlases for IOI, greater-than and factual recall, and what they show.

Writes ``atlas/smollm2-135m/tasks/{ioi,greater-than,factual-recall}.atlas.json`` (factual recall with
ROME-style causal tracing averaged over known facts, for residual, MLP and attention restorations) and
``atlas/smollm2-135m/tasks/findings.json``, the numbers README compares with the papers:

* IOI (Wang et al. 2023): for the top heads by denoising patching, where the final position attends:
  to the indirect object (name movers copy it), to the second subject token (S-inhibition heads), or
  elsewhere; and the direct logit attribution of each head to ``logit(IO) − logit(S)``.
* Greater-than (Hanna et al. 2023): the share of the total patching effect carried by MLPs vs heads,
  and the layers of the strongest MLPs.
* Factual recall (Meng et al. 2022): where the averaged indirect effect peaks, by token category and layer.

    python scripts/tasks.py [--per-template 4] [--facts 30]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "atlas" / "smollm2-135m" / "tasks"


def ioi_attention(model, suite, heads, n: int = 32) -> dict[str, dict[str, float]]:  # noqa: ANN001
    """Mean attention from the final position to the IO token, the first and the second S token."""
    from circuits import model as M
    from circuits.sites import HeadRef

    pairs = suite.pairs("build")[:n]
    out: dict[str, dict[str, float]] = {}
    tok = M.tokenizer_of(model)
    sums = {str(h): torch.zeros(3) for h in heads}
    for p in pairs:
        ids = M.tokens_of(model, p.clean).tolist()
        io_id = tok.encode(p.answer, add_special_tokens=False)[0]
        s_id = tok.encode(p.wrong_answer, add_special_tokens=False)[0]
        io_pos = ids.index(io_id)
        s_pos = [i for i, t in enumerate(ids) if t == s_id]
        names = sorted({HeadRef(h.layer, 0, "pattern").hook_name for h in heads})
        _, cache = M.run_with_cache(model, torch.tensor([ids]), names)
        for h in heads:
            pat = cache[HeadRef(h.layer, 0, "pattern").hook_name][0, h.head, -1]
            sums[str(h)] += torch.tensor([float(pat[io_pos]), float(pat[s_pos[0]]), float(pat[s_pos[-1]])])
    for h in heads:
        a = sums[str(h)] / len(pairs)
        out[str(h)] = {"to_IO": round(float(a[0]), 3), "to_S1": round(float(a[1]), 3), "to_S2": round(float(a[2]), 3)}
    return out


def head_dla(model, suite, heads, n: int = 32) -> dict[str, float]:  # noqa: ANN001
    """Direct logit attribution of each head's output at the final position to logit(IO) − logit(S), in logits.

    The final RMSNorm's scale is frozen at the clean run's value (TransformerLens's ``apply_ln_to_stack``
    convention): a head's share is ``W_U · (w_norm ⊙ write / rms(final resid))``, so the shares of all
    writers plus the embedding sum to the logit difference.
    """
    from circuits import model as M

    pairs = suite.pairs("build")[:n]
    tok = M.tokenizer_of(model)
    last = f"blocks.{model.shape.n_layers - 1}.hook_resid_post"
    out = {str(h): 0.0 for h in heads}
    for p in pairs:
        ids = M.tokens_of(model, p.clean)[None]
        io = tok.encode(p.answer, add_special_tokens=False)[0]
        s = tok.encode(p.wrong_answer, add_special_tokens=False)[0]
        names = sorted({h.hook_name for h in heads} | {last})
        _, cache = M.run_with_cache(model, ids, names)
        final = cache[last][0, -1]
        rms_final = final.pow(2).mean().sqrt()
        for h in heads:
            w_o = M.read_weight(model, f"blocks.{h.layer}.attn.o.weight")
            d = model.shape.d_head
            write = cache[h.hook_name][0, -1, h.head] @ w_o[:, h.head * d : (h.head + 1) * d].T
            logits = M.logit_lens(model, write[None, None])[0, 0] * (write.pow(2).mean().sqrt() / rms_final)
            out[str(h)] += float(logits[io] - logits[s]) / len(pairs)
    return {k: round(v, 3) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-template", type=int, default=4, help="IOI / greater-than pairs per template or noun")
    parser.add_argument("--facts", type=int, default=30, help="known facts traced (averaged)")
    parser.add_argument("--samples", type=int, default=5, help="noise draws per traced fact")
    parser.add_argument("--out", type=Path, default=OUT, help="output directory")
    parser.add_argument("--tasks", nargs="*", default=["ioi", "greater-than", "factual-recall"], help="tasks to run (findings of others are kept)")
    args = parser.parse_args()
    out_dir: Path = args.out

    from circuits import model as M
    from circuits.atlas.build import scan, trace_record
    from circuits.model import load_model
    from circuits.probing.causal_tracing import CATEGORIES, trace_facts, trace_grid
    from circuits.sites import parse_component
    from circuits.suites import load_suite
    from circuits.suites.tasks import known_facts

    torch.set_grad_enabled(False)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_model("smollm2-135m")
    findings_path = out_dir / "findings.json"
    findings: dict[str, object] = json.loads(findings_path.read_text()) if findings_path.exists() else {}
    ckpt = M.cache_root() / "checkpoints"

    for name, kw in (("ioi", {"max_pairs": args.per_template}), ("greater-than", {"max_pairs": args.per_template}), ("factual-recall", {"only_correct": True, "max_pairs": 4 * args.per_template})):
        if name not in args.tasks:
            continue
        t0 = time.perf_counter()
        suite = load_suite(name, model=model)  # factual recall: the facts this model knows, paired by its token lengths
        atlas = scan(model, suite, checkpoint_dir=ckpt, command=f"python scripts/tasks.py ({name})", progress=False, **kw)
        b = atlas.behaviours[0]
        heads = [c for c in b.components if c.kind == "head"]
        mlps = [c for c in b.components if c.kind == "mlp"]
        info: dict[str, object] = {
            "pairs": b.suite.n_pairs, "metric": b.metric, "clean_metric": round(b.clean_metric_mean, 3),
            "corrupted_metric": round(b.corrupted_metric_mean, 3), "seconds": round(time.perf_counter() - t0, 1),
            "top_heads": [(c.id, round(c.effect.mean, 3)) for c in b.top(8, kind="head")],
            "top_mlps": [(c.id, round(c.effect.mean, 3)) for c in b.top(6, kind="mlp")],
            "flagged": len(b.flagged()),
            "head_effect_sum": round(sum(max(c.effect.mean, 0.0) for c in heads), 3),
            "mlp_effect_sum": round(sum(max(c.effect.mean, 0.0) for c in mlps), 3),
        }
        if name == "ioi":
            top = [parse_component(c.id) for c in b.top(8, kind="head")]
            info["attention_from_end"] = ioi_attention(model, suite, top)
            info["dla_io_minus_s"] = head_dla(model, suite, top)
        if name == "factual-recall":
            facts = known_facts(model)[: args.facts]
            traces = []
            for kind, window in (("resid", 1), ("mlp", 10), ("attn", 10)):
                r = trace_facts(model, facts, kind=kind, window=window, n_samples=args.samples, progress=False)  # type: ignore[arg-type]
                ie = trace_grid(r, restored=False)
                layer, cat = divmod(int(ie.argmax()), ie.shape[1])
                info[f"trace_{kind}_peak"] = {"layer": layer, "category": CATEGORIES[cat], "indirect_effect": round(float(ie.max()), 4)}
                info[f"trace_{kind}_by_category_max"] = {c: round(float(ie[:, i].max()), 4) for i, c in enumerate(CATEGORIES)}
                traces.append(trace_record(r, tokens=list(CATEGORIES), subject_positions=[0, 1, 2], prompt=f"average over {len(facts)} known facts",
                                           subject="(each fact's subject)", target="(each fact's answer)", n_samples=args.samples))
            atlas = atlas.model_copy(update={"traces": traces})
        atlas.save(out_dir / f"{name}.atlas.json")
        info["settings"] = {"per_template": args.per_template, "facts": args.facts, "samples": args.samples}
        findings[name] = info
        print(name, json.dumps(info, indent=1), flush=True)
        findings_path.write_text(json.dumps(findings, indent=2) + "\n")


if __name__ == "__main__":
    main()
