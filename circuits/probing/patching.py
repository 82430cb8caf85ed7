"""Exact activation patching over components, batched over prompts and interventions.

Activation patching (Meng et al. 2022; Wang et al. 2023; Heimersheim & Nanda 2024, "How to use and
interpret activation patching") runs a model on a *corrupted* prompt while copying one component's
activation from the *clean* run (**denoising**), or runs the clean prompt with one activation from the
corrupted run (**noising**), and records the behaviour metric.

Effects are normalised so that ``0`` is the corrupted run and ``1`` the clean run:

    effect_i(c) = (m(patched_i) - m(corrupted_i)) / (mean_j m(clean_j) - mean_j m(corrupted_j))

for prompt ``i``. Its mean over prompts equals TransformerLens' normalised patching metric
``(mean m(patched) - mean m(corrupted)) / (mean m(clean) - mean m(corrupted))`` exactly, and the
per-prompt values are kept for statistics.

Speed: several interventions are packed into one forward along the batch axis (copy ``k`` of the
batch carries the patch of component ``k``), the same trick ROME's causal tracing uses for its noised
copies. Prompts are grouped by token length so that no padding is needed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from circuits import model as M
from circuits.metrics import Metric
from circuits.sites import Component, HeadRef, MlpRef, NeuronRef, ResidRef
from circuits.suites import PromptPair

logger = logging.getLogger(__name__)

Direction = Literal["denoising", "noising"]


class PairError(ValueError):
    """Prompt pairs are empty or a clean prompt and its corrupted prompt differ in token length."""


@dataclass(frozen=True)
class PatchingResult:
    """Effects of patching each component, per prompt.

    Attributes:
        components: The patched components, in the order of ``effects`` rows.
        effects: Normalised effect per component and prompt (0 = corrupted run, 1 = clean run).
        clean_metric: Metric on each clean prompt (metric units, e.g. logits).
        corrupted_metric: Metric on each corrupted prompt.
        direction: ``"denoising"`` (corrupted run ← clean activation) or ``"noising"``.
    """

    components: tuple[Component, ...]
    effects: Float[Tensor, "component prompt"]
    clean_metric: Float[Tensor, " prompt"]
    corrupted_metric: Float[Tensor, " prompt"]
    direction: Direction

    @property
    def mean_effects(self) -> Float[Tensor, " component"]:
        """Mean normalised effect of each component over prompts."""
        return self.effects.mean(dim=1)

    def effect_of(self, component: Component) -> float:
        """Mean normalised effect of one component.

        Raises:
            KeyError: The component was not patched.
        """
        try:
            i = self.components.index(component)
        except ValueError:
            raise KeyError(f"{component} was not patched") from None
        return float(self.effects[i].mean())


@dataclass(frozen=True)
class _Group:
    """Prompt pairs of one token length, tokenised."""

    indices: list[int]
    clean: Int[Tensor, "batch pos"]
    corrupted: Int[Tensor, "batch pos"]


def tokenize_pairs(model: Any, pairs: Sequence[PromptPair]) -> list[_Group]:
    """Tokenise prompt pairs, grouped by length, checking each pair is aligned token for token.

    Args:
        model: A model with a tokenizer.
        pairs: The prompt pairs.

    Returns:
        Groups of equal-length pairs; ``indices`` give each row's position in ``pairs``.

    Raises:
        PairError: ``pairs`` is empty, or a clean prompt and its corrupted prompt differ in length.
    """
    if not pairs:
        raise PairError("no prompt pairs given")
    clean_len = M.token_lengths(model, [p.clean for p in pairs])
    corr_len = M.token_lengths(model, [p.corrupted for p in pairs])
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, (a, b) in enumerate(zip(clean_len, corr_len)):
        if a != b:
            p = pairs[i]
            raise PairError(
                f"pair {i} is not aligned: {p.clean!r} is {a} tokens but {p.corrupted!r} is {b}; "
                "clean and corrupted prompts must have the same token length"
            )
        by_len[a].append(i)
    groups = []
    for _, idx in sorted(by_len.items()):
        groups.append(
            _Group(
                indices=idx,
                clean=M.to_tokens(model, [pairs[i].clean for i in idx]),
                corrupted=M.to_tokens(model, [pairs[i].corrupted for i in idx]),
            )
        )
    return groups


def _index(component: Component) -> tuple[Any, ...]:
    """The slice of the component's hook activation (after the batch axis) that it owns."""
    if isinstance(component, HeadRef):
        return (slice(None), component.head)
    if isinstance(component, NeuronRef):
        return (slice(None), component.index)
    if isinstance(component, ResidRef):
        return (component.pos,)
    if isinstance(component, MlpRef):
        return ()
    raise TypeError(f"cannot patch {component!r}")


