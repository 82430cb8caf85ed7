"""Exact activation patching over components, batched over prompts and interventions.

Activation patching (Meng et al. 2022; Wang et al. 2023; Heimersheim & Nanda 2024, "How to use and
interpret activation patching") runs a model on a *corrupted* prompt while copying one component's
activation from the *clean* run (**denoising**), or runs the clean prompt with one activation from the
corrupted run (**noising**), and records the behaviour metric. Other interventions (zero, mean,
resample, noise, scaling, steering; :mod:`circuits.interventions`) replace the copy; they act
on the base run (corrupted when denoising, clean when noising).

Effects are normalised so that ``0`` is the corrupted run and ``1`` the clean run:

    effect_i(c) = (m(patched_i) - m(corrupted_i)) / (mean_j m(clean_j) - mean_j m(corrupted_j))

for prompt ``i``. Its mean over prompts equals TransformerLens' normalised patching metric
``(mean m(patched) - mean m(corrupted)) / (mean m(clean) - mean m(corrupted))`` exactly, and the
per-prompt values are kept for statistics. In noising, an important component is one whose effect
falls well below 1.

Speed: (1) patching a layer-``L`` component only reruns blocks ``L..n-1``, starting from the cached
residual entering block ``L`` (:func:`circuits.model.run_from_layer`); (2) several interventions are
packed into one forward along the batch axis (copy ``k`` of the batch carries the patch of component
``k``), the trick ROME's causal tracing uses for its noised copies. Prompts are grouped by token
length so that no padding is needed.

Robustness: with ``checkpoint_dir`` the raw results of each layer are saved (safetensors, atomically)
as soon as the layer is done, under a key that hashes the model fingerprint, the tokens, the
components, the intervention and the seed; an interrupted scan rerun with the same arguments loads
finished layers and computes only the rest, giving identical numbers. A checkpoint that fails
validation is discarded with a warning and recomputed (:mod:`circuits.probing.checkpoints`). Stochastic interventions draw
from a generator seeded by ``(seed, component index, group)``, so results do not depend on packing or
on resumption.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from circuits import model as M
from circuits.interventions import Swap, SweepIntervention
from circuits.metrics import MetricLike, as_metric, call_metric
from circuits.model import HookedLM
from circuits.probing import checkpoints
from circuits.probing.effects import Direction, Effects, Method
from circuits.probing.executor import (
    Executor,
    InProcess,
    PatchJob,
    PatchUnit,
    job_caches,
)
from circuits.probing.pairs import (  # noqa: F401 - re-exported: where the patching engine's inputs come from
    PairError,
    TokenGroup,
    mean_activations,
    position_mean_activations,
    tokenize_pairs,
)
from circuits.probing.sweep import patch_from_source, sweep_cache_names  # noqa: F401 - re-exported
from circuits.sites import Component
from circuits.suites import PromptPair

logger = logging.getLogger(__name__)

def patch_tokens(
    model: HookedLM,
    clean: Int[Tensor, "batch pos"],
    corrupted: Int[Tensor, "batch pos"],
    metric: MetricLike,
    components: Sequence[Component],
    *,
    direction: Direction = "denoising",
    intervention: SweepIntervention = Swap(),
    max_rows: int = 192,
    seed: int = 0,
    salt: int = 0,
    bar: Any = None,
) -> tuple[Float[Tensor, "component batch"], Float[Tensor, " batch"], Float[Tensor, " batch"]]:
    """Raw patched metrics for one batch of aligned token pairs (the core of :func:`activation_patching`).

    Args:
        model: A ``TransformerBridge``.
        clean: Clean token ids.
        corrupted: Corrupted token ids, same shape.
        metric: Behaviour metric, logits → ``[batch]``.
        components: Components to patch.
        direction: ``"denoising"`` (base run = corrupted) or ``"noising"`` (base run = clean).
        intervention: What to put in place of each component (default: the counterfactual activation).
        max_rows: Upper bound on prompts × interventions in one forward.
        seed: Seed for stochastic interventions.
        salt: Extra seed component (the engine passes the group index).
        bar: Optional tqdm bar, advanced once per forward.

    Returns:
        ``(patched, clean_metric, corrupted_metric)``: the metric after patching each component
        on each row, and the two unpatched baselines (metric units; rows, not yet combined into pairs).

    Raises:
        PairError: ``clean`` and ``corrupted`` differ in shape or are empty.
    """
    if clean.shape != corrupted.shape or clean.numel() == 0:
        raise PairError(f"clean {tuple(clean.shape)} and corrupted {tuple(corrupted.shape)} tokens must match and be non-empty")
    metric = as_metric(metric)
    names = sweep_cache_names(components)
    clean_logits, clean_cache = M.run_with_cache(model, clean, names)
    corr_logits, corr_cache = M.run_with_cache(model, corrupted, names)
    base, source = (corr_cache, clean_cache) if direction == "denoising" else (clean_cache, corr_cache)
    prompts = torch.arange(clean.shape[0])
    patched = patch_from_source(model, base, source, metric, components, intervention, max_rows, seed, salt, bar, prompts)
    return patched, call_metric(metric, clean_logits, prompts).float(), call_metric(metric, corr_logits, prompts).float()


def normalise(
    patched: Float[Tensor, "component prompt"],
    clean_metric: Float[Tensor, " prompt"],
    corrupted_metric: Float[Tensor, " prompt"],
) -> Float[Tensor, "component prompt"]:
    """Normalise raw patched metrics to 0 = corrupted run, 1 = clean run (see module docstring).

    Raises:
        ValueError: The clean and corrupted runs have the same mean metric.
    """
    denom = float(clean_metric.mean() - corrupted_metric.mean())
    if abs(denom) < 1e-6:
        raise ValueError("clean and corrupted runs have the same mean metric; there is no behaviour to patch")
    return (patched - corrupted_metric) / denom


def _run_key(model: HookedLM, groups: list[TokenGroup], components: Sequence[Component], intervention: SweepIntervention, direction: str, seed: int) -> str:
    digest = hashlib.sha256()
    digest.update(M.fingerprint(model).encode())
    for g in groups:
        digest.update(g.clean.numpy().tobytes() + g.corrupted.numpy().tobytes())
    digest.update("|".join(map(str, components)).encode())
    digest.update(f"{intervention!r}|{direction}|{seed}".encode())
    for name, t in sorted(intervention.tensors().items()):
        digest.update(name.encode() + t.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def activation_patching(
    model: HookedLM,
    pairs: Sequence[PromptPair],
    metric: MetricLike,
    components: Sequence[Component],
    *,
    direction: Direction = "denoising",
    intervention: SweepIntervention = Swap(),
    max_rows: int = 192,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
) -> Effects:
    """Patch every component, one at a time, on every prompt pair.

    Args:
        model: A ``TransformerBridge``.
        pairs: Aligned clean/corrupted prompt pairs.
        metric: Behaviour metric, logits → ``[batch]``.
        components: Components to patch (e.g. heads patch ``hook_z[:, :, h]`` at all positions).
        direction: ``"denoising"`` patches into the corrupted run; ``"noising"`` into the clean run.
        intervention: What replaces the activation (default :class:`Swap`: the counterfactual run's).
        max_rows: Upper bound on the packed batch (prompts × interventions) of one forward.
        seed: Seed for stochastic interventions (same seed → identical numbers).
        checkpoint_dir: Save each finished layer there and resume from it (see module docstring).
        progress: Show a progress bar.

    Returns:
        Per-prompt normalised effects (0 = corrupted run, 1 = clean run), in the order of ``pairs``.

    Raises:
        PairError: Empty or misaligned pairs.
        ValueError: No components, or the clean and corrupted runs have the same mean metric.
    """
    return patch_groups(
        model, tokenize_pairs(model, pairs), metric, components, direction=direction, intervention=intervention,
        max_rows=max_rows, seed=seed, checkpoint_dir=checkpoint_dir, progress=progress,
    )


def patch_groups(
    model: HookedLM,
    groups: Sequence[TokenGroup],
    metric: MetricLike,
    components: Sequence[Component],
    *,
    direction: Direction = "denoising",
    intervention: SweepIntervention = Swap(),
    max_rows: int = 192,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    executor: Executor | None = None,
    normalised: bool = True,
) -> Effects:
    """:func:`activation_patching` on already tokenised groups (see :func:`tokenize_pairs`).

    The sweep is split into one work unit per layer, run by ``executor`` (default: in this process;
    :class:`circuits.probing.executor.RayExecutor` runs them on a Ray cluster with the same result).
    With ``normalised=False`` the effects are the metric after each intervention, in the metric's own
    unit (its ``unit`` attribute, e.g. ``"nats"`` for a KL; else ``"metric"``), for metrics that are
    not a behaviour with a clean/corrupted contrast.

    Raises:
        PairError: No groups.
        ValueError: No components, or (normalised) no behaviour to patch.
    """
    if not components:
        raise ValueError("no components to patch")
    if not groups:
        raise PairError("no prompt pairs given")
    metric = as_metric(metric)
    groups = list(groups)
    n = sum(len(g.indices) for g in groups)
    patched = torch.zeros(len(components), n)
    by_layer: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(components):
        by_layer[c.layer].append(i)
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = checkpoints.open_directory(Path(checkpoint_dir) / _run_key(model, groups, components, intervention, direction, seed))

    job = PatchJob(tuple(groups), metric, tuple(components), direction, intervention, max_rows, seed, key=uuid.uuid4().hex)
    caches = job_caches(model, job)  # two cached forwards per group: the clean/corrupted metrics, and in-process units' activations
    clean_m, corr_m = caches.clean_metric, caches.corrupted_metric
    todo: list[PatchUnit] = []
    for layer, comp_idx in sorted(by_layer.items()):
        saved = None if ckpt is None else checkpoints.load_layer(checkpoints.layer_path(ckpt, layer), (len(comp_idx), n))
        if saved is not None:  # a bad checkpoint is discarded with a warning and the layer recomputed
            patched[comp_idx] = saved
        else:
            todo.append(PatchUnit(layer, tuple(comp_idx)))
    total = sum(-(-len(u.indices) // max(1, max_rows // len(g.indices))) for u in todo for g in groups)
    with tqdm(total=total, desc=f"activation patching ({direction}, {intervention.name})", disable=not progress, leave=False) as bar:
        # Each unit's rows go to its components' indices, so the order units finish in does not matter.
        for unit, rows in (executor or InProcess()).run(model, job, todo, caches, bar):
            patched[list(unit.indices)] = rows
            if ckpt is not None:
                checkpoints.save_layer(checkpoints.layer_path(ckpt, unit.layer), rows)
    # Rows → pairs where a metric scores a pair over several rows (e.g. answer vs wrong-answer log-prob).
    patched, clean_m, corr_m = (metric.to_pairs(x) for x in (patched, clean_m, corr_m))
    return Effects(
        components=tuple(components),
        effects=normalise(patched, clean_m, corr_m) if normalised else patched,
        unit="normalised" if normalised else metric.info.unit,
        method=Method("activation_patching", intervention=intervention.name, direction=direction, metric=metric.info.describe(), seeds=(seed,)),  # type: ignore[arg-type]
        clean_metric=clean_m,
        corrupted_metric=corr_m,
        patched=patched,
    )
