"""Our batched activation patching against TransformerLens's own patching functions (shared by the family and shipped-model tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformer_lens import patching

from circuits import model as M
from circuits.probing.patching import normalise, patch_tokens
from circuits.sites import Component


def mlp_sweep(lm: M.HookedLM, corrupted: torch.Tensor, cache) -> Callable:
    """TL's generic patching of every MLP output (all positions), clean into corrupted."""
    return lambda m: patching.generic_activation_patch(
        lm.bridge, corrupted, cache, m, patch_setter=lambda corrupted_act, index, clean_act: clean_act.clone(),
        activation_name="mlp_out", index_axis_names=["layer"])


def assert_patching_matches(lm: M.HookedLM, clean, corrupted, metric, sweeps: Sequence[tuple[Sequence[Component], Callable]], atol: float) -> None:
    """For each ``(components, reference)``: our normalised denoising effects equal TL's, component for component."""
    for comps, reference in sweeps:
        p, c, k = patch_tokens(lm, clean, corrupted, metric, comps)
        cm, km = c.mean(), k.mean()
        ours = normalise(p, c, k).mean(1)
        theirs = reference(lambda logits, cm=cm, km=km: (metric(logits).mean() - km) / (cm - km)).reshape(-1)
        torch.testing.assert_close(ours, theirs, atol=atol, rtol=0)