def _packed_hooks(
    chunk: Sequence[Component], source: dict[str, Tensor], batch: int
) -> list[tuple[str, M.HookFn]]:
    """One hook per hook name; copy ``k`` of the batch gets component ``chunk[k]`` from ``source``."""
    rows: dict[str, list[tuple[int, tuple[Any, ...]]]] = defaultdict(list)
    for k, comp in enumerate(chunk):
        rows[comp.hook_name].append((k, _index(comp)))

    def make(name: str, targets: list[tuple[int, tuple[Any, ...]]]) -> M.HookFn:
        src = source[name]

        def hook(act: Tensor, hook: Any) -> Tensor:
            act = act.clone()
            for k, idx in targets:
                rows_k = slice(k * batch, (k + 1) * batch)
                act[(rows_k, *idx)] = src[(slice(None), *idx)]
            return act

        return hook

    return [(name, make(name, targets)) for name, targets in rows.items()]


def patch_tokens(
    model: Any,
    clean: Int[Tensor, "batch pos"],
    corrupted: Int[Tensor, "batch pos"],
    metric: Metric,
    components: Sequence[Component],
    *,
    direction: Direction = "denoising",
    max_rows: int = 192,
    bar: Any = None,
) -> tuple[Float[Tensor, "component batch"], Float[Tensor, " batch"], Float[Tensor, " batch"]]:
    """Raw patched metrics for one batch of aligned token pairs (the core of :func:`activation_patching`).

    Args:
        model: A ``TransformerBridge``.
        clean: Clean token ids.
        corrupted: Corrupted token ids, same shape.
        metric: Behaviour metric, logits → ``[batch]``.
        components: Components to patch.
        direction: ``"denoising"`` or ``"noising"``.
        max_rows: Upper bound on prompts × interventions in one forward.
        bar: Optional tqdm bar, advanced once per forward.

    Returns:
        ``(patched, clean_metric, corrupted_metric)``: the metric after patching each component
        on each prompt, and the two unpatched baselines (metric units).

    Raises:
        PairError: ``clean`` and ``corrupted`` differ in shape or are empty.
    """
    if clean.shape != corrupted.shape or clean.numel() == 0:
        raise PairError(f"clean {tuple(clean.shape)} and corrupted {tuple(corrupted.shape)} tokens must match and be non-empty")
    b = clean.shape[0]
    names = sorted({c.hook_name for c in components})
    clean_logits, clean_cache = M.run_with_cache(model, clean, names)
    corr_logits, corr_cache = M.run_with_cache(model, corrupted, names)
    base, source = (corrupted, clean_cache) if direction == "denoising" else (clean, corr_cache)
    chunk_size = max(1, max_rows // b)
    patched = torch.zeros(len(components), b)
    for start in range(0, len(components), chunk_size):
        chunk = components[start : start + chunk_size]
        logits = M.run(model, base.repeat(len(chunk), 1), _packed_hooks(chunk, source, b))
        patched[start : start + len(chunk)] = metric(logits).float().view(len(chunk), b)
        if bar is not None:
            bar.update(1)
    return patched, metric(clean_logits).float(), metric(corr_logits).float()


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
    # Both directions report on one scale. In noising, an important component is one whose
    # effect falls well below 1.
    return (patched - corrupted_metric) / denom


def activation_patching(
    model: Any,
    pairs: Sequence[PromptPair],
    metric: Metric,
    components: Sequence[Component],
    *,
    direction: Direction = "denoising",
    max_rows: int = 192,
    progress: bool = True,
) -> PatchingResult:
    """Patch every component, one at a time, on every prompt pair.

    Args:
        model: A ``TransformerBridge``.
        pairs: Aligned clean/corrupted prompt pairs.
        metric: Behaviour metric, logits → ``[batch]``.
        components: Components to patch (heads patch all positions of ``hook_z[:, :, h]``).
        direction: ``"denoising"`` patches clean activations into the corrupted run; ``"noising"``
            patches corrupted activations into the clean run.
        max_rows: Upper bound on the packed batch (prompts × interventions) of one forward.
        progress: Show a progress bar.

    Returns:
        Per-prompt normalised effects (0 = corrupted run, 1 = clean run).

    Raises:
        PairError: Empty or misaligned pairs.
        ValueError: No components, or the clean and corrupted runs have the same mean metric.
    """
    if not components:
        raise ValueError("no components to patch")
    groups = tokenize_pairs(model, pairs)
    n = len(pairs)
    patched = torch.zeros(len(components), n)
    clean_m = torch.zeros(n)
    corr_m = torch.zeros(n)
    total = sum(-(-len(components) // max(1, max_rows // len(g.indices))) for g in groups)
    with tqdm(total=total, desc=f"activation patching ({direction})", disable=not progress, leave=False) as bar:
        for group in groups:
            idx = torch.tensor(group.indices)
            p, c, k = patch_tokens(
                model, group.clean, group.corrupted, metric, components, direction=direction, max_rows=max_rows, bar=bar
            )
            patched[:, idx], clean_m[idx], corr_m[idx] = p, c, k
    return PatchingResult(
        components=tuple(components),
        effects=normalise(patched, clean_m, corr_m),
        clean_metric=clean_m,
        corrupted_metric=corr_m,
        direction=direction,
    )
