"""AIFS training: a latent gate learned under mask-gated synthetic interventions (seed 002).

Seed 002 ("Adaptive Invariant Feature Extraction using Synthetic Interventions", § Methodology) trains a
classifier ``C`` on latent features ``z = E(x)`` with three alternating phases per epoch: apply the
intervention ``z + λ (m ⊗ ε)`` to a batch and take a step on

    L = L_ce + α · L_inv + β · L_sens,        (seed defaults λ = 0.5, α = 1, β = 0.5)

then compute integrated gradients (Sundararajan et al. 2017) with respect to ``z`` and re-set the mask
``m_j ∝ exp(γ / (|IG_j| + ε))``. Here ``E`` is the frozen model up to a latent site (a residual stream or
one layer's heads' outputs; :mod:`circuits.editing.kinds.aifs`), and ``C`` is the rest of the model
after a trainable per-feature gate ``g ⊙ z + b`` at the site, read out on the task's label tokens. The
model's weights never change; the gate is the edit.

Readings of terms the seed leaves open (each a choice, by section):

* **Classifier output** (§2): ``p(y | z)`` is the softmax over the task's label tokens at the last
  position (prompt-based classification); ``L_ce`` its cross-entropy with the true label.
* **L_inv** (§2): ``KL(C(z) ‖ C(z_int))`` over the label distribution, batch mean; gradients flow
  through both arguments.
* **L_sens** (§2): the text says it *penalises* reliance on masked features, but the formula's minus
  sign rewards it. Default ``sensitivity="as_written"``, the formula: ``−Σ_j m_j s_j``;
  ``"penalty"`` uses ``+Σ_j m_j s_j``. ``s_j = E_b Σ_pos |∂ log p(y_b | z_b) / ∂z_{b,pos,j}|`` (a latent
  feature is a dimension of ``z`` at every position; the gradient is taken through the gate, so
  ``L_sens`` trains it). Measured on the planted spurious task (``tests/editing/test_aifs.py``): only the
  formula as written moves de-correlated accuracy (0.49 → 0.75, 0.49, 0.74 over seeds 0-2 at 5 epochs);
  ``"penalty"`` leaves it at 0.49. The written term is unbounded below (it rewards making
  ``log p(y | z)`` steep, i.e. unconfident), and longer training degrades: at 10 epochs seeds 0-4 give
  0.31-0.70, one of them with training-distribution accuracy 0.62 — keep the epoch budget small.
* **IG** (§3): ``K = 1`` class, the true label, ``w = 1``; baseline ``z̄`` the mean of ``z`` over the
  data (one ``[d]`` vector, every position: a zero residual stream is far off-distribution);
  midpoint Riemann sum with ``ig_steps`` points; ``IG_{b,j}`` summed over positions; ``|IG_j|`` the mean
  over the data of ``|IG_{b,j}|``.
* **Mask** (§3): ``m ∝ softmax(γ / (|IG| + ε))`` fixes ``m`` only up to scale; ``m ∈ [0, 1]^d`` (§1) is
  met by dividing by the largest entry, ``m_j = exp(s_j − max s)``. ``|IG|`` is first divided by its
  mean over features, so γ and ε do not depend on the units of ``z`` (ε = 0.1 mean attributions).
  ``mask_rule="direct"`` uses ``exp(γ |IG|)`` instead (noise on the features the classifier relies on
  most; an alternative reading, not the seed's formula). The first mask comes from the unedited model.
* **Epoch**: one pass over the training prompts in shuffled batches; the mask is updated after each.

From an atlas (:func:`aifs_from_atlas`, the ``aifs`` recipe of :mod:`circuits.editing.recipes`): the
site is the residual stream entering a layer, or flagged heads of one layer (the layer of the strongest
flagged head unless given), and the labelled prompts are the build pairs' prompts, each labelled with
its pair's answer (:func:`labelled_prompts`; CARE uses the same).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from circuits import model as M
from circuits.atlas.schema import Atlas
from circuits.editing.build import new_edit, select_components, suite_record
from circuits.editing.edit import Edit, EditError
from circuits.editing.kinds.aifs import site_width
from circuits.model import HookedLM
from circuits.sites import Component, HeadRef, ResidRef
from circuits.suites import PromptPair, Suite

log = logging.getLogger(__name__)
Transform = Callable[[Tensor], Tensor]
#: Where an AIFS gate sits when built from an atlas: one residual stream, or heads of one layer.
AifsSite = Literal["resid", "heads"]


@dataclass(frozen=True)
class AIFSConfig:
    """Hyperparameters (seed 002 § Implementation Details for λ, α, β).

    Attributes:
        lam: Intervention strength λ.
        alpha: Weight α of ``L_inv``.
        beta: Weight β of ``L_sens``.
        gamma: Mask selectivity γ.
        eps: ε of the mask update (in units of the mean |IG|).
        mask_rule: ``"inverse"`` (the seed's formula) or ``"direct"`` (see module docstring).
        sensitivity: ``"penalty"`` or ``"as_written"`` (see module docstring).
        epochs: Epochs (mask updates).
        batch_size: Prompts per step.
        lr: Adam learning rate of the gate.
        ig_steps: Integrated-gradient interpolation points.
        seed: Seed of batch order and noise.
        progress: Show a progress bar.
    """

    lam: float = 0.5
    alpha: float = 1.0
    beta: float = 0.5
    gamma: float = 1.0
    eps: float = 0.1
    mask_rule: Literal["inverse", "direct"] = "inverse"
    sensitivity: Literal["penalty", "as_written"] = "as_written"
    epochs: int = 5
    batch_size: int = 32
    lr: float = 0.05
    ig_steps: int = 8
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class LabelledBatch:
    """Prompts of one length with their class (an index into the label tokens)."""

    tokens: Int[Tensor, "batch pos"]
    labels: Int[Tensor, " batch"]


def labelled_batches(model: HookedLM, prompts: Sequence[str], labels: Sequence[int]) -> list[LabelledBatch]:
    """Tokenise text prompts (with BOS) and group them by length.

    Raises:
        ValueError: Empty or misaligned inputs.
    """
    if not prompts or len(prompts) != len(labels):
        raise ValueError(f"need aligned, non-empty prompts and labels (got {len(prompts)} and {len(labels)})")
    by_len: dict[int, list[tuple[Tensor, int]]] = {}
    for p, y in zip(prompts, labels):
        t = M.tokens_of(model, p)
        by_len.setdefault(t.shape[-1], []).append((t.reshape(-1), int(y)))
    return [LabelledBatch(torch.stack([t for t, _ in rows]), torch.tensor([y for _, y in rows])) for rows in by_len.values()]


def spread_pairs(pairs: Sequence[PromptPair], n: int) -> list[PromptPair]:
    """At most ``n`` pairs spread over ``pairs``: every ``(len // n)``-th, from the first.

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"need n >= 1 pairs, got {n}")
    return list(pairs[:: max(1, len(pairs) // n)][:n])


def answer_labels(pairs: Sequence[PromptPair]) -> tuple[str, str]:
    """The two answers prompt pairs are labelled with, sorted (class 0, class 1).

    Raises:
        EditError: A pair whose answer is its wrong answer (no label), or not exactly two answers overall.
    """
    answers = sorted({p.answer for p in pairs} | {p.wrong_answer for p in pairs})
    if not pairs or any(p.answer == p.wrong_answer for p in pairs) or len(answers) != 2:
        raise EditError("labelled prompts need pairs labelled with one of two answers (answer ≠ wrong_answer, two answers in all); these pairs carry none")
    return answers[0], answers[1]


@dataclass(frozen=True)
class LabelledPrompts:
    """Prompts labelled by their pair's answer: each pair's clean and corrupted prompt are class ``answers.index(answer)``.

    A pair's two prompts differ in the (spurious or harmful) feature only, so both carry its label;
    a suite whose pairs all share one answer labels every prompt alike.

    Attributes:
        pairs: The pairs.
        answers: The two answers, sorted; class ``c`` ↔ ``answers[c]``.
        label_ids: Their (single) token ids.
        batches: The labelled prompts, grouped by length (:func:`labelled_batches`).
    """

    pairs: tuple[PromptPair, ...]
    answers: tuple[str, str]
    label_ids: tuple[int, int]
    batches: tuple[LabelledBatch, ...]


def labelled_prompts(model: HookedLM, pairs: Sequence[PromptPair]) -> LabelledPrompts:
    """Both prompts of every pair, labelled with the pair's answer (the data of CARE's accuracy objective and of AIFS).

    Raises:
        EditError: Pairs without two answers (:func:`answer_labels`), or an answer that is not one token.
    """
    answers = answer_labels(pairs)
    try:
        ids = (M.single_token_id(model, answers[0]), M.single_token_id(model, answers[1]))
    except ValueError as e:
        raise EditError(f"labels are single tokens: {e}") from None
    prompts = [t for p in pairs for t in (p.clean, p.corrupted)]
    labels = [answers.index(p.answer) for p in pairs for _ in (0, 1)]
    return LabelledPrompts(tuple(pairs), answers, ids, tuple(labelled_batches(model, prompts, labels)))


def mask_update(ig_abs: Float[Tensor, " d"], *, gamma: float, eps: float, rule: str = "inverse") -> Float[Tensor, " d"]:
    """The seed's mask update ``m_j ∝ exp(γ / (|IG_j| + ε))`` (§3), scaled so that ``max m = 1``.

    Args:
        ig_abs: ``|IG_j|`` per feature (≥ 0); divided by its mean first (module docstring).
        gamma: Selectivity γ.
        eps: ε, in units of the mean ``|IG|``.
        rule: ``"inverse"`` (the seed's) or ``"direct"`` (``exp(γ |IG_j|)``).

    Returns:
        The mask, in ``(0, 1]``.

    Raises:
        ValueError: Unknown rule.
    """
    a = ig_abs.float() / ig_abs.float().mean().clamp_min(1e-12)
    if rule == "inverse":
        score = gamma / (a + eps)
    elif rule == "direct":
        score = gamma * a
    else:
        raise ValueError(f"unknown mask rule {rule!r}")
    return torch.exp(score - score.max())


class _Site:
    """Reads and writes the latent ``z [batch, pos, d]`` of an AIFS site inside a forward from its layer."""

    def __init__(self, model: HookedLM, components: tuple[Component, ...]):
        self.d = site_width(components, model)
        first = components[0]
        self.layer = first.layer
        self.hook = first.hook_name
        self.resid_hook = ResidRef(first.layer, None).hook_name
        self.heads = [c.head for c in components] if isinstance(first, HeadRef) else None

    def get(self, act: Tensor) -> Tensor:
        return act if self.heads is None else act[:, :, self.heads].flatten(-2)

    def put(self, act: Tensor, z: Tensor) -> Tensor:
        if self.heads is None:
            return z
        out = act.clone()
        out[:, :, self.heads] = z.reshape(*z.shape[:2], len(self.heads), -1).to(act.dtype)
        return out

    def cache(self, model: HookedLM, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``(resid entering the site's layer, z)`` of the unedited model."""
        _, c = M.run_with_cache(model, tokens, sorted({self.resid_hook, self.hook}))
        return c[self.resid_hook], self.get(c[self.hook]).float()

    def label_logp(self, model: HookedLM, resid: Tensor, label_ids: list[int], transform: Transform) -> Float[Tensor, "batch label"]:
        """Log-probabilities over the label tokens at the last position with ``z ← transform(z)``."""

        def hook(act: Tensor, hook: Any) -> Tensor:
            return self.put(act, transform(self.get(act).float()))

        logits = M.run_from_layer(model, resid, self.layer, [(self.hook, hook)], last=1, vocab=label_ids)[:, -1, label_ids]
        return logits.float().log_softmax(-1)


def _affine(gate: Tensor, shift: Tensor) -> Transform:
    return lambda z: z * gate + shift


def integrated_gradients(
    model: HookedLM, site: _Site, data: list[tuple[Tensor, Tensor, Tensor]], label_ids: list[int], gate: Tensor, shift: Tensor, steps: int
) -> Float[Tensor, " d"]:
    """Mean ``|IG_j|`` of ``log p(y | z)`` per latent feature (baseline: the data mean of ``z``; module docstring)."""
    zbar = torch.cat([z.reshape(-1, site.d) for _, z, _ in data]).mean(0)
    total, n = torch.zeros(site.d), 0
    gate, shift = gate.detach(), shift.detach()
    for resid, z, y in data:
        grads = torch.zeros_like(z)
        for k in range(steps):
            a = (k + 0.5) / steps
            point = (zbar + a * (z - zbar)).requires_grad_(True)
            with torch.enable_grad():
                logp = site.label_logp(model, resid, label_ids, lambda _z, p=point: _affine(gate, shift)(p))
                (g,) = torch.autograd.grad(logp.gather(1, y[:, None]).sum(), point)
            grads += g / steps
        total += ((z - zbar) * grads).sum(1).abs().sum(0)
        n += z.shape[0]
    return total / max(n, 1)


def _losses(
    model: HookedLM, site: _Site, resid: Tensor, y: Tensor, label_ids: list[int], gate: Tensor, shift: Tensor, mask: Tensor, cfg: AIFSConfig, gen: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """``(L_ce, L_inv, L_sens)`` on one batch (module docstring)."""
    leaf: list[Tensor] = []

    def clean(z: Tensor) -> Tensor:
        leaf.append(z.detach().requires_grad_(True))
        return _affine(gate, shift)(leaf[0])

    def noised(z: Tensor) -> Tensor:
        eps = torch.randn(z.shape, generator=gen).to(z.device)
        return _affine(gate, shift)(z + cfg.lam * mask * eps)

    logp = site.label_logp(model, resid, label_ids, clean)
    logp_int = site.label_logp(model, resid, label_ids, noised)
    ce = F.nll_loss(logp, y)
    inv = (logp.exp() * (logp - logp_int)).sum(-1).mean()
    (g,) = torch.autograd.grad(logp.gather(1, y[:, None]).sum(), leaf[0], create_graph=True)
    s = g.abs().sum(1).sum(0) / y.shape[0]
    sens = (mask * s).sum() * (1.0 if cfg.sensitivity == "penalty" else -1.0)
    return ce, inv, sens


def aifs_edit(
    model: HookedLM,
    components: tuple[Component, ...],
    batches: list[LabelledBatch],
    label_ids: Sequence[int],
    *,
    config: AIFSConfig = AIFSConfig(),
    suite: dict[str, str | int] | None = None,
) -> Edit:
    """Train an AIFS gate at a latent site (module docstring); the model's weights stay unchanged.

    Args:
        model: The model.
        components: The site: one whole residual stream (``ResidRef(L, None)``) or heads of one layer.
        batches: Labelled training prompts (:func:`labelled_batches`); no group labels are used.
        label_ids: The label tokens, class ``k`` ↔ ``label_ids[k]``.
        config: Hyperparameters.
        suite: Provenance of the prompts (recorded in the manifest).

    Returns:
        An ``aifs`` edit: ``gate``, ``shift`` and the last ``mask``, with the per-epoch losses and mask
        statistics in ``edit.training``.

    Raises:
        EditError: A site that is not one residual stream or heads of one layer.
        ValueError: No batches.
    """
    if not batches:
        raise ValueError("AIFS needs labelled prompts")
    t0 = time.perf_counter()
    site, ids = _Site(model, tuple(components)), list(label_ids)
    gen = torch.Generator().manual_seed(config.seed)
    data = [(*site.cache(model, b.tokens), b.labels) for b in batches]
    gate, shift = torch.nn.Parameter(torch.ones(site.d)), torch.nn.Parameter(torch.zeros(site.d))
    opt = torch.optim.Adam([gate, shift], lr=config.lr)
    record: dict[str, float | int | str] = {}
    with M.frozen_parameters(model):
        mask = mask_update(integrated_gradients(model, site, data, ids, gate, shift, config.ig_steps), gamma=config.gamma, eps=config.eps, rule=config.mask_rule)
        for epoch in tqdm(range(config.epochs), desc="AIFS epochs", disable=not config.progress, leave=False):
            sums, n_steps = torch.zeros(3), 0
            for b in torch.randperm(len(data), generator=gen).tolist():
                resid, _, y = data[b]
                order = torch.randperm(y.shape[0], generator=gen)
                for s in range(0, y.shape[0], config.batch_size):
                    rows = order[s : s + config.batch_size]
                    with torch.enable_grad():
                        ce, inv, sens = _losses(model, site, resid[rows], y[rows], ids, gate, shift, mask, config, gen)
                        loss = ce + config.alpha * inv + config.beta * sens
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                    with torch.no_grad():
                        gate.clamp_(min=0.0)
                    sums += torch.tensor([ce.item(), inv.item(), sens.item()])
                    n_steps += 1
            ce_m, inv_m, sens_m = (sums / max(n_steps, 1)).tolist()
            mask = mask_update(integrated_gradients(model, site, data, ids, gate, shift, config.ig_steps), gamma=config.gamma, eps=config.eps, rule=config.mask_rule)
            record.update({f"epoch{epoch}_ce": ce_m, f"epoch{epoch}_inv": inv_m, f"epoch{epoch}_sens": sens_m, f"epoch{epoch}_mask_mean": float(mask.mean())})
            log.info("AIFS epoch %d: ce %.4f inv %.4f sens %.4f mask mean %.3f", epoch, ce_m, inv_m, sens_m, float(mask.mean()))
    digest = hashlib.sha256(b"".join(b.tokens.numpy().tobytes() + b.labels.numpy().tobytes() for b in batches)).hexdigest()
    record.update({"epochs": config.epochs, "seconds": round(time.perf_counter() - t0, 2), "data_sha256": digest, "n_prompts": sum(len(b.labels) for b in batches)})
    hp = {k: v for k, v in asdict(config).items() if k != "progress"}
    tensors = {"gate": gate.detach().clone(), "shift": shift.detach().clone(), "mask": mask.detach().clone()}
    edit = new_edit("aifs", tuple(components), tensors, model, hp, suite, objective="aifs")
    return Edit(**{**edit.__dict__, "training": record})


def aifs_site(model: HookedLM, atlas: Atlas, behaviour: str, *, site: AifsSite = "resid", layer: int | None = None, k: int = 3) -> tuple[Component, ...]:
    """The site of an AIFS gate an atlas points at.

    Args:
        model: The model the atlas was measured on.
        atlas: The atlas.
        behaviour: Behaviour name.
        site: ``"resid"`` (the residual stream entering ``layer``) or ``"heads"`` (the behaviour's
            flagged heads of ``layer``, strongest first, at most ``k``).
        layer: The layer (``None``: the layer of the strongest flagged head).
        k: Heads, for ``site="heads"``.

    Returns:
        ``(ResidRef(layer, None),)`` or the heads.

    Raises:
        EditError: A layer out of range, or no flagged head in the layer (``site="heads"``).
        AtlasError: The behaviour flags no head (to choose the layer, or the heads).
    """
    shape = model.shape
    if layer is None:
        layer = select_components(model, atlas, behaviour, k=1)[0].layer
    if not 0 <= layer < shape.n_layers:
        raise EditError(f"layer {layer} does not exist in a model with {shape.n_layers} layers")
    if site == "resid":
        return (ResidRef(layer, None),)
    flagged = select_components(model, atlas, behaviour, k=shape.n_layers * shape.n_heads)
    heads = tuple(c for c in flagged if c.layer == layer)[:k]
    if not heads:
        raise EditError(f"behaviour {behaviour!r} flags no head in layer {layer}; an aifs gate on heads needs some (site resid works at any layer)")
    return heads


def aifs_from_atlas(
    model: HookedLM, atlas: Atlas, suite: Suite, behaviour: str, *, site: AifsSite = "resid", layer: int | None = None, k: int = 3, max_pairs: int = 40,
    config: AIFSConfig = AIFSConfig(),
) -> Edit:
    """An AIFS gate at the site an atlas points at (:func:`aifs_site`), trained on the suite's build pairs.

    The training prompts are the clean and corrupted prompts of ``max_pairs`` build pairs spread over
    the split (:func:`spread_pairs`), each labelled with its pair's answer (:func:`labelled_prompts`).

    Args:
        model: The model the atlas was measured on (unchanged).
        atlas: The atlas.
        suite: The behaviour's suite.
        behaviour: Behaviour name in the atlas.
        site: ``"resid"`` or ``"heads"``.
        layer: The site's layer (``None``: the strongest flagged head's).
        k: Heads, for ``site="heads"``.
        max_pairs: Build pairs used.
        config: AIFS's settings.

    Returns:
        The trained ``aifs`` edit (objective ``aifs``; the pairs' provenance in ``suite``).

    Raises:
        EditError: Pairs without two answers, or a site the atlas does not give.
        AtlasError: The behaviour flags no head.
    """
    components = aifs_site(model, atlas, behaviour, site=site, layer=layer, k=k)
    pairs = spread_pairs(suite.pairs("build"), max_pairs)
    data = labelled_prompts(model, pairs)
    return aifs_edit(model, components, list(data.batches), data.label_ids, config=config, suite=suite_record(suite, "build", pairs))
