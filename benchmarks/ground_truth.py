"""Ground truth: do the probing methods find the components that are really there?

1. Planted models (``circuits.planted``; shipped weights, circuits planted by construction): recall,
   precision and faithfulness of the heads each method flags, for the induction, spurious and harmful
   tasks;
   causal tracing restores whole attention layers, so it is scored at layer granularity.
2. Removing the planted spurious feature and the planted harmful head with the editing module (mean
   ablation of the heads exact patching flags): label accuracy on the de-correlated test split, and the
   harmful-output rate on triggered prompts, before and after.
3. SmolLM2-135M: on repeated random token sequences, the top-5 heads by exact activation patching of
   the induction behaviour (denoising and noising) vs the top-5 by the standard induction score
   (attention from a token to the one after its previous occurrence; Olsson et al. 2022); then a
   second, backup-head round: the primary induction heads the first round flags are mean-ablated and
   the other heads scanned again (Wang et al. 2023, IOI).

    python benchmarks/ground_truth.py
"""

from __future__ import annotations

import time

import torch


def tracing_layers(task: str, model) -> frozenset[int]:  # noqa: ANN001
    """Causal tracing on 8 prompts: the spurious token, or the first copy of a 6-token block, noised."""
    import circuits.planted as P
    from circuits.planted.recovery import traced_layers

    if task == "spurious":
        group, _ = P.spurious_pairs(8, seed=3)
        return traced_layers(model, group.clean, torch.full((8,), P.LABELS[0]), [P.SPURIOUS_POS])[0]
    if task == "harmful":
        group, _ = P.harmful_pairs(8, seed=3)
        return traced_layers(model, group.clean, torch.full((8,), P.HARM), [P.TRIGGER_POS])[0]
    toks, lengths = P.induction_tokens(64, seed=3)
    rows = (lengths == 6).nonzero().flatten()[:8]
    return traced_layers(model, toks[rows][:, :-1], toks[rows][:, -1], list(range(P.SEQ - 12, P.SEQ - 6)))[0]


def planted() -> None:
    import circuits.planted as P
    from circuits.editing import apply_edit
    from circuits.planted.recovery import recover

    print("1. Planted circuits (threshold 0.1 on the mean normalised effect; 32 prompt pairs)")
    print(f"{'task':10s} {'method':38s} {'flagged':16s} {'recall':>6s} {'precision':>9s} {'faithfulness':>12s}")
    flagged: dict[str, frozenset] = {}
    for task, pairs in (("induction", P.induction_pairs), ("spurious", P.spurious_pairs), ("harmful", P.harmful_pairs)):
        model = P.load_planted(task)
        group, metric = pairs(32, seed=3)
        for r in recover(model, group, metric, P.PLANTED[task]):
            print(f"{task:10s} {r.method:38s} {','.join(sorted(map(str, r.flagged))) or '-':16s} {r.recall:6.2f} {r.precision:9.2f} {r.faithfulness:12.3f}")
            if r.method.startswith("exact"):
                flagged[task] = r.flagged
        layers = tracing_layers(task, model)
        truth = {h.layer for h in P.PLANTED[task]}
        hit = len(layers & truth)
        print(f"{task:10s} {'causal tracing (attention layers)':38s} {','.join(f'L{x}ATTN' for x in sorted(layers)) or '-':16s} "
              f"{hit / len(truth):6.2f} {hit / len(layers) if layers else 0.0:9.2f} {'(layers)':>12s}")
        print(f"{'':10s} planted: {', '.join(sorted(map(str, P.PLANTED[task])))}")
    model = P.load_planted("spurious")
    before = (P.spurious_accuracy(model, decorrelated=True), P.spurious_accuracy(model, decorrelated=False))
    with apply_edit(model, P.remove_spurious(model, flagged["spurious"])):
        after = (P.spurious_accuracy(model, decorrelated=True), P.spurious_accuracy(model, decorrelated=False))
    print(f"\n2. Removing the spurious feature (mean ablation of {', '.join(sorted(map(str, flagged['spurious'])))}), 512 prompts each:")
    print(f"   de-correlated test accuracy {before[0]:.3f} → {after[0]:.3f}; training-distribution accuracy {before[1]:.3f} → {after[1]:.3f}")
    model = P.load_planted("harmful")
    before = P.harmful_rates(model)
    with apply_edit(model, P.remove_harmful(model, flagged["harmful"])):
        after = P.harmful_rates(model)
    print(f"   Removing the harmful head (mean ablation of {', '.join(sorted(map(str, flagged['harmful'])))}), 512 triggered prompts:")
    print(f"   harmful output rate {before[0]:.3f} → {after[0]:.3f}; correct label {before[1]:.3f} → {after[1]:.3f}")


