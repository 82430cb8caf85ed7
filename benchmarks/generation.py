"""Benchmark: greedy generation with each edit kind applied, against plain Hugging Face ``generate``.

For every edit kind (built for the gender-occupation behaviour from the committed atlas: top-3 flagged
heads, or 32 neurons of layer 24 for neuron kinds; trained kinds use their initial tensors, since speed
does not depend on trained values) this prints, in one run, one thread, batch 1, 64 greedy tokens:

* plain HF: ``transformers`` alone on the edit baked and exported to a Hugging Face directory (for
  kinds without a weight form, on the unedited export), its tokens/s;
* ours: :func:`circuits.model.generate_ids` on the hooked model with the edit applied as a user applies
  it (hooks, or weights for weight kinds), its tokens/s and the ratio to plain HF (goal ≥ 0.95×);
* whether the tokens are identical to plain HF's on the baked export (a resample ablation draws
  reference activations at random and has no baked form: "n/a").

Timings are the minimum of ``REPEATS`` interleaved runs (the least-disturbed run, as ``timeit``
recommends; interleaving cancels slow drifts of a 2-core machine).

    python benchmarks/generation.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

PROMPT = "The nurse said that"
NEW_TOKENS = 64
REPEATS = 5


def main() -> None:
    from transformers import AutoModelForCausalLM

    from circuits import model as M
    from circuits.atlas.schema import Atlas
    from circuits.editing.build import ablation_edit, direction_edit, scaling_edit, select_components, steering_edit
    from circuits.editing import Edit, EditError, apply_edit
    from circuits.probing.patching import tokenize_pairs
    from circuits.sites import NeuronRef
    from circuits.suites import load_suite

    torch.set_num_threads(1)
    m = M.load_model("smollm2-135m")
    atlas = Atlas.load(Path(__file__).resolve().parents[1] / "atlas/smollm2-135m/smollm2-135m.atlas.json")
    suite = load_suite("gender-occupation")
    heads = select_components(m, atlas, suite.name, k=3)
    groups = tokenize_pairs(m, suite.pairs("build"))
    neurons = tuple(NeuronRef(24, i) for i in range(32))
    fp, d_head = M.fingerprint(m), m.shape.d_head

    def make(kind: str, components, tensors, **hp) -> Edit:  # noqa: ANN001
        return Edit(kind=kind, components=components, tensors=tensors, model_name=m.name, model_fingerprint=fp, hyperparameters=hp)

    o = "blocks.26.attn.o.weight"
    w = M.read_weight(m, o)
    lora = {f"{o}.lora_A": torch.full((4, w.shape[1]), 1e-3), f"{o}.lora_B": torch.full((w.shape[0], 4), 1e-3)}
    edits = {
        "none": None,
        "ablation (mean, heads)": ablation_edit(m, heads, groups, mode="mean"),
        "ablation (zero, heads)": ablation_edit(m, heads, groups, mode="zero"),
        "ablation (resample, heads)": ablation_edit(m, heads, groups, mode="resample"),
        "pruning (mean)": ablation_edit(m, heads, groups, mode="mean", form="weights"),
        "scaling (α=0.5)": scaling_edit(m, heads, alpha=0.5),
        "steering": steering_edit(m, groups, layer=20),
        "offset": make("offset", heads, {str(h): torch.full((d_head,), 0.01) for h in heads}),
        "directional_ablation": direction_edit(m, groups, layer=20),
        "orthogonalization": direction_edit(m, groups, layer=20, form="weights"),
        "low_rank": make("low_rank", heads[:1], lora, rank=4, alpha=1.0),
        "invariance": make("invariance", heads[:1], lora, rank=4, alpha=1.0),
        "neuron_repair": make("neuron_repair", neurons, {str(n): torch.full((), 0.5) for n in neurons}),
    }
    tokens = M.to_tokens(m, [PROMPT])
    mask = torch.ones_like(tokens)
    tmp = Path(tempfile.mkdtemp(prefix="circuits-bench-"))

    def plain_model(edit: Edit | None, name: str):  # noqa: ANN202
        """The edit baked and exported, loaded by transformers alone (None: no weight form)."""
        try:
            with apply_edit(m, edit, form="weights") if edit else _Null():
                directory = M.save_hf_pretrained(m, tmp / name.replace(" ", "_"))
        except (EditError, M.ExportError):
            return None
        return AutoModelForCausalLM.from_pretrained(directory).eval()

    unedited = plain_model(None, "unedited")
    print(f"greedy generation, {NEW_TOKENS} tokens, batch 1, 1 thread, best of {REPEATS} interleaved runs; transformers alone as baseline")
    print(f"{'edit':28s} {'applied as':10s} {'plain HF tok/s':>15s} {'ours tok/s':>11s} {'ratio':>6s}  {'tokens':9s} goal ≥0.95×")
    for name, edit in edits.items():
        plain = plain_model(edit, name) if edit is not None else unedited
        baseline = plain if plain is not None else unedited

        def run_plain() -> tuple[float, torch.Tensor]:
            t0 = time.perf_counter()
            out = baseline.generate(input_ids=tokens, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
            return time.perf_counter() - t0, out

        def run_ours() -> tuple[float, torch.Tensor]:
            t0 = time.perf_counter()
            out = M.generate_ids(m, tokens, max_new_tokens=NEW_TOKENS)
            return time.perf_counter() - t0, out

        handle = apply_edit(m, edit) if edit is not None else None
        try:
            run_ours()  # warm-up (builds the twin; folds a weight form once)
            plain_t, ours_t = [], []
            for _ in range(REPEATS):
                t, ref = run_plain()
                plain_t.append(t / (ref.shape[1] - tokens.shape[1]))
                t, got = run_ours()
                ours_t.append(t / (got.shape[1] - tokens.shape[1]))
        finally:
            if handle is not None:
                handle.remove()
        same = "n/a" if plain is None else ("identical" if got.tolist() == ref.tolist() else "DIFFER")
        how = "none" if edit is None else edit.form
        ratio = min(plain_t) / min(ours_t)
        print(f"{name:28s} {how:10s} {1 / min(plain_t):15.1f} {1 / min(ours_t):11.1f} {ratio:6.2f}  {same:9s} {'met' if ratio >= 0.95 else 'NOT met'}")


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    main()
