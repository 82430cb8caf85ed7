"""Intervention-based causal pruning (ICP) as an iterative procedure: attribute → prune → fine-tune →
re-attribute on the pruned, fine-tuned model, until the flagged set stops changing or the round
budget ends.

Sources: seed 000 (§Stage 1–2: SSS, IDS, ``R = β S + (1 − β) I``, prune the top ``k%`` by ``R`` with
``R > τ``, contrastive invariant learning with an adapter) and seed 001 (§2.2 structural pruning
``θ_{l+1,j,i} = 0`` for ``S > τ``, contrastive fine-tuning with ``KL(M(x) ‖ M(x'))``, and "an iterative
process where feature attribution and pruning/reweighting are performed multiple times").

One round ``r``:

1. **Attribute** on the current model (round 0: the original; later: with the pruning baked into the
   weights and the adapter applied): :func:`circuits.probing.spurious.icp_scores` on the candidates.
2. **Flag**: the candidates with ``R > τ``, at most the top ``rate`` fraction of the candidates
   (seed 000's ``k ∈ {10, 30, 50}%``). A pruned component's outputs are zero, so it scores 0 and is
   not flagged again.
3. **Stop** when no new component is flagged (the pruned set stops changing) or after ``rounds``.
4. **Prune** every component flagged so far: zero its output columns (``W_O[:, h]``, ``W_out[:, n]``;
   an ``ablation`` edit with ``mode="zero"`` in weight form), or mean-ablate (``prune="mean"``).
5. **Fine-tune**: a low-rank adapter on the output weights of the unpruned candidates (warm-started
   from the previous round's), trained by :func:`circuits.editing.train.train_edit` with the
   :class:`~circuits.editing.objectives.Contrastive` objective on the pruned model. The components
   with ``R > τ_c`` produce seed 001's ``x'`` for the KL-consistency term.

Every round is recorded (:class:`IcpResult.rounds`; also the adapter's ``training`` record and,
through :meth:`IcpResult.provenance_rounds`, an atlas's ``provenance.rounds``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from circuits.editing.apply import apply_edit
from circuits.editing.build import new_edit
from circuits.editing.edit import Edit
from circuits.editing.objectives import Contrastive
from circuits.editing.train import TrainConfig, TrainingData, _low_rank_init, train_edit
from circuits.metrics import AnswerLogitDiff
from circuits.model import HookedLM
from circuits.probing import scores as S
from circuits.probing.patching import TokenGroup, position_mean_activations
from circuits.probing.spurious import icp_scores
from circuits.sites import Component

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IcpConfig:
    """Hyperparameters of the ICP loop.

    Attributes:
        rounds: Round budget.
        rate: Largest fraction of the candidates flagged per round (seed 000: 0.1, 0.3, 0.5).
        tau: τ on ``R`` (seed 000 writes ``R > τ`` and gives no value; absolute, in ``R``'s units).
        tau_c: τ_c: components with ``R > τ_c`` produce ``x'`` for the KL-consistency term (seed 001).
        beta: β of ``R`` (seed 000: 0.5).
        prune: ``"zero"`` (seed 001's ``θ = 0``) or ``"mean"`` (the mean output folded into the bias).
        rank: Adapter rank.
        objective: The contrastive objective (its ``swap`` is filled from ``tau_c`` each round).
        train: Training-loop hyperparameters.
    """

    rounds: int = 3
    rate: float = 0.1
    tau: float = 0.0
    tau_c: float | None = None
    beta: float = S.BETA
    prune: Literal["zero", "mean"] = "zero"
    rank: int = 2
    objective: Contrastive = Contrastive(consistency=0.5)
    train: TrainConfig = TrainConfig(steps=40, eval_every=10, progress=False)


@dataclass
class IcpResult:
    """The loop's output.

    Attributes:
        pruning: The structural pruning of every flagged component (``ablation``, weight form).
        adapter: The contrastively fine-tuned low-rank adapter, for the pruned model (apply after
            ``pruning`` with ``form="weights"``); ``None`` if nothing was flagged.
        rounds: One record per round: flagged, newly flagged, pruned set, their scores, training record.
        converged: The flagged set stopped changing before the round budget ended.
    """

    pruning: Edit | None
    adapter: Edit | None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    converged: bool = False

    def applied(self, model: HookedLM) -> ExitStack:
        """A context with the pruning baked and the adapter applied."""
        stack = ExitStack()
        if self.pruning is not None:
            stack.enter_context(apply_edit(model, self.pruning, form="weights"))
        if self.adapter is not None:
            stack.enter_context(apply_edit(model, self.adapter))
        return stack

    def provenance_rounds(self) -> list[dict[str, Any]]:
        """The rounds as JSON-ready dicts for :attr:`circuits.atlas.schema.Provenance.rounds`."""
        return [dict(r) for r in self.rounds]


def _pruning(model: HookedLM, pruned: list[Component], groups: Sequence[TokenGroup], mode: str) -> Edit:
    tensors = {}
    if mode == "mean":
        means = position_mean_activations(model, list(groups), sorted({c.hook_name for c in pruned}))
        tensors = {str(c): means[c.hook_name][c.head if hasattr(c, "head") else c.index].clone() for c in pruned}  # type: ignore[union-attr]
    return new_edit("ablation", tuple(pruned), tensors, model, {"mode": mode, "k": len(pruned), "method": "icp"}, form="weights", objective="reference")


def _adapter(model: HookedLM, adapt: tuple[Component, ...], previous: Edit | None, data: TrainingData, objective: Contrastive, cfg: IcpConfig) -> Edit:
    tensors, masks = _low_rank_init(model, adapt, cfg.rank, cfg.train.seed)
    if previous is not None:  # warm start, masked to the columns still adapted
        for k, v in previous.tensors.items():
            if k in tensors:
                tensors[k] = v.detach().clone() * masks[k] if k in masks else v.detach().clone()
    base = new_edit("low_rank", adapt, tensors, model, {"rank": cfg.rank, "alpha": 1.0, "k": len(adapt)}, form="weights")
    return train_edit(model, base, data, objective=objective, config=cfg.train, grad_masks=masks)


def icp_loop(
    model: HookedLM,
    data: TrainingData,
    candidates: Sequence[Component],
    *,
    groups: Sequence[TokenGroup] | None = None,
    domains: Sequence[str] | None = None,
    config: IcpConfig = IcpConfig(),
) -> IcpResult:
    """Run ICP (module docstring) on ``model`` (left unchanged).

    Args:
        model: The model.
        data: Contrastive fine-tuning data: counterfactual pairs whose metric is oriented answer −
            wrong answer (:class:`~circuits.editing.objectives.Contrastive`), and neutral text.
        candidates: Components scored, pruned and adapted (heads and/or neurons).
        groups: Pairs the scores are measured on (default: ``data.train``).
        domains: Each scored prompt's domain for IDS (default: one domain).
        config: Hyperparameters.

    Returns:
        The pruning, the adapter and the per-round records.
    """
    groups = list(groups or data.train)
    pruned: list[Component] = []
    pruning: Edit | None = None
    adapter: Edit | None = None
    result = IcpResult(None, None)
    for r in range(config.rounds):
        with IcpResult(pruning, adapter).applied(model):
            sc = icp_scores(model, groups, candidates, domains=domains, beta=config.beta)
        r_score, sss, ids = sc.scores["R"], sc.scores["SSS"], sc.scores["IDS"]
        over = [i for i in S.top_rate(r_score, config.rate) if float(r_score[i]) > config.tau]
        flagged = [candidates[i] for i in over]
        new = [c for c in flagged if c not in pruned]
        record: dict[str, Any] = {
            "round": r, "flagged": [str(c) for c in flagged], "new": [str(c) for c in new],
            "R": {str(candidates[i]): round(float(r_score[i]), 6) for i in over},
            "SSS": {str(candidates[i]): round(float(sss[i]), 6) for i in over},
            "IDS": {str(candidates[i]): round(float(ids[i]), 6) for i in over},
            "max_R_unpruned": round(max((float(r_score[i]) for i, c in enumerate(candidates) if c not in pruned), default=0.0), 6),
        }
        if not new:
            record["stopped"] = "the flagged set stopped changing"
            result.rounds.append(record)
            result.converged = True
            break
        pruned += new
        pruning = _pruning(model, pruned, groups, config.prune)
        tau_c = config.tau if config.tau_c is None else config.tau_c
        swap = tuple(candidates[i] for i in range(len(candidates)) if float(r_score[i]) > tau_c and candidates[i] not in pruned)
        objective = replace(config.objective, swap=swap)
        adapt = tuple(c for c in candidates if c not in pruned)
        with apply_edit(model, pruning, form="weights"):
            adapter = _adapter(model, adapt, adapter, data, objective, config) if adapt else None
        record.update(pruned=[str(c) for c in pruned], training=dict(adapter.training or {}) if adapter else {})
        result.rounds.append(record)
        logger.info("ICP round %d: flagged %s, pruned %s", r, record["flagged"], record["pruned"])
    result.pruning, result.adapter = pruning, adapter
    if adapter is not None:
        rounds = {f"icp_round{x['round']}_new": ",".join(x["new"]) for x in result.rounds}
        result.adapter = Edit(**{**adapter.__dict__, "training": {**(adapter.training or {}), **rounds, "icp_rounds": len(result.rounds),
                                                                   "icp_converged": result.converged}})
    return result


def label_margin(answers: torch.Tensor, wrong: torch.Tensor) -> Any:
    """``logit[answer] − logit[wrong]`` per prompt (:class:`~circuits.metrics.AnswerLogitDiff`): the
    answer-oriented metric the contrastive task loss needs."""
    return AnswerLogitDiff(answers.long(), wrong.long())
