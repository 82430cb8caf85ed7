"""Training objectives of :func:`circuits.editing.train.train_edit`: harm, invariance, ICP's contrastive
objective, and the two preservation terms.

* ``"gap"``: the mean squared bias gap ``(m(x) − m(x'))²`` (metric units²).
* ``"invariance"``: the symmetric KL between the next-token distributions on ``x`` and ``x'``.
* :class:`Contrastive` (seeds 000 and 001, ICP's contrastive invariant learning):
  ``L = w_task · L_task + λ · L_triplet + μ · KL(M(x) ‖ M(x'))``.

  - ``L_task`` is the two-way cross-entropy ``softplus(−m)`` of a metric oriented *answer − wrong
    answer* (e.g. :class:`~circuits.metrics.AnswerLogitDiff`, or :class:`~circuits.metrics.LogitDiff`
    with the answer as the positive side), on ``x`` and on ``x'`` (the label does not change with the
    spurious feature).
  - ``L_triplet`` (seed 000 §Contrastive Invariant Learning): ``Σ max(0, sim(e(x), e(x⁻)) −
    sim(e(x), e(x⁺)) + δ)``, here with the Euclidean distance as the (negative) similarity, i.e.
    :func:`torch.nn.functional.triplet_margin_loss`. ``e(·)`` is the final residual stream at the
    answer position; the adapter that changes it is the edit (seed 000: "an adapter layer to preserve
    pretrained weights"). Interpretations: the positive ``x⁺`` is the swapped counterfactual ``x'``
    (same label, only the spurious feature changed); the negative ``x⁻`` is a prompt of the batch
    whose answer differs (the next such row; without per-prompt answers, the next row), the
    well-defined reading of "inputs with degraded outputs under interventions": its output is wrong for
    ``x``'s label.
  - ``KL(M(x) ‖ M(x'))`` (seed 001 §2.2) with ``x' = M⁻¹(M(x | do(h = v)))`` for the components
    with ``S > τ_c``. Interpretation: ``M⁻¹`` is taken as exact, so ``M(x')`` is ``M(x | do(h = v))``:
    the run on ``x`` with those components (:attr:`Contrastive.swap`) set to their values ``v`` on the
    counterfactual prompt; with no components given, ``x'`` is the counterfactual prompt itself.
* Preservation on neutral text, weight ``λ`` (:attr:`~circuits.editing.train.TrainConfig.preservation`):
  ``"kl"``, the per-token ``KL(p_unedited ‖ p_edited)``; or ``"weights"``, seed 004's
  ``‖W′x − Wx‖₂`` (§2.4 A) for a low-rank edit ``W′ = W + α B A``: the mean over neutral tokens of
  ``‖α B A x‖₂`` summed over the edited matrices, ``x`` the unedited model's input to ``W``
  (:func:`weight_preservation`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from circuits import model as M
from circuits.editing.edit import EditError
from circuits.interventions import Swap, apply_at
from circuits.metrics import Metric, MetricLike, as_metric, call_metric, kl_divergence
from circuits.model import HookedLM
from circuits.probing.patching import TokenGroup
from circuits.sites import (
    Component,
    HeadRef,
    NeuronRef,
    activation_index,
    hook_name,
    parse_component,
)

Objective = Literal["gap", "invariance"]
Preservation = Literal["kl", "weights"]


@dataclass(frozen=True)
class Contrastive:
    """ICP's contrastive objective (see module docstring).

    Attributes:
        task: Weight of the task loss.
        triplet: λ of the triplet term (seed 000: λ ∈ [0.1, 0.5]).
        margin: δ, the triplet margin.
        consistency: μ, the weight of seed 001's ``KL(M(x) ‖ M(x'))``.
        swap: Components with ``S > τ_c`` whose counterfactual values produce ``x'``.
    """

    task: float = 1.0
    triplet: float = 0.3
    margin: float = 1.0
    consistency: float = 0.0
    swap: tuple[Component, ...] = ()

    def hyperparameters(self) -> dict[str, float | str]:
        """Scalars for the edit's manifest."""
        return {"objective": "contrastive", "task_weight": self.task, "triplet": self.triplet, "margin": self.margin,
                "consistency": self.consistency, "consistency_swap": ",".join(map(str, self.swap))}

    def loss(self, model: HookedLM, group: TokenGroup, rows: Tensor, metric: Metric) -> Float[Tensor, ""]:
        """The objective on rows ``rows`` of ``group`` (differentiable in the attached edit)."""
        clean, corr = group.clean[rows], group.corrupted[rows]
        prompts = torch.tensor(group.indices)[rows]
        store: dict[str, Tensor] = {}
        resid = hook_name("resid_post", M.shape_of(model).n_layers - 1)

        def keep(act: Tensor, hook: Any) -> Tensor:
            store["e"] = act[:, -1]
            return act

        logits = M.run(model, torch.cat([clean, corr]), [(resid, keep)])
        n = len(rows)
        a, b = logits[:n], logits[n:]
        loss = self.task * 0.5 * (F.softplus(-call_metric(metric, a, prompts)).mean() + F.softplus(-call_metric(metric, b, prompts)).mean())
        if self.triplet > 0 and n > 1:
            e = store["e"].float()
            neg = e[:n][_negatives(metric, prompts)]
            loss = loss + self.triplet * F.triplet_margin_loss(e[:n], e[n:], neg, margin=self.margin)
        if self.consistency > 0:
            p = a[:, -1].float().log_softmax(-1)
            q = (b if not self.swap else _swapped_run(model, clean, corr, self.swap))[:, -1].float().log_softmax(-1)
            loss = loss + self.consistency * kl_divergence(p, q).mean()
        return loss