def induction_on_smollm2(n: int = 16, block: int = 25, seed: int = 0, primary_score: float = 0.4) -> None:
    from circuits import model as M
    from circuits.metrics import call_metric
    from circuits.editing import apply_edit
    from circuits.planted import PerPromptLogit, mean_ablation
    from circuits.probing.patching import TokenGroup, patch_groups
    from circuits.sites import HeadRef, all_heads
    from circuits.stats import summarise_rows

    model = M.load_model("smollm2-135m")
    shape = M.shape_of(model)
    g = torch.Generator().manual_seed(seed)
    bos = M.bos_token_id(model)
    a = torch.randint(1000, 10000, (n, block), generator=g)
    b = torch.randint(1000, 10000, (n, block), generator=g)
    start = torch.full((n, 1), bos)
    # clean: BOS a a[:-1]; corrupted: the first copy replaced by other random tokens, so there is
    # nothing to copy. The metric reads the last block-2 positions (a[1..block-2]), whose next tokens
    # a[2..block-1] are known only from the first copy.
    clean = torch.cat([start, a, a[:, :-1]], 1)
    corrupted = torch.cat([start, b, a[:, :-1]], 1)
    metric = PerPromptLogit(a[:, 2:])  # in-context copying, read at the second copy's last block-2 positions
    heads = all_heads(shape.n_layers, shape.n_heads)
    group = [TokenGroup(list(range(n)), clean, corrupted)]

    # Induction score on the clean prompts: attention from second-copy position q to q - block + 1.
    names = [HeadRef(layer, 0, "pattern").hook_name for layer in range(shape.n_layers)]
    zs = [HeadRef(layer, 0).hook_name for layer in range(shape.n_layers)]
    final = f"blocks.{shape.n_layers - 1}.hook_resid_post"
    _, cache = M.run_with_cache(model, clean, [*names, *zs, final])
    q = torch.arange(block + 2, clean.shape[1])
    score = torch.stack([cache[n_][:, :, q, q - block + 1].mean((0, 2)) for n_ in names]).flatten()
    k = torch.arange(2, clean.shape[1])  # previous-token score: attention from k to k - 1 (after BOS)
    previous = torch.stack([cache[n_][:, :, k, k - 1].mean((0, 2)) for n_ in names]).flatten()
    top_score = [heads[i] for i in score.argsort(descending=True)[:5].tolist()]

    # Round 1: exact activation patching of every head, both directions. Noising importance is the
    # fraction of the clean-minus-corrupted metric lost when the head gets its corrupted activation.
    t0 = time.perf_counter()
    den = patch_groups(model, group, metric, heads, progress=False)
    seconds = time.perf_counter() - t0
    noi = patch_groups(model, group, metric, heads, direction="noising", progress=False)
    gap = float(den.clean_metric.mean() - den.corrupted_metric.mean())

    def flag(per_prompt: torch.Tensor, comps: list) -> set:
        return {comps[i] for i, s in enumerate(summarise_rows(per_prompt.numpy())) if s.mean >= 0.05 and s.ci_low > 0}

    rounds = {"denoising": (den.effects, heads), "noising": (1 - noi.effects, heads)}
    flags = {name: flag(*r) for name, r in rounds.items()}
    # Round 2 (backup heads; Wang et al. 2023, IOI §3.3): mean-ablate the primary induction heads (the
    # noising round's flagged heads with an induction score >= primary_score) in every run and scan the
    # other heads again, noising. Importance is the metric lost, as a fraction of the unablated gap.
    primary = {h for h in flags["noising"] if score[heads.index(h)] >= primary_score}
    rest = [h for h in heads if h not in primary]
    with apply_edit(model, mean_ablation(model, primary, torch.cat([clean, corrupted]))):
        knocked = patch_groups(model, group, metric, rest, direction="noising", progress=False)
    assert knocked.patched is not None
    rounds["noising, primary ablated"] = ((knocked.clean_metric - knocked.patched) / gap, rest)
    flags["noising, primary ablated"] = flag(*rounds["noising, primary ablated"])

    # Direct logit attribution: the metric lost when one head's write is removed from the final residual.
    resid = cache[final][:, -metric.info.positions :]
    full = call_metric(metric, M.logit_lens(model, resid)).mean()
    dla = torch.zeros(len(heads))
    for layer in range(shape.n_layers):
        w_o = M.read_weight(model, f"blocks.{layer}.attn.o.weight")  # [d_model, heads * d_head]
        for h in range(shape.n_heads):
            z = cache[zs[layer]][:, -metric.info.positions :, h]
            write = z @ w_o[:, h * shape.d_head : (h + 1) * shape.d_head].T
            dla[layer * shape.n_heads + h] = full - call_metric(metric, M.logit_lens(model, resid - write)).mean()

    print(f"\n3. Induction heads on SmolLM2-135M ({n} repeated random blocks of {block} tokens; copying metric on the"
          f" last {block - 2} positions: clean {den.clean_metric.mean():.2f}, corrupted {den.corrupted_metric.mean():.2f};"
          f" exact patching of {len(heads)} heads took {seconds:.1f} s)")
    print("   top-5 by induction score: " + ", ".join(f"{h} ({score[heads.index(h)]:.2f})" for h in top_score))
    ranks, flagged_any = {}, set()
    for name, (per_prompt, comps) in rounds.items():
        mean = per_prompt.mean(1)
        order = mean.argsort(descending=True)
        top = [comps[i] for i in order[:5].tolist()]
        flagged = flags[name]
        flagged_any |= flagged
        ranks[name] = {comps[i]: (r + 1, float(mean[i])) for r, i in enumerate(order.tolist())}
        rho = float(torch.corrcoef(torch.stack([mean.argsort().argsort().float(), score[[heads.index(c) for c in comps]].argsort().argsort().float()]))[0, 1])
        print(f"   {name + ':':25s} top-5 " + ", ".join(f"{h} ({ranks[name][h][1]:.2f})" for h in top)
              + f"; overlap {len(set(top) & set(top_score))}/5; {len(flagged)} flagged (mean >= 0.05, 95% CI > 0),"
              f" {len(flagged & set(top_score))}/5 of the score top-5 among them; Spearman with the score {rho:.2f}")
    print(f"   primary induction heads (flagged by noising, score >= {primary_score}), mean-ablated in round 2: "
          + ", ".join(map(str, sorted(primary, key=heads.index))))
    print(f"   {'head':6s} {'score':>6s} {'DLA (rank)':>14s}" + "".join(f" {name + ' (rank)':>32s}" for name in rounds))
    dla_rank = dla.argsort(descending=True).argsort()
    for h in top_score:
        i = heads.index(h)
        cells = "".join(f" {ranks[name][h][1]:24.3f} ({ranks[name][h][0]:3d})" if h in ranks[name] else f" {'(ablated)':>32s}" for name in rounds)
        print(f"   {str(h):6s} {score[i]:6.2f} {dla[i]:7.3f} ({int(dla_rank[i]) + 1:3d}){cells}")
    print(f"   score top-5 flagged by the scan in round 1 or round 2: {len(flagged_any & set(top_score))}/5"
          f" ({len(flagged_any)} heads flagged in all)")
    kinds: dict[str, list] = {"induction": [], "previous-token": [], "other": []}
    for h in sorted(flagged_any, key=heads.index):
        i = heads.index(h)
        kind = "induction" if score[i] >= primary_score else "previous-token" if previous[i] >= primary_score else "other"
        kinds[kind].append(f"{h} ({score[i]:.2f}/{previous[i]:.2f})")
    induction = {heads[i] for i in (score >= primary_score).nonzero()[:, 0].tolist()}
    print(f"   heads with induction score >= {primary_score} in the model: {len(induction)}; flagged: {len(induction & flagged_any)}")
    print(f"   the flagged heads by attention (induction / previous-token score, >= {primary_score}):")
    for kind, members in kinds.items():
        print(f"     {kind:15s} {len(members):2d}: " + ", ".join(members))


if __name__ == "__main__":
    torch.set_num_threads(2)
    planted()
    induction_on_smollm2()
