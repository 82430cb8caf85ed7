"""Scale-out benchmark: sweep throughput in work units/s, in-process vs Ray with 1 and 2 workers,
measured in the same run on SmolLM2-135M, plus a projection of a 7B scan on N GPUs.

A work unit is one layer of an exact activation-patching sweep (all heads + the MLP of that layer,
every prompt); the sweep here is 30 units over 32 prompt pairs of the gender-occupation build split.
The projection multiplies the measured units by their FLOP count (2 × parameters touched × tokens
per forward, counted from the model shape) and divides by an assumed sustained GPU rate, so the
numbers show how the work scales, not a measurement on GPUs.

    python benchmarks/scale.py [--pairs 32]
"""

from __future__ import annotations

import argparse
import time

import torch


def unit_flops(n_layers: int, n_heads: int, d_model: int, d_mlp: int, d_vocab: int, prompts: int, pos: int) -> list[float]:
    """FLOPs of each work unit (layer) of a head + MLP sweep.

    Unit ``L`` runs ``(n_heads + 1) × prompts`` rows through blocks ``L..n-1`` from the cached residual
    (attention ≈ 4 d² and a gated MLP 3 d·d_mlp multiply-adds per token, 2 FLOPs each) and unembeds the
    last position only.
    """
    per_block = 2 * (4 * d_model * d_model + 3 * d_model * d_mlp)
    rows = (n_heads + 1) * prompts
    return [rows * (pos * per_block * (n_layers - layer) + 2 * d_model * d_vocab) for layer in range(n_layers)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=32)
    args = parser.parse_args()

    from circuits.probing.pairs import metric_for_suite
    from circuits.model import load_model, shape_of
    from circuits.probing.executor import RayExecutor
    from circuits.probing.patching import patch_groups, tokenize_pairs
    from circuits.sites import all_heads, all_mlps
    from circuits.suites import load_suite

    torch.set_grad_enabled(False)
    model = load_model("smollm2-135m")
    s = shape_of(model)
    suite = load_suite("gender-occupation")
    pairs = [p for p in suite.pairs("build") if p.template == "The {occupation} said that"]
    pairs = (pairs * (args.pairs // len(pairs) + 1))[: args.pairs]
    groups = tokenize_pairs(model, pairs)
    metric = metric_for_suite(model, suite)
    comps = [*all_heads(s.n_layers, s.n_heads), *all_mlps(s.n_layers)]
    units = s.n_layers
    pos = groups[0].clean.shape[1]
    print(f"SmolLM2-135M, {len(pairs)} pairs of {pos} tokens, {len(comps)} components = {units} work units (one per layer)\n")

    t0 = time.perf_counter()
    ref = patch_groups(model, groups, metric, comps, progress=False)
    base = time.perf_counter() - t0
    print(f"{'executor':<28}{'setup (s)':>10}{'sweep (s)':>11}{'units/s':>9}{'vs in-process':>15}{'max |diff|':>12}")
    print(f"{'in-process (' + str(torch.get_num_threads()) + ' threads)':<28}{0.0:>10.1f}{base:>11.2f}{units / base:>9.2f}{1.0:>14.2f}x{0.0:>12.1e}")
    per_unit_cpu = base / units
    for workers in (1, 2):
        t0 = time.perf_counter()
        ex = RayExecutor(workers=workers, threads=max(1, torch.get_num_threads() // workers))
        ex._ensure_actors(model)
        ex.pids()  # waits until every actor has built its model
        setup = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = patch_groups(model, groups, metric, comps, progress=False, executor=ex)
        dt = time.perf_counter() - t0
        diff = float((r.patched - ref.patched).abs().max())
        print(f"{'Ray, ' + str(workers) + ' worker(s)':<28}{setup:>10.1f}{dt:>11.2f}{units / dt:>9.2f}{base / dt:>14.2f}x{diff:>12.1e}")
        ex.shutdown()
    import ray

    ray.shutdown()

    flops = sum(unit_flops(s.n_layers, s.n_heads, s.d_model, s.d_mlp, s.d_vocab, len(pairs), pos))
    cpu_rate = flops / base
    print(f"\nmeasured: {flops / 1e12:.2f} TFLOP per sweep, {cpu_rate / 1e9:.0f} GFLOP/s sustained in-process on this CPU "
          f"({per_unit_cpu:.2f} s per unit)")
    # 7B projection: Llama-2-7B shape, 1,000 prompt pairs of 20 tokens, bf16, one actor per GPU.
    big = dict(n_layers=32, n_heads=32, d_model=4096, d_mlp=11008, d_vocab=32000)
    prompts, big_pos, gpu_rate = 1000, 20, 0.4 * 312e12  # A100 bf16 peak 312 TFLOP/s at 40% utilisation
    costs = sorted(unit_flops(**big, prompts=prompts, pos=big_pos), reverse=True)
    big_flops = sum(costs)
    load_s = 14e9 / 2e9  # 14 GB of bf16 weights at ~2 GB/s per worker, once
    cache_gb = prompts * 2 * big_pos * big["n_layers"] * (big["d_model"] * 2) * 2 / 1e9  # z + resid_pre, clean + corrupted, bf16
    print(f"\nprojection (not measured): a 7B Llama-shaped model, {prompts} pairs of {big_pos} tokens, {big['n_layers']} units "
          f"of {big['n_heads'] + 1} components: {big_flops / 1e15:.0f} PFLOP per sweep; on this CPU at the measured rate "
          f"{big_flops / cpu_rate / 86400:.0f} days")
    print(f"{'GPUs (one Ray actor each)':<28}{'wall time':>12}   (A100 at 40% of bf16 peak; units are per-layer, so at most {big['n_layers']} GPUs help)")
    for n in (1, 2, 4, 8, 16, 32):
        # Units are whole layers of unequal cost (layer L reruns n - L blocks); longest first onto the least loaded GPU.
        bins = [0.0] * n
        for c in costs:
            bins[bins.index(min(bins))] += c
        wall = max(bins) / gpu_rate + load_s
        print(f"{n:<28}{wall / 60:>10.1f} min")
    print(f"\nper-worker memory: 14 GB weights + {cache_gb:.0f} GB cached activations for the job (fits one 80 GB A100; "
          f"split the prompts into batches of units to go lower)")


if __name__ == "__main__":
    main()
