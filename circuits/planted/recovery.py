"""Recall, precision and faithfulness of the components each probing method flags on a planted model.

Flag rules: methods that estimate the normalised effect (exact activation patching, attribution
patching, EAP-IG) flag a head when its mean effect is ≥ ``threshold`` (0.1 = a tenth of the
clean−corrupted difference); gradient sensitivity has no such scale, so it flags its top
``|planted|`` heads. Faithfulness of a flagged set ``C`` (Wang et al. 2023; Conmy et al. 2023): every
head outside ``C`` is mean-ablated (means over the clean and corrupted prompts, all positions) and
``(m(C) − m(∅)) / (m(all) − m(∅))`` is reported, ``m`` the mean metric on the clean prompts, ``∅`` every
head ablated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from circuits import model as M
from circuits.editing import apply_edit
from circuits.editing.build import new_edit
from circuits.metrics import Metric, call_metric
from circuits.model import HookedLM
from circuits.probing.attribution import attribution_patching, gradient_sensitivity
from circuits.probing.causal_tracing import trace_grid, trace_tokens
from circuits.probing.patching import (
    TokenGroup,
    patch_groups,
    position_mean_activations,
)
from circuits.sites import HeadRef, all_heads


@dataclass(frozen=True)
class Recovery:
    """How well one method recovers a planted circuit.

    Attributes:
        method: Method name.
        flagged: Heads it flags.
        recall: |flagged ∩ planted| / |planted|.
        precision: |flagged ∩ planted| / |flagged| (1.0 when nothing is flagged is not claimed: 0.0).
        faithfulness: Metric recovered by the flagged heads alone (see module docstring).
    """

    method: str
    flagged: frozenset[HeadRef]
    recall: float
    precision: float
    faithfulness: float


def _metric_with_only(model: HookedLM, keep: frozenset[HeadRef], group: TokenGroup, metric: Metric) -> float:
    """Mean metric on the clean prompts with every head not in ``keep`` mean-ablated."""
    shape = M.shape_of(model)
    heads = tuple(h for h in all_heads(shape.n_layers, shape.n_heads) if h not in keep)
    if not heads:
        return float(call_metric(metric, M.run(model, group.clean), torch.tensor(group.indices)).mean())
    means = position_mean_activations(model, [group], sorted({h.hook_name for h in heads}))
    edit = new_edit("ablation", heads, {str(h): means[h.hook_name][h.head] for h in heads}, model, {"mode": "mean"})
    with apply_edit(model, edit):
        return float(call_metric(metric, M.run(model, group.clean), torch.tensor(group.indices)).mean())


@torch.no_grad()
def faithfulness(model: HookedLM, keep: frozenset[HeadRef], group: TokenGroup, metric: Metric) -> float:
    """Fraction of the metric the heads in ``keep`` recover with every other head mean-ablated."""
    empty = _metric_with_only(model, frozenset(), group, metric)
    full = _metric_with_only(model, frozenset(all_heads(M.shape_of(model).n_layers, M.shape_of(model).n_heads)), group, metric)
    return (_metric_with_only(model, keep, group, metric) - empty) / (full - empty)


def recover(model: HookedLM, group: TokenGroup, metric: Metric, planted: frozenset[HeadRef], *, threshold: float = 0.1, ig_steps: int = 5) -> list[Recovery]:
    """Flag heads with each probing method and score the flags against the planted circuit.

    Args:
        model: A planted model.
        group: Clean/corrupted prompts of one length.
        metric: The behaviour metric.
        planted: The ground-truth heads.
        threshold: Flagging threshold on the mean normalised effect.
        ig_steps: EAP-IG interpolation steps.

    Returns:
        One :class:`Recovery` per method: exact patching, attribution patching, EAP-IG, gradient
        sensitivity.
    """
    shape = M.shape_of(model)
    heads = all_heads(shape.n_layers, shape.n_heads)
    scores = {
        "exact activation patching": patch_groups(model, [group], metric, heads, progress=False).effects.mean(1),
        "attribution patching": attribution_patching(model, [group], metric, heads, progress=False).effects.mean(1),
        f"EAP-IG ({ig_steps} steps)": attribution_patching(model, [group], metric, heads, ig_steps=ig_steps, progress=False).effects.mean(1),
    }
    flagged = {name: frozenset(h for h, s in zip(heads, v.tolist()) if s >= threshold) for name, v in scores.items()}
    sens = gradient_sensitivity(model, [group], metric, heads, progress=False).effects.mean(1)
    flagged["gradient sensitivity (top-|planted|)"] = frozenset(heads[i] for i in sens.argsort(descending=True)[: len(planted)].tolist())
    out = []
    for name, f in flagged.items():
        hit = len(f & planted)
        out.append(Recovery(name, f, hit / len(planted), hit / len(f) if f else 0.0, faithfulness(model, f, group, metric)))
    return out


def traced_layers(
    model: HookedLM, prompts: Tensor, targets: Tensor, subject: list[int], *, threshold: float = 0.1, n_samples: int = 5
) -> tuple[frozenset[int], Tensor]:
    """Causal tracing (Meng et al. 2022) of attention outputs, at layer granularity.

    The subject positions' embeddings are noised; each (layer, position) attention output is restored
    from the clean run (window 1). A layer is flagged when restoring it at some position brings back at
    least ``threshold`` of the target probability lost to the noise, averaged over prompts. Tracing
    restores whole attention layers, so it is scored against the planted heads' layers.

    Args:
        model: A planted model.
        prompts: ``[n, pos]`` clean prompts.
        targets: ``[n]`` target token per prompt.
        subject: Positions to noise (the same in every prompt).
        threshold: Flagging threshold on the restored fraction.
        n_samples: Noise draws per prompt.

    Returns:
        ``(flagged layers, restored fraction [layer, pos] averaged over prompts)``.
    """
    grids = []
    for row, target in zip(prompts, targets.tolist()):
        t = trace_tokens(model, row[None], int(target), subject, kind="attn", n_samples=n_samples, progress=False)
        clean, corrupted = float(t.clean_metric[0]), float(t.corrupted_metric[0])  # type: ignore[index]
        grids.append(trace_grid(t, restored=False) / max(clean - corrupted, 1e-6))
    restored = torch.stack(grids).mean(0)
    return frozenset(int(layer) for layer in (restored.amax(1) >= threshold).nonzero().flatten().tolist()), restored
