"""The core of the exact patching engine: packed interventions, run from the first patched layer.

Copy ``k`` of a packed batch carries component ``k``'s intervention (the batching trick of ROME's
causal tracing), and each chunk of components restarts from the cached residual entering its lowest
layer (:func:`circuits.model.run_from_layer`). :mod:`circuits.probing.patching` (the public sweep),
:mod:`circuits.probing.executor` (work units, in-process or on Ray) and the spurious scores build on
these functions.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuits import model as M
from circuits.interventions import SweepIntervention, at_site
from circuits.metrics import Metric, call_metric
from circuits.model import HookedLM
from circuits.sites import Component, activation_index, hook_name


def _generator(seed: int, component: Component, salt: int) -> torch.Generator:
    """A generator that depends only on (seed, component, prompt group): packing- and resume-invariant."""
    digest = hashlib.sha256(f"{seed}|{component}|{salt}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:7], "little"))


def packed_hooks(
    model: HookedLM,
    chunk: Sequence[Component],
    source: dict[str, Tensor],
    batch: int,
    intervention: SweepIntervention,
    seed: int,
    salt: int,
) -> list[tuple[str, M.HookFn]]:
    """One hook per hook name; copy ``k`` of the batch gets component ``chunk[k]``'s intervention."""
    shape = M.shape_of(model)
    rows: dict[str, list[tuple[int, Component, tuple[Any, ...]]]] = defaultdict(list)
    for k, comp in enumerate(chunk):
        rows[comp.hook_name].append((k, comp, activation_index(comp, shape.n_heads, shape.n_kv_heads)))

    def make(name: str, targets: list[tuple[int, Component, tuple[Any, ...]]]) -> M.HookFn:
        def hook(act: Tensor, hook: Any) -> Tensor:
            act = act.clone()
            for k, comp, idx in targets:
                where = (slice(k * batch, (k + 1) * batch), *idx)
                iv = at_site(intervention, name, idx)
                act[where] = iv(act[where], source[name][(slice(None), *idx)], _generator(seed, comp, salt))
            return act

        return hook

    return [(name, make(name, targets)) for name, targets in rows.items()]


def sweep_cache_names(components: Sequence[Component]) -> list[str]:
    """Hook names to cache: every component's activation, and the residual entering each layer."""
    layers = {c.layer for c in components}
    return sorted({c.hook_name for c in components} | {hook_name("resid_pre", layer) for layer in layers})


def patch_from_source(
    model: HookedLM,
    base: dict[str, Tensor],
    source: dict[str, Tensor],
    metric: Metric,
    components: Sequence[Component],
    intervention: SweepIntervention,
    max_rows: int,
    seed: int,
    salt: int,
    bar: Any,
    prompts: Tensor,
) -> Float[Tensor, "component batch"]:
    """Run the base run once per packed chunk of components; return the patched metric.

    ``base`` is the base run's cache; each chunk restarts from the residual entering its lowest layer
    (:func:`circuits.model.run_from_layer`), so earlier blocks are not recomputed. ``prompts`` gives
    each base row's prompt index, passed on to the metric for every packed copy.
    """
    b = next(iter(base.values())).shape[0]
    chunk_size = max(1, max_rows // b)
    last, vocab = metric.info.positions, metric.info.vocab
    patched = torch.zeros(len(components), b)
    for start in range(0, len(components), chunk_size):
        chunk = components[start : start + chunk_size]
        hooks = packed_hooks(model, chunk, source, b, intervention, seed, salt)
        first = min(c.layer for c in chunk)
        resid = base[hook_name("resid_pre", first)]
        with torch.no_grad():
            logits = M.run_from_layer(model, resid.repeat(len(chunk), 1, 1), first, hooks, last=last, vocab=vocab)
        patched[start : start + len(chunk)] = call_metric(metric, logits, prompts.repeat(len(chunk))).float().cpu().view(len(chunk), b)
        if bar is not None:
            bar.update(1)
    return patched
