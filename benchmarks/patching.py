"""Benchmark the probing engine on SmolLM2-135M, 8 prompt pairs; every ratio is measured in this run.

1. Exact head-output sweep (all 270 heads, all positions): ours vs TransformerLens 4.3
   ``patching.get_act_patch_attn_head_out_all_pos``. Target: >= 2x faster, max |difference| <= 1e-4.
2. Attribution patching and EAP-IG vs exact patching over the 270 heads (against both our exact
   sweep and TL's). Target: >= 30x faster, Spearman >= 0.8, top-10 overlap >= 80%. Measured on the
   8 five-token pairs above and on 8 sixteen-token pairs of the name-sentiment suite (against our
   sweep only: TL's takes minutes there), with the forward-pass count that bounds the ratio.
3. Causal tracing (ROME, "The Eiffel Tower is located in the city of" -> " Paris", 10 noise draws):
   batched vs one forward per grid cell. Target: >= 3x faster, same grid.
4. Peak resident memory of a full scan (300 components x 84 pairs, in a child process). Target <= 3 GiB.
5. Across families (``--families``; one thread): the exact head sweep on SmolLM2 and on random models
   with the shapes of GPT-2 small and Pythia-160M (12 layers x 12 heads, d_model 768; SmolLM2's
   49,152-token vocabulary), against TransformerLens 4.3's ``get_act_patch_attn_head_out_all_pos`` (goal
   >= 4x, identical numbers), nnsight 0.8's fastest idiomatic form (one trace per layer, batched
   invokes) and a plain PyTorch hook loop (``benchmarks/baselines.py``): the lead must hold on each.

    python benchmarks/patching.py [--skip-full-scan] [--families | --no-families]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

import torch
from scipy import stats


def timed(fn, repeats: int = 1):  # noqa: ANN001, ANN201
    """Result and median wall time of ``repeats`` calls (after the caller's warm-up)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def row(name: str, ours: float, base: float, target: str, ok: bool, extra: str = "") -> None:
    print(f"{name:<44} ours {ours:7.2f} s  baseline {base:7.2f} s  ratio {base / ours:6.1f}x  target {target:<6} {'met' if ok else 'NOT met'} {extra}")


def families(threads: int = 1) -> None:
    """Section 5: the exact head sweep against three baselines on three model shapes, ``threads`` threads."""
    from transformer_lens import patching

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    from baselines import hook_loop_head_sweep, nnsight_head_sweep

    from circuits import model as M
    from circuits.probing.pairs import metric_for_suite
    from circuits.model.tiny import tiny_hf_model
    from circuits.model.weights import weight_module
    from circuits.probing.patching import TokenGroup, patch_groups, tokenize_pairs
    from circuits.sites import all_heads
    from circuits.suites import load_suite

    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    suite = load_suite("gender-occupation")
    pairs = [p for p in suite.pairs("build") if p.template == "The {occupation} said that"][:8]
    shapes = {
        "SmolLM2-135M (real)": lambda: M.load_model("smollm2-135m"),
        "GPT-2 small shape (random)": lambda: tiny_hf_model(
            "gpt2", n_layers=12, n_head=12, n_embd=768, n_inner=3072, initializer_range=0.02),
        "Pythia-160M shape (random)": lambda: tiny_hf_model(
            "gpt_neox", n_layers=12, num_attention_heads=12, hidden_size=768, intermediate_size=3072, initializer_range=0.02),
    }
    print(f"\nexact head sweep across families: {len(pairs)} pairs, all heads, all positions, {threads} thread(s) each, same run")
    print(f"{'model':28s} {'heads':>5s} {'ours':>7s} {'TL 4.3':>8s} {'nnsight':>8s} {'hook loop':>9s}  {'vs TL':>6s} {'vs nnsight':>10s} {'vs loop':>7s} max|diff|  goal ≥4× TL, lead on all")
    for label, build in shapes.items():
        lm = build()
        (group,) = tokenize_pairs(lm, pairs)
        metric = metric_for_suite(lm, suite)
        s = lm.shape
        heads = all_heads(s.n_layers, s.n_heads)
        groups = [TokenGroup(list(range(len(pairs))), group.clean, group.corrupted)]
        patch_groups(lm, groups, metric, heads[: s.n_heads], progress=False)  # warm-up
        ours, t_ours = timed(lambda: patch_groups(lm, groups, metric, heads, progress=False))
        ours_grid = ours.mean_effects.view(s.n_layers, s.n_heads)
        cm, km = ours.clean_metric.mean(), ours.corrupted_metric.mean()
        cache = lm.bridge.run_with_cache(group.clean)[1]
        tl, t_tl = timed(lambda: patching.get_act_patch_attn_head_out_all_pos(
            lm.bridge, group.corrupted, cache, lambda lg: (metric(lg).mean() - km) / (cm - km)))
        plain = M.hf_model_copy(lm)  # nnsight wraps every module it is given: a separate copy
        o_rel = lm.arch.o

        def o_module(model, layer, o_rel=o_rel):  # noqa: ANN001, ANN202
            return weight_module(lm, f"blocks.{layer}.attn.o.weight", root=model)[0]

        def o_envoy(envoy, layer, o_rel=o_rel):  # noqa: ANN001, ANN202
            node = envoy
            for part in [*filter(None, [lm.arch.base, lm.arch.layers]), str(layer), *o_rel.split(".")]:
                node = node[int(part)] if part.isdigit() else getattr(node, part)
            return node

        kw = dict(n_layers=s.n_layers, n_heads=s.n_heads, d_head=s.d_head)
        loop, t_loop = timed(lambda: hook_loop_head_sweep(plain, group.clean, group.corrupted, metric, o_proj_module=o_module, **kw))
        nns, t_nns = timed(lambda: nnsight_head_sweep(plain, group.clean, group.corrupted, metric, o_proj_path=o_envoy, tokenizer=lm.tokenizer, **kw))
        diff = max(float((ours_grid - r.view_as(ours_grid)).abs().max()) for r in (tl, loop, nns))
        ok = t_tl / t_ours >= 4 and min(t_nns, t_loop) > t_ours and diff <= 1e-4
        print(f"{label:28s} {len(heads):5d} {t_ours:6.2f}s {t_tl:7.2f}s {t_nns:7.2f}s {t_loop:8.2f}s  {t_tl / t_ours:5.1f}x "
              f"{t_nns / t_ours:9.1f}x {t_loop / t_ours:6.1f}x {diff:9.1e}  {'met' if ok else 'NOT met'}")
        del lm, plain, cache


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-full-scan", action="store_true")
    parser.add_argument("--families", action=argparse.BooleanOptionalAction, default=None,
                        help="only the cross-family section (--families), or everything but it (--no-families)")
    parser.add_argument("--threads", type=int, default=1, help="threads for the cross-family section")
    args = parser.parse_args()
    if args.families:
        families(args.threads)
        return

    from transformer_lens import patching

    from circuits.probing.pairs import metric_for_suite
    from circuits import model as M
    from circuits.model import load_model
    from circuits.probing.attribution import attribution_patching
    from circuits.probing.causal_tracing import trace_grid, trace_tokens
    from circuits.probing.patching import TokenGroup, patch_groups, tokenize_pairs
    from circuits.sites import all_heads
    from circuits.suites import load_suite

    torch.set_grad_enabled(False)
    model = load_model("smollm2-135m")
    suite = load_suite("gender-occupation")
    pairs = [p for p in suite.pairs("build") if p.template == "The {occupation} said that"][:8]
    clean = M.to_tokens(model, [p.clean for p in pairs])
    corrupted = M.to_tokens(model, [p.corrupted for p in pairs])
    metric = metric_for_suite(model, suite)
    heads = all_heads(model.shape.n_layers, model.shape.n_heads)
    groups = [TokenGroup(list(range(8)), clean, corrupted)]
    print(f"SmolLM2-135M, {len(pairs)} pairs of {clean.shape[1]} tokens, {len(heads)} heads, {torch.get_num_threads()} threads\n")

    # Warm-up: the first forward and the first backward pay one-off set-up costs.
    patch_groups(model, groups, metric, heads[:9], progress=False)
    attribution_patching(model, groups, metric, heads[:9], progress=False)

    # 1. exact sweep vs TransformerLens
    ours, t_ours = timed(lambda: patch_groups(model, groups, metric, heads, progress=False))
    cm, km = ours.clean_metric.mean(), ours.corrupted_metric.mean()
    _, cache = model.bridge.run_with_cache(clean)
    tl, t_tl = timed(lambda: patching.get_act_patch_attn_head_out_all_pos(model.bridge, corrupted, cache, lambda lg: (metric(lg).mean() - km) / (cm - km)))
    diff = float((ours.mean_effects.view_as(tl) - tl).abs().max())
    row("exact head sweep vs TL 4.3", t_ours, t_tl, ">=2x", t_tl / t_ours >= 2 and diff <= 1e-4, f"max|diff| {diff:.1e}")

    # 2. attribution vs exact
    n_layers, n_heads = model.shape.n_layers, model.shape.n_heads
    exact_passes = n_heads * sum(n_layers - layer for layer in range(n_layers)) / n_layers
    print(f"forward-pass equivalents: exact sweep {exact_passes:.1f} (partial forwards), TL's {len(heads)}, attribution ~3, EAP-IG k steps ~1+2k")

    def compare(label: str, groups_: list, metric_, exact_result, t_exact: float, t_tl: float | None) -> None:  # noqa: ANN001
        exact = exact_result.mean_effects
        top_exact = set(exact.topk(10).indices.tolist())
        for steps in (1, 5):
            est, t_est = timed(lambda: attribution_patching(model, groups_, metric_, heads, ig_steps=steps, progress=False), 5)
            rho = stats.spearmanr(est.mean_effects.numpy(), exact.numpy()).statistic
            overlap = len(top_exact & set(est.mean_effects.topk(10).indices.tolist())) / 10
            name = "attribution patching" if steps == 1 else f"EAP-IG ({steps} steps)"
            quality = f"Spearman {rho:.3f}  top-10 overlap {overlap:.0%}"
            good = rho >= 0.8 and overlap >= 0.8
            row(f"{name}, {label} vs our exact sweep", t_est, t_exact, ">=30x", t_exact / t_est >= 30 and good, quality)
            if t_tl is not None:
                row(f"{name}, {label} vs TL exact sweep", t_est, t_tl, ">=30x", t_tl / t_est >= 30 and good, quality)

    compare(f"{clean.shape[1]} tokens", groups, metric, ours, t_ours, t_tl)
    sentiment = load_suite("name-sentiment")
    longest = max((g for g in tokenize_pairs(model, sentiment.pairs("build")) if len(g.indices) >= 8), key=lambda g: g.clean.shape[1])
    long_tokens = longest.clean.shape[1]
    long_groups = [TokenGroup(list(range(8)), longest.clean[:8], longest.corrupted[:8])]
    long_metric = metric_for_suite(model, sentiment)
    long_exact, t_long = timed(lambda: patch_groups(model, long_groups, long_metric, heads, progress=False))
    compare(f"{long_tokens} tokens", long_groups, long_metric, long_exact, t_long, None)

    # 3. causal tracing
    tokens = M.to_tokens(model, ["The Eiffel Tower is located in the city of"])
    paris = M.single_token_id(model, " Paris")
    kw = dict(n_samples=10, progress=False)
    fast, t_fast = timed(lambda: trace_tokens(model, tokens, paris, [1, 2, 3, 4], **kw))
    slow, t_slow = timed(lambda: trace_tokens(model, tokens, paris, [1, 2, 3, 4], batched=False, **kw))
    gdiff = float((trace_grid(fast) - trace_grid(slow)).abs().max())
    row("causal tracing batched vs per cell", t_fast, t_slow, ">=3x", t_slow / t_fast >= 3 and gdiff <= 1e-5, f"max|diff| {gdiff:.1e}")

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak RSS of this benchmark process: {rss:.2f} GiB")
    if not args.skip_full_scan:
        code = (
            "from circuits.model import load_model; from circuits.suites import load_suite; "
            "from circuits.atlas.build import scan; scan(load_model(), load_suite('gender-occupation'), progress=False)"
        )
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        print(f"full scan (300 components x 84 pairs): {time.perf_counter() - t0:.0f} s, peak RSS {child:.2f} GiB, target <= 3 GiB {'met' if child <= 3 else 'NOT met'}")
    if args.families is None:
        families(args.threads)


if __name__ == "__main__":
    main()