def _negatives(metric: MetricLike, prompts: Tensor) -> Tensor:
    """For each row, the next row (cyclically) whose answer differs; the next row without answers."""
    n = len(prompts)
    answers = as_metric(metric).pair_labels()
    label = answers[prompts] if answers is not None else torch.arange(n)
    out = torch.roll(torch.arange(n), -1)
    for i in range(n):
        for k in range(1, n):
            if label[(i + k) % n] != label[i]:
                out[i] = (i + k) % n
                break
    return out


def _swapped_run(model: HookedLM, clean: Tensor, corr: Tensor, swap: Sequence[Component]) -> Tensor:
    """Logits of ``clean`` with ``swap``'s activations set to their values on ``corr`` (``M(x | do(h = v))``)."""
    shape = M.shape_of(model)
    names = sorted({c.hook_name for c in swap})
    with torch.no_grad():
        _, cache = M.run_with_cache(model, corr, names)

    def make(name: str) -> M.HookFn:
        sites = [activation_index(c, shape.n_heads, shape.n_kv_heads) for c in swap if c.hook_name == name]

        def hook(act: Tensor, hook: Any) -> Tensor:
            for idx in sites:
                act = apply_at(Swap(), act, idx, cache[name][(slice(None), *idx)].to(act.dtype), None)
            return act

        return hook

    return M.run(model, clean, [(n, make(n)) for n in names])


def kl_to_reference(logits: Tensor, ref_logp: Tensor) -> Tensor:
    """Mean per-token ``KL(ref ‖ edited)`` (nats)."""
    return kl_divergence(ref_logp, logits.float().log_softmax(-1)).mean()


def gap_loss(
    logits_clean: Float[Tensor, "batch pos d_vocab"], logits_corrupted: Float[Tensor, "batch pos d_vocab"], metric: Metric, prompts: Tensor | None = None
) -> Float[Tensor, ""]:
    """The harm loss: mean squared bias gap ``(m(clean) − m(corrupted))²`` (metric units²); ``prompts`` is
    each row's prompt index, for metrics that read per-prompt answers."""
    return ((call_metric(metric, logits_clean, prompts) - call_metric(metric, logits_corrupted, prompts)) ** 2).mean()


def harm_loss(model: HookedLM, group: TokenGroup, rows: Tensor, metric: Metric, objective: Objective | Contrastive) -> Tensor:
    """The training objective on rows ``rows`` of ``group`` (see module docstring)."""
    if isinstance(objective, Contrastive):
        return objective.loss(model, group, rows, metric)
    clean, corr = group.clean[rows], group.corrupted[rows]
    logits = model(torch.cat([clean, corr]))
    a, b = logits[: len(rows)], logits[len(rows) :]
    if objective == "gap":
        return gap_loss(a, b, metric, torch.tensor(group.indices)[rows])
    pa, pb = a[:, -1].float().log_softmax(-1), b[:, -1].float().log_softmax(-1)
    return 0.5 * (kl_divergence(pa, pb).mean() + kl_divergence(pb, pa).mean())  # symmetric KL


_LORA = re.compile(r"^blocks\.(\d+)\.(attn\.o|mlp\.out)\.weight\.lora_A$")


@torch.no_grad()
def weight_inputs(model: HookedLM, tensors: dict[str, Tensor], windows: Sequence[Tensor]) -> dict[str, Float[Tensor, "token d_in"]]:
    """The unedited model's input ``x`` to every low-rank-edited matrix, over neutral windows.

    Heads' ``W_O`` reads the concatenated ``z`` ``[pos, n_heads · d_head]``; ``W_out`` reads ``hook_post``.

    Raises:
        EditError: The edit has no low-rank factors (the weight preservation term needs ``W′ − W``).
    """
    targets = {}
    for key in tensors:
        m = _LORA.match(key)
        if m:
            layer = int(m.group(1))
            targets[key[: -len(".lora_A")]] = (HeadRef(layer, 0) if m.group(2) == "attn.o" else NeuronRef(layer, 0)).hook_name
    if not targets:
        raise EditError("the weight preservation term ‖W′x − Wx‖ needs a low-rank edit (lora_A/lora_B tensors)")
    rows: dict[str, list[Tensor]] = {k: [] for k in targets}
    for w in windows:
        _, cache = M.run_with_cache(model, w[None], sorted(set(targets.values())))
        for k, name in targets.items():
            rows[k].append(cache[name][0].flatten(1).float().cpu() if cache[name].ndim == 4 else cache[name][0].float().cpu())
    return {k: torch.cat(v) for k, v in rows.items()}


def weight_preservation(tensors: dict[str, Tensor], inputs: dict[str, Tensor], alpha: float) -> Float[Tensor, ""]:
    """Seed 004's ``‖W′x − Wx‖₂ = ‖α B A x‖₂``, mean over tokens, summed over the edited matrices."""
    total = torch.zeros(())
    for name, x in inputs.items():
        a, b = tensors[f"{name}.lora_A"], tensors[f"{name}.lora_B"]
        total = total + (alpha * (x @ a.T.float()) @ b.T.float()).norm(dim=-1).mean()
    return total


def component_list(text: str) -> tuple[Component, ...]:
    """Components from a manifest's comma-separated string (``"L1H1,L0H2"``)."""
    return tuple(parse_component(t) for t in text.split(",") if t)
