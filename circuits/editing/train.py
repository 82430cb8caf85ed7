"""Trained edits: learned activation offsets, low-rank weight edits (invariance fine-tuning among them), neuron repair.

All of them (and the baselines of :mod:`circuits.editing.baselines`) share one CPU-friendly loop (:func:`train_edit`): Adam on the edit's own tensors only (the
model's weights stay frozen), a harm loss on the suite's *build* split plus a preservation term, a
validation split of the build templates for early stopping, a seed, and a tqdm progress bar.

* Harm loss (``objective="gap"``): the mean squared bias gap ``(m(clean) − m(corrupted))²`` over prompt
  pairs, ``m`` the suite's logit difference; 0 when the counterfactual word no longer moves the
  behaviour.
* Invariance loss (``objective="invariance"``): the symmetric KL divergence between the next-token
  distributions on ``x`` and on its counterfactual ``x'`` (the consistency regulariser of
  counterfactual invariance training; seeds: ICP, Peters et al. 2016; AIFS).
* Contrastive (ICP, seeds 000/001): task loss + triplet-margin term over counterfactual pairs + KL
  consistency with ``x'`` produced by the intervention (:class:`~circuits.editing.objectives.Contrastive`).
* Preservation: ``λ · KL(p_unedited ‖ p_edited)`` per token on windows of neutral English text (the
  shipped sample), so the edit keeps the model's capability (as in ROME's/MEMIT's KL constraint and
  the "preservation" term of the issue); or (``preservation_kind="weights"``) seed 004's
  ``λ · ‖W′x − Wx‖₂`` on the neutral activations (:mod:`circuits.editing.objectives`).

The validation objective (harm on held-out build templates + λ·KL on held-out text windows) is
measured every ``eval_every`` steps; training stops after ``patience`` evaluations without
improvement and the best tensors are kept.
"""

from __future__ import annotations

