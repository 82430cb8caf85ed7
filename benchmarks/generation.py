"""Benchmark: greedy generation speed (tokens/s) of SmolLM2-135M with and without each edit kind.

Every kind is built for the gender-occupation behaviour from the committed atlas (top-3 flagged
heads, or 32 neurons of the flagged MLP layers for neuron kinds). Generation speed depends only on
how an edit is applied, not on its trained values, so the trained kinds use their initial tensors
(zero offsets, LoRA factors with B = 0 shifted by a constant, unit neuron scales) and are not
trained here. Each configuration is measured as the median of ``REPEATS`` runs, interleaved with
unedited runs; the overhead is ``min(edited times) / min(unedited times) − 1`` (the minimum is the
least-disturbed run, as ``timeit`` recommends; interleaving cancels slow drifts of a 2-core machine).
Targets (issue 6): baked (weight) edits ≤ 2% overhead, hook-based edits ≤ 10%.

    python benchmarks/generation.py
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

PROMPT = "The nurse said that"
NEW_TOKENS = 32
REPEATS = 9


def main() -> None:
    from circuits import model as M
    from circuits.atlas.schema import Atlas
    from circuits.editing.build import ablation_edit, direction_edit, scaling_edit, select_components, steering_edit
    from circuits.editing.edit import HOOK_KINDS, Edit, apply_edit
    from circuits.sites import NeuronRef
    from circuits.suites import load_suite

    torch.set_num_threads(2)
    m = M.load_model("smollm2-135m")
    atlas = Atlas.load(Path(__file__).resolve().parents[1] / "atlas/smollm2-135m/smollm2-135m.atlas.json")
    suite = load_suite("gender-occupation")
    heads = select_components(m, atlas, suite, k=3)
    neurons = tuple(NeuronRef(24, i) for i in range(32))
    fp, d_head = M.fingerprint(m), M.shape_of(m).d_head

    def make(kind: str, components, tensors, **hp) -> Edit:  # noqa: ANN001
        return Edit(kind=kind, components=components, tensors=tensors, model_name="smollm2-135m", model_fingerprint=fp, hyperparameters=hp)

    o = "blocks.26.attn.o.weight"
    w = M.read_weight(m, o)
    lora = {f"{o}.lora_A": torch.full((4, w.shape[1]), 1e-3), f"{o}.lora_B": torch.full((w.shape[0], 4), 1e-3)}
    edits = {
        "ablation (mean, heads)": ablation_edit(m, heads, suite, mode="mean", atlas=atlas),
        "ablation (resample, heads)": ablation_edit(m, heads, suite, mode="resample", atlas=atlas),
        "pruning (mean, baked)": ablation_edit(m, heads, suite, mode="mean", bake=True, atlas=atlas),
        "scaling": scaling_edit(m, heads, alpha=0.5, atlas=atlas),
        "steering": steering_edit(m, suite, layer=20, atlas=atlas),
        "offset": make("offset", heads, {str(h): torch.zeros(d_head) for h in heads}),
        "directional_ablation": direction_edit(m, suite, layer=20, atlas=atlas),
        "orthogonalization": direction_edit(m, suite, layer=20, bake=True, atlas=atlas),
        "low_rank": make("low_rank", heads[:1], lora, rank=4, alpha=1.0),
        "invariance": make("invariance", heads[:1], lora, rank=4, alpha=1.0),
        "neuron_repair": make("neuron_repair", neurons, {str(n): torch.ones(()) for n in neurons}),
    }

    def seconds() -> float:
        t0 = time.perf_counter()
        M.generate(m, PROMPT, max_new_tokens=NEW_TOKENS)
        return time.perf_counter() - t0

    seconds()  # warm-up
    rows = []
    for name, e in edits.items():
        for bake in (False, True) if e.kind in HOOK_KINDS and not name.startswith("ablation (resample") else (False,):
            base, edited = [], []
            for _ in range(REPEATS):
                base.append(seconds())
                with apply_edit(m, e, bake=bake):
                    edited.append(seconds())
            how = "baked" if bake or e.kind not in HOOK_KINDS else "hooks"
            rows.append((name, how, NEW_TOKENS / min(base), NEW_TOKENS / min(edited), min(edited) / min(base) - 1))
    print(f"greedy generation, {NEW_TOKENS} new tokens, best of {REPEATS} interleaved (unedited, edited) runs per row")
    print(f"{'edit':30s} {'applied as':10s} {'unedited tok/s':>15s} {'edited tok/s':>13s} {'overhead':>9s}  target")
    for name, how, b, s, over in rows:
        target = 0.02 if how == "baked" else 0.10
        print(f"{name:30s} {how:10s} {b:15.1f} {s:13.1f} {over:+9.1%}  ≤{target:.0%} {'met' if over <= target else 'NOT met'}")


if __name__ == "__main__":
    main()
