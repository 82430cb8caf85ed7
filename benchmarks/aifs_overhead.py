"""Benchmark: inference overhead of an AIFS edit (seed 002 estimates "<15% increase" over the base model).

At inference an AIFS edit is a per-feature gate ``g ⊙ z + b`` at one site (no noise). This times, in one
run and one thread, a forward pass of the same batch without the edit and with it (as hooks; and baked
into ``W_O`` for a head site), and prints the ratio. Timings are the minimum of ``REPEATS`` interleaved
runs (the least-disturbed run, as ``timeit`` recommends).

    python benchmarks/aifs_overhead.py             # planted spurious model, residual and head sites
    python benchmarks/aifs_overhead.py smollm2     # SmolLM2-135M, residual stream entering layer 23
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

REPEATS = 7


def overhead(model: Any, edit: Any, tokens: torch.Tensor, *, repeats: int = REPEATS, form: str = "auto") -> dict[str, float]:
    """``{"base_s", "edited_s", "ratio"}``: best-of-``repeats`` forward time without / with the edit (applied with ``form``)."""
    from circuits import model as M
    from circuits.editing import apply_edit

    base, edited = [], []
    M.run(model, tokens)  # warm-up
    for _ in range(repeats):
        t = time.perf_counter()
        M.run(model, tokens)
        base.append(time.perf_counter() - t)
        with apply_edit(model, edit, form=form):  # type: ignore[arg-type]
            t = time.perf_counter()
            M.run(model, tokens)
            edited.append(time.perf_counter() - t)
    b, e = min(base), min(edited)
    return {"base_s": round(b, 5), "edited_s": round(e, 5), "ratio": round(e / b, 4)}


def _gate_edit(model: Any, components: tuple, d: int) -> Any:
    from circuits.editing.build import new_edit

    g = torch.Generator().manual_seed(0)
    tensors = {"gate": torch.rand(d, generator=g), "shift": torch.randn(d, generator=g) * 0.1, "mask": torch.rand(d, generator=g)}
    return new_edit("aifs", components, tensors, model, {"lam": 0.5})


def main() -> None:
    torch.set_num_threads(1)
    from circuits import model as M
    from circuits.sites import HeadRef, ResidRef

    if sys.argv[1:] == ["smollm2"]:
        model = M.load_model("smollm2-135m")
        tokens = M.tokens_of(model, "Review: Omar said the hotel room was clean and quiet. Sentiment:").reshape(1, -1).repeat(8, 1)
        cases = {"resid L23 (hooks)": ((ResidRef(23, None),), model.shape.d_model, "auto")}
    else:
        from circuits.planted import load_planted, spurious_tokens

        model = load_planted("spurious")
        tokens = spurious_tokens(256, seed=0, p_spurious=0.95, p_signal=0.85)[0]
        heads = tuple(HeadRef(1, h) for h in range(4))
        cases = {
            "resid L1 (hooks)": ((ResidRef(1, None),), model.shape.d_model, "auto"),
            "heads L1 (hooks)": (heads, 4 * model.shape.d_head, "auto"),
            "heads L1 (baked)": (heads, 4 * model.shape.d_head, "weights"),
        }
    print(f"{M.model_name(model)}: forward of {tuple(tokens.shape)} tokens, best of {REPEATS}, 1 thread")
    for name, (comps, d, form) in cases.items():
        r = overhead(model, _gate_edit(model, comps, d), tokens, form=form)
        print(f"  {name:20s} base {r['base_s'] * 1e3:8.2f} ms  edited {r['edited_s'] * 1e3:8.2f} ms  ratio {r['ratio']:.3f}")


if __name__ == "__main__":
    main()