import hashlib
import math
import time
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from circuits import model as M
from circuits.data import english_sample
from circuits.editing.apply import attach_for_training, check_finite_logits
from circuits.editing.build import new_edit, suite_record
from circuits.editing.edit import Edit, EditError
from circuits.editing.objectives import (  # noqa: F401 - gap_loss re-exported
    Contrastive,
    Objective,
    Preservation,
    gap_loss,
    weight_inputs,
    weight_preservation,
)
from circuits.editing.objectives import harm_loss as _harm
from circuits.editing.objectives import kl_to_reference as _kl_to_reference
from circuits.metrics import Metric
from circuits.model import HookedLM
from circuits.probing.pairs import prepare
from circuits.probing.patching import PairError, TokenGroup
from circuits.sites import Component, HeadRef, MlpRef, NeuronRef
from circuits.suites import PromptPair, Suite


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of the training loop.

    Attributes:
        steps: Maximum optimiser steps.
        lr: Adam learning rate.
        batch_pairs: Prompt pairs per step.
        preservation: λ, weight of the preservation term.
        preservation_kind: ``"kl"`` (KL to the unedited model, nats/token) or ``"weights"`` (seed 004's
            ``‖W′x − Wx‖₂`` on neutral activations; low-rank edits only; :mod:`circuits.editing.objectives`).
        neutral_windows: Neutral-text windows per step (cycled through the training windows).
        eval_every: Steps between validations.
        patience: Validations without improvement before stopping.
        seed: Seed for initialisation and batch order.
        progress: Show a progress bar.
    """

    steps: int = 80
    lr: float = 1e-2
    batch_pairs: int = 8
    preservation: float = 1.0
    preservation_kind: Preservation = "kl"
    neutral_windows: int = 2
    eval_every: int = 10
    patience: int = 3
    seed: int = 0
    progress: bool = True


def split_by_template(pairs: list[PromptPair], val_fraction: float) -> tuple[list[PromptPair], list[PromptPair]]:
    """Train/validation split of a build split by *template*, so validation templates are unseen.

    The template is the pair's group (a template suite's template); when every pair has the same group
    (e.g. identity-harm pairs, grouped by bias type) and the pairs record a ``template_id`` in their
    metadata, that sentence frame is the unit held out instead.

    Raises:
        PairError: Fewer than two templates (nothing to hold out).
    """
    by_frame = len({p.template for p in pairs}) < 2 and all("template_id" in p.metadata for p in pairs)
    units = [str(p.metadata["template_id"]) if by_frame else p.template for p in pairs]
    templates = list(dict.fromkeys(units))
    if len(templates) < 2:
        raise PairError(f"need at least 2 templates to hold some out for validation, got {len(templates)}")
    n_val = min(len(templates) - 1, max(1, round(val_fraction * len(templates))))
    val = set(templates[-n_val:])
    return [p for p, u in zip(pairs, units) if u not in val], [p for p, u in zip(pairs, units) if u in val]


@dataclass(frozen=True)
class TrainingData:
    """Tokenised training data: prompt pairs for the harm loss and text windows for preservation.

    Attributes:
        train: Training prompt pairs, grouped by length.
        val: Validation prompt pairs (held-out templates), grouped by length.
        neutral_train: Token windows (``[pos]``) for the preservation term.
        neutral_val: Held-out token windows for validation.
        metric: The behaviour metric (logits → ``[batch]``) of the training pairs.
        sha256: Hash of the training prompts and text (recorded in the manifest).
        suite: Provenance (suite name, split, content hash, number of pairs).
        val_metric: The metric of the validation pairs when it reads per-pair answers (default ``metric``).
    """

    train: list[TokenGroup]
    val: list[TokenGroup]
    neutral_train: list[Tensor]
    neutral_val: list[Tensor]
    metric: Metric
    sha256: str
    suite: dict[str, str | int]
    val_metric: Metric | None = None

    @classmethod
    def from_suite(cls, model: HookedLM, suite: Suite, *, val_fraction: float = 0.25, window: int = 64, windows: int = 8) -> TrainingData:
        """The build split of a suite (validation: its last templates) and the shipped English sample.

        Raises:
            PairError: Misaligned pairs, fewer than 2 templates, or a metric that scores a pair over two
                rows (a difference of answer log-probabilities), which the training batches cannot keep together.
        """
        pairs = suite.pairs("build")
        train_pairs, val_pairs = split_by_template(pairs, val_fraction)
        train, val = prepare(model, train_pairs, suite.metric), prepare(model, val_pairs, suite.metric)
        if train.n_rows != train.n_pairs:
            raise PairError(f"training scores one row per pair; suite {suite.name!r}'s {train.name} metric uses two (try answer_logprob)")
        digest = hashlib.sha256("\n".join(p.clean + "|" + p.corrupted for p in train_pairs).encode() + english_sample().encode())
        return cls(
            train=train.groups,
            val=val.groups,
            neutral_train=_windows(model, windows, window, 0),
            neutral_val=_windows(model, 4, window, windows),
            metric=train.metric,
            val_metric=val.metric,
            sha256=digest.hexdigest(),
            suite=suite_record(suite, "build", pairs),
        )


def _windows(model: HookedLM, n: int, length: int, offset: int) -> list[Tensor]:
    """Windows ``offset .. offset + n`` of the build text (:func:`circuits.model.text_windows`)."""
    return list(M.text_windows(model, english_sample(), window=length)[offset : offset + n])


@dataclass(frozen=True)
class TrainingRecord:
    """What a training run did (recorded in the edit's manifest).

    Attributes:
        steps_run: Optimiser steps taken.
        best_step: Step whose tensors were kept.
        val_harm_before: Validation harm loss of the unedited model.
        val_harm_after: Validation harm loss at ``best_step``.
        val_kl_after: Validation KL to the unedited model at ``best_step`` (nats/token).
        seconds: Wall time.
        data_sha256: Hash of the training prompts and neutral text.
    """

    steps_run: int
    best_step: int
    val_harm_before: float
    val_harm_after: float
    val_kl_after: float
    seconds: float
    data_sha256: str

    def as_dict(self) -> dict[str, float | int | str]:
        """For the manifest."""
        return dict(self.__dict__)


def train_edit(
    model: HookedLM,
    edit: Edit,
    data: TrainingData,
    *,
    objective: Objective | Contrastive = "gap",
    config: TrainConfig = TrainConfig(),
    grad_masks: dict[str, Tensor] | None = None,
) -> Edit:
    """Optimise an edit's tensors on a harm loss plus a preservation term (the model is not changed).

    Args:
        model: The model the edit is for (its weights stay frozen and unchanged).
        edit: Initial edit; every floating tensor is trained.
        data: Training and validation data (:meth:`TrainingData.from_suite`).
        objective: ``"gap"`` (squared bias gap), ``"invariance"`` (symmetric KL between ``x`` and
            ``x'``) or a :class:`~circuits.editing.objectives.Contrastive` (ICP: task + triplet + KL
            consistency).
        config: Loop hyperparameters.
        grad_masks: ``{tensor name: 0/1 mask}`` restricting which entries train (e.g. a head's columns).

    Returns:
        The trained edit, with its :class:`TrainingRecord` in ``edit.training`` and the objective's name
        (``gap``, ``invariance`` or ``contrastive``) in ``edit.objective``.

    Raises:
        PairError: No training or validation pairs.
        EditError: The edit has nothing to train or does not fit the model.
    """
    if not data.train or not data.val:
        raise PairError("training needs both training and validation prompt pairs")
    gen = torch.Generator().manual_seed(config.seed)  # the only source of randomness: no global seeding
    t0 = time.perf_counter()
    metric, val_metric = data.metric, data.val_metric or data.metric
    train_w, val_w = data.neutral_train, data.neutral_val
    with torch.no_grad():
        ref_train = [M.run(model, w[None])[0].float().log_softmax(-1) for w in train_w]
        ref_val = [M.run(model, w[None])[0].float().log_softmax(-1) for w in val_w]

    params = {k: torch.nn.Parameter(v.detach().clone().float()) for k, v in edit.tensors.items() if v.is_floating_point()}
    if not params:
        raise EditError(f"{edit} has no tensors to train")
    for k, mask in (grad_masks or {}).items():
        params[k].register_hook(lambda g, mask=mask: g * mask)
    live = Edit(**{**edit.__dict__, "tensors": {**edit.tensors, **params}})
    opt = torch.optim.Adam(params.values(), lr=config.lr)
    on_weights = config.preservation_kind == "weights"
    if on_weights:  # seed 004's ||W'x - Wx|| on the unedited model's neutral activations
        x_train, x_val = weight_inputs(model, edit.tensors, train_w), weight_inputs(model, edit.tensors, val_w)
        w_alpha = float(edit.hyperparameters.get("alpha", 1.0))

    def val_objective() -> tuple[float, float, float]:
        with torch.no_grad():
            n = sum(g.clean.shape[0] for g in data.val)
            harm = sum(float(_harm(model, g, torch.arange(g.clean.shape[0]), val_metric, objective)) * g.clean.shape[0] for g in data.val) / n
            kl = sum(float(_kl_to_reference(M.run(model, w[None])[0], r)) for w, r in zip(val_w, ref_val)) / max(1, len(val_w))
            pres = float(weight_preservation(params, x_val, w_alpha)) if on_weights else kl
        return harm, kl, pres

    sizes = torch.tensor([g.clean.shape[0] for g in data.train], dtype=torch.float)
    best = {k: v.detach().clone() for k, v in params.items()}
    harm_before, _, _ = val_objective()
    best_score, best_harm, best_kl, best_pres, best_step, bad, step = harm_before, harm_before, 0.0, 0.0, 0, 0, 0
    use_text = config.preservation > 0 and bool(train_w)
    with ExitStack() as stack, M.frozen_parameters(model):
        stack.callback(attach_for_training(model, live))
        bar = stack.enter_context(tqdm(total=config.steps, desc=f"training {edit.kind}", disable=not config.progress, leave=False))
        for step in range(1, config.steps + 1):
            with torch.enable_grad():
                g = data.train[int(torch.multinomial(sizes, 1, generator=gen))]
                rows = torch.randperm(g.clean.shape[0], generator=gen)[: config.batch_pairs]
                loss = _harm(model, g, rows, metric, objective)
                if use_text and on_weights:
                    loss = loss + config.preservation * weight_preservation(params, x_train, w_alpha)
                elif use_text:
                    for j in range(config.neutral_windows):
                        i = (step * config.neutral_windows + j) % len(train_w)
                        loss = loss + config.preservation * _kl_to_reference(model(train_w[i][None])[0], ref_train[i]) / config.neutral_windows
                opt.zero_grad()
                loss.backward()
                opt.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % config.eval_every == 0 or step == config.steps:
                harm, kl, pres = val_objective()
                score = harm + config.preservation * pres
                if score < best_score - 1e-6:
                    best_score, best_harm, best_kl, best_pres, best_step, bad = score, harm, kl, pres, step, 0
                    best = {k: v.detach().clone() for k, v in params.items()}
                else:
                    bad += 1
                    if bad >= config.patience:
                        break
    record = TrainingRecord(
        steps_run=step,
        best_step=best_step,
        val_harm_before=harm_before,
        val_harm_after=best_harm,
        val_kl_after=best_kl,
        seconds=round(time.perf_counter() - t0, 2),
        data_sha256=data.sha256,
    )
    obj = objective.hyperparameters() if isinstance(objective, Contrastive) else {"objective": objective}
    name = str(obj.pop("objective"))  # recorded as the edit's objective, not as a hyperparameter
    hp = {**edit.hyperparameters, **obj, "lr": config.lr, "preservation": config.preservation, "preservation_kind": config.preservation_kind, "seed": config.seed, "batch_pairs": config.batch_pairs}
    training = {**record.as_dict(), **({"val_weight_change_after": best_pres} if on_weights else {})}
    trained = Edit(
        **{**edit.__dict__, "tensors": {**edit.tensors, **best}, "hyperparameters": hp, "suite": data.suite, "training": training, "objective": name}
    )
    check_finite_logits(model, trained)  # trained tensors can overflow the model where the initial ones did not
    return trained


def offset_edit(
    model: HookedLM, components: tuple[Component, ...], data: TrainingData, *, objective: Objective = "gap", config: TrainConfig = TrainConfig()
) -> Edit:
    """Learned activation offsets ``z_h ← z_h + δ_h`` (``hook_post_n ← + δ_n``) on flagged components.

    ``δ`` starts at 0 and is trained on the harm loss with the preservation term (seed: surgical
    circuit interventions, which fit small additive interventions at the components a circuit analysis
    found; CAA-style offsets, Rimsky et al. 2024, but learned rather than a mean difference), or on
    ``objective="invariance"``.

    Raises:
        EditError: A component that is not a head or neuron.
    """
    if not components or any(not isinstance(c, (HeadRef, NeuronRef)) for c in components):
        raise EditError(f"offsets act on heads and neurons, got {components}")
    d_head = M.shape_of(model).d_head
    tensors = {str(c): torch.zeros(d_head if isinstance(c, HeadRef) else ()) for c in components}
    return train_edit(model, new_edit("offset", tuple(components), tensors, model, {"k": len(components)}), data, objective=objective, config=config)


def _low_rank_init(model: HookedLM, components: tuple[Component, ...], rank: int, seed: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """LoRA factors (A Gaussian/√in, B zero: the edit starts as the identity) on the output weights the
    components write through; A's gradient is masked to the components' input columns."""
    shape = M.shape_of(model)
    gen = torch.Generator().manual_seed(seed)
    columns: dict[str, list[slice]] = {}
    for c in components:
        if isinstance(c, HeadRef):
            columns.setdefault(f"blocks.{c.layer}.attn.o.weight", []).append(slice(c.head * shape.d_head, (c.head + 1) * shape.d_head))
        elif isinstance(c, NeuronRef):
            columns.setdefault(f"blocks.{c.layer}.mlp.out.weight", []).append(slice(c.index, c.index + 1))
        elif isinstance(c, MlpRef):
            columns.setdefault(f"blocks.{c.layer}.mlp.out.weight", []).append(slice(None))
        else:
            raise EditError(f"low-rank edits act on heads (W_O), neurons and MLP layers (W_out), got {c}")
    tensors, masks = {}, {}
    for name, cols in columns.items():
        w = M.read_weight(model, name)
        assert w is not None
        mask = torch.zeros(rank, w.shape[1])
        for s in cols:
            mask[:, s] = 1
        tensors[f"{name}.lora_A"] = torch.randn(rank, w.shape[1], generator=gen) / math.sqrt(w.shape[1]) * mask
        tensors[f"{name}.lora_B"] = torch.zeros(w.shape[0], rank)
        masks[f"{name}.lora_A"] = mask
    return tensors, masks


def low_rank_edit(
    model: HookedLM,
    components: tuple[Component, ...],
    data: TrainingData,
    *,
    rank: int = 4,
    alpha: float = 1.0,
    objective: Objective | Contrastive = "gap",
    config: TrainConfig = TrainConfig(),
) -> Edit:
    """A low-rank weight edit ``W' = W + α B A`` of the flagged components' output weights, trained.

    Heads edit their columns of ``W_O`` (``blocks.L.attn.o.weight[:, h·d_head:(h+1)·d_head]``),
    neurons their column of ``W_out``, MLP layers all of ``W_out``; one ``(A, B)`` pair per matrix,
    ``A`` zero outside the components' columns. LoRA (Hu et al. 2022) restricted to the circuit, trained
    with the harm loss plus the KL preservation term; exportable as a PEFT adapter
    (:func:`circuits.editing.export.export_peft`). With ``objective="invariance"`` this is
    counterfactual invariance fine-tuning (the ``invariance`` preset: a low-rank adapter trained so that
    the next-token distributions on ``x`` and its counterfactual ``x'`` agree; seeds: invariant causal
    prediction, Peters et al. 2016, AIFS, counterfactual consistency training); the objective is
    recorded as the edit's ``objective``.

    Raises:
        EditError: A component that is not a head, neuron or MLP layer; ``rank < 1``.
    """
    if rank < 1:
        raise EditError(f"rank must be >= 1, got {rank}")
    if not components:
        raise EditError("no components to edit")
    tensors, masks = _low_rank_init(model, tuple(components), rank, config.seed)
    base = new_edit("low_rank", tuple(components), tensors, model, {"rank": rank, "alpha": float(alpha), "k": len(components)}, form="weights")
    return train_edit(model, base, data, objective=objective, config=config, grad_masks=masks)


def neuron_repair_edit(
    model: HookedLM, neurons: tuple[Component, ...], data: TrainingData, *, objective: Objective = "gap", config: TrainConfig = TrainConfig()
) -> Edit:
    """Neuron repair in the style of CARE (Sun et al. 2022, "Causality-based Neural Network Repair"), by gradient descent.

    CARE localises the neurons most responsible for the bad behaviour by causal attribution, then
    re-weights them to optimise the repair objective while keeping accuracy. Here the neurons come
    from attribution patching (:func:`circuits.editing.build.select_components`); each neuron ``n``
    gets a scale ``s_n`` (init 1) on its outgoing weights ``W_out[:, n]``, optimised by gradient descent
    on the harm loss (or ``objective="invariance"``) with the KL capability constraint as a penalty.
    CARE proper — ACE ranking and particle swarm — is :func:`circuits.editing.care.care_repair`.

    Raises:
        EditError: A component that is not a neuron.
    """
    if not neurons or any(not isinstance(c, NeuronRef) for c in neurons):
        raise EditError(f"neuron repair acts on neurons (e.g. L5N1024), got {neurons}")
    base = new_edit("neuron_repair", tuple(neurons), {str(n): torch.ones(()) for n in neurons}, model, {"k": len(neurons)})
    return train_edit(model, base, data, objective=objective, config=config)

