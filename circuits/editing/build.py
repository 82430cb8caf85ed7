"""Build the edits that need no training, from token groups (and, to select components, an atlas).

Builders take tokenised prompt pairs (:class:`~circuits.probing.patching.TokenGroup`) and, where they
rank anything, a metric, not a suite: planted models and user code build edits the same way. Suite
users tokenise a split with :func:`circuits.probing.patching.tokenize_pairs` and record it with
:func:`suite_record`; :func:`circuits.editing.recipes.build_edit` does both from an atlas.
Target selection (:func:`select_components`):

* heads: the top-``k`` flagged heads of a behaviour (largest mean effect first);
* neurons: the atlas flags MLP layers; inside the flagged MLP layers, neurons are ranked by their
  attribution-patching effect (Nanda 2023; Syed et al. 2023) on the given pairs, and the top ``k``
  are taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from circuits import model as M
from circuits.atlas.schema import Atlas, AtlasError
from circuits.editing.apply import check_finite_logits
from circuits.editing.edit import Edit, EditError
from circuits.editing.kinds import KINDS, Form
from circuits.metrics import Metric
from circuits.probing.attribution import attribution_patching
from circuits.probing.patching import TokenGroup, position_mean_activations
from circuits.probing.scores import top_rate
from circuits.sites import Component, HeadRef, NeuronRef, ResidRef, parse_component
from circuits.suites import PromptPair, Suite

Granularity = Literal["head", "neuron"]
Selector = Literal["flagged", "top", "R", "tracing"]


def suite_record(suite: Suite, split: str, pairs: Sequence[PromptPair]) -> dict[str, str | int]:
    """Provenance of the data an edit was built from (recorded in its manifest)."""
    return {"name": suite.name, "split": split, "content_hash": suite.content_hash, "n_pairs": len(pairs)}


def new_edit(
    kind: str, components: tuple[Component, ...], tensors: dict[str, Tensor], model: M.HookedLM, hp: dict[str, Any],
    suite: dict[str, str | int] | None = None, *, form: Form | None = None, objective: str | None = None,
) -> Edit:
    """An edit for ``model`` as it is now (its fingerprint, name, source and tokenization policy), checked against it.

    ``form=None`` is the kind's default form; ``objective`` names what made the tensors
    (:data:`circuits.editing.recipes.METHODS`).

    Raises:
        EditError: Invalid values (:mod:`circuits.editing.validate`), a site the model does not have, or
            non-finite logits with the edit applied (:func:`circuits.editing.apply.check_finite_logits`).
    """
    edit = Edit(
        kind=kind, components=components, tensors=tensors, model_name=M.model_name(model), model_fingerprint=M.fingerprint(model),
        hyperparameters=hp, suite=suite or {}, model_source=model.provenance.as_dict(), form=form,
        tokenization=model.tokenization.as_dict(), objective=objective,
    )
    check_finite_logits(model, edit)
    return edit


def check_atlas(model: M.HookedLM, atlas: Atlas) -> None:
    """Refuse an atlas measured on other weights than ``model``'s, or under another tokenization policy.

    An edit is built from the atlas's components on prompts the model encodes now; if the atlas was
    measured with a BOS token first and the model now encodes without one (or the reverse), the
    components it names were found on other inputs.

    Raises:
        EditError: Different fingerprints, or a different ``prepend_bos`` policy.
    """
    fp = M.fingerprint(model)
    if atlas.model.fingerprint != fp:
        raise EditError(
            f"the atlas was measured on {atlas.model.name} {atlas.model.fingerprint[:19]}…, but this model is {fp[:19]}…; "
            "build edits on the model the atlas describes"
        )
    recorded, now = atlas.model.tokenization, model.tokenization
    if recorded.prepend_bos != now.prepend_bos:
        flag = "--prepend-bos" if recorded.prepend_bos else "--no-prepend-bos"
        raise EditError(
            f"the atlas was measured with {recorded.describe()}, but the model now encodes text with {now.describe()}; "
            f"rescan the atlas under this policy, or load the model with prepend_bos={recorded.prepend_bos} ({flag})"
        )


def select_components(
    model: M.HookedLM,
    atlas: Atlas,
    behaviour: str,
    *,
    k: int,
    granularity: Granularity = "head",
    groups: Sequence[TokenGroup] = (),
    metric: Metric | None = None,
    by: Selector = "flagged",
    rate: float | None = None,
) -> tuple[Component, ...]:
    """The components an atlas points at, at head or neuron granularity.

    Selectors (``by``): ``"flagged"`` — the behaviour's flagged components (largest effect first);
    ``"top"`` — the components with the largest mean primary effect, flagged or not (a first look at a
    scan of too few pairs for the flag rule's test: on one pair no component can pass it);
    ``"R"`` — ICP's pruning priority, the largest seed-000 ``R = β SSS + (1 − β) IDS`` scores
    (:mod:`circuits.probing.scores`), the top ``rate`` fraction (10/30/50%) when ``rate`` is given, else
    the top ``k``; ``"tracing"`` — the components flagged by head/neuron noise-restoration tracing
    (seed 004, ``Δ log P(y_h) > τ``; :func:`circuits.atlas.build.record_tracing`), largest ``Δ`` first.

    Args:
        model: The model the atlas was measured on.
        atlas: The atlas.
        behaviour: Behaviour name.
        k: How many.
        granularity: ``"head"`` (top-``k`` flagged heads) or ``"neuron"`` (top-``k`` neurons of the
            flagged MLP layers by attribution-patching effect on ``groups`` with ``metric``).
        groups: Prompt pairs that rank neurons.
        metric: The behaviour metric that ranks neurons.
        by: ``"flagged"``, ``"top"``, ``"R"`` or ``"tracing"`` (see above).
        rate: With ``by="R"``: the fraction of the scored components to take (overrides ``k``).

    Returns:
        Up to ``k`` components, strongest first.

    Raises:
        AtlasError: No such behaviour, or it flags nothing of the needed kind.
        EditError: The atlas is for another model.
        ValueError: ``k < 1``, or neuron granularity without groups and a metric.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    check_atlas(model, atlas)
    b = atlas.behaviour(behaviour)
    if by in ("R", "tracing"):
        kind = "head" if granularity == "head" else "neuron"
        pool = [c for c in b.components if c.kind == kind]
        if by == "R":
            pool = [c for c in pool if "R" in c.scores]
            if not pool:
                raise AtlasError(f"behaviour {b.name!r} has no R scores for {kind}s (scan a spurious suite)")
            values = torch.tensor([c.scores["R"] for c in pool])
            order = top_rate(values, rate) if rate is not None else torch.argsort(-values, stable=True)[:k].tolist()
            return tuple(parse_component(pool[i].id) for i in order)
        traced = sorted((c for c in pool if c.traced), key=lambda c: -c.scores.get("ΔlogP[trace]", 0.0))
        if not traced:
            raise AtlasError(f"behaviour {b.name!r} has no {kind} flagged by tracing (record_tracing)")
        return tuple(parse_component(c.id) for c in traced[:k])
    want = "head" if granularity == "head" else "mlp"
    if by == "top":
        flagged = [parse_component(c.id) for c in b.top(len(b.components), kind=want)]
    else:
        flagged = [parse_component(c.id) for c in b.flagged() if c.kind == want]
    if not flagged:
        n = max((c.effect.n for c in b.components), default=0)
        raise AtlasError(
            f"behaviour {b.name!r} flags no {want}; nothing to select (flag rule: {b.flag_rule}; scanned on {n} "
            f"pair{'s' if n != 1 else ''}). Scan more pairs, or select the top components by effect (select='top')"
        )
    if granularity == "head":
        return tuple(flagged[:k])
    if not groups or metric is None:
        raise ValueError("neuron granularity ranks neurons by attribution: pass groups and a metric")
    neurons = [NeuronRef(m.layer, n) for m in flagged for n in range(model.shape.d_mlp)]
    result = attribution_patching(model, list(groups), metric, neurons, progress=False)
    order = torch.argsort(result.effects.mean(1), descending=True)[:k]
    return tuple(neurons[i] for i in order.tolist())


def _hook_of(c: Component) -> str:
    return HeadRef(c.layer, 0).hook_name if isinstance(c, HeadRef) else NeuronRef(c.layer, 0).hook_name


def _unit(c: Component) -> int:
    return c.head if isinstance(c, HeadRef) else c.index  # type: ignore[union-attr]


@torch.no_grad()
def _reference_bank(model: M.HookedLM, groups: Sequence[TokenGroup], components: tuple[Component, ...], size: int, seed: int) -> dict[str, Tensor]:
    """``size`` activations per component sampled (seeded) from every position of every reference prompt."""
    names = sorted({_hook_of(c) for c in components})
    rows: dict[str, list[Tensor]] = {n: [] for n in names}
    for g in groups:
        _, cache = M.run_with_cache(model, torch.cat([g.clean, g.corrupted]), names)
        for n in names:
            rows[n].append(cache[n].flatten(0, 1))  # [batch*pos, ...]
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for c in components:
        acts = torch.cat(rows[_hook_of(c)])[:, _unit(c)]
        out[str(c)] = acts[torch.randperm(acts.shape[0], generator=gen)[:size]].clone()
    return out


def ablation_edit(
    model: M.HookedLM,
    components: tuple[Component, ...],
    groups: Sequence[TokenGroup],
    *,
    mode: Literal["zero", "mean", "resample"] = "mean",
    form: Form = "hooks",
    bank_size: int = 256,
    seed: int = 0,
    suite: dict[str, str | int] | None = None,
) -> Edit:
    """Ablate heads' outputs ``z`` and/or neurons' ``hook_post`` (zero, mean or resample).

    * zero ablation sets the activation to 0; mean ablation to its mean over every position of the
      reference prompts (clean and corrupted); resample ablation to the activation of a random
      reference prompt and position, drawn anew at every forward pass (Wang et al. 2023, IOI; Chan et
      al. 2022, causal scrubbing). Ablating flagged components is the pruning step of
      intervention-based causal pruning.
    * ``form="weights"`` is the structural-pruning form: the output columns (``W_O[:, h]``,
      ``W_out[:, n]``) are zeroed and, for mean ablation, the constant ``W_O[:, h] · mean`` is folded
      into the output bias; the same function as the hook form. Resample has no weight form.

    Args:
        model: The model.
        components: Heads (``L9H6``) and/or neurons (``L5N1024``), at all positions.
        groups: Reference prompt pairs (means and resample bank).
        mode: ``"zero"``, ``"mean"`` or ``"resample"``.
        form: How the edit is applied by default (``"hooks"`` or ``"weights"``).
        bank_size: Reference activations kept per component for resampling.
        seed: Seed for the bank and the per-pass draws.
        suite: Provenance of ``groups`` (:func:`suite_record`).

    Returns:
        The edit (kind ``ablation``, objective ``reference``).

    Raises:
        EditError: No components, a component that is not a whole head or neuron, or weights with resample.
    """
    if not components:
        raise EditError("no components to ablate")
    if any(not isinstance(c, (HeadRef, NeuronRef)) or c.pos is not None for c in components):
        raise EditError(f"ablation acts on whole heads and neurons (e.g. L9H6, L5N1024), got {components}")
    KINDS["ablation"].check_form(form, {"mode": mode})  # before the bank is drawn
    tensors: dict[str, Tensor] = {}
    if mode == "mean":
        means = position_mean_activations(model, list(groups), sorted({_hook_of(c) for c in components}))
        tensors = {str(c): means[_hook_of(c)][_unit(c)].clone() for c in components}
    elif mode == "resample":
        tensors = _reference_bank(model, groups, components, bank_size, seed)
    hp: dict[str, Any] = {"mode": mode, "k": len(components)}
    if mode == "mean":
        hp["mean_over"] = "reference pairs, clean+corrupted, all positions"
    if mode == "resample":
        hp.update(seed=seed, bank_size=bank_size)
    return new_edit("ablation", tuple(components), tensors, model, hp, suite, form=form, objective="reference")


def scaling_edit(
    model: M.HookedLM, components: tuple[Component, ...], *, alpha: float, form: Form = "hooks", suite: dict[str, str | int] | None = None
) -> Edit:
    """Scale heads' ``z`` / neurons' ``hook_post`` by ``alpha`` (0 = zero ablation, 1 = no-op).

    Source: the attention-head scaling interventions of "Are Sixteen Heads Really Better than One?"
    (Michel et al. 2019) and amplification/suppression studies of circuits.

    Args:
        model: The model.
        components: Heads and/or neurons.
        alpha: The factor.
        form: How the edit is applied by default.
        suite: Provenance of the data the components were selected on (:func:`suite_record`).

    Returns:
        The edit (kind ``scaling``, objective ``constant``).

    Raises:
        EditError: No components, or a component that is not a head or neuron.
    """
    if not components or any(not isinstance(c, (HeadRef, NeuronRef)) for c in components):
        raise EditError(f"scaling acts on heads and neurons, got {components}")
    return new_edit("scaling", tuple(components), {}, model, {"alpha": float(alpha), "k": len(components)}, suite, form=form, objective="constant")


@torch.no_grad()
def mean_difference(model: M.HookedLM, groups: Sequence[TokenGroup], layer: int) -> Float[Tensor, " d_model"]:
    """``mean(resid_pre_L[clean, -1]) - mean(resid_pre_L[corrupted, -1])`` over prompt pairs.

    The difference-in-means direction of CAA (Rimsky et al. 2024) and of Arditi et al. 2024, read at
    the last prompt position, where the behaviour's next-token prediction is made.

    Raises:
        ValueError: ``layer`` out of range, or no pairs.
    """
    n_layers = model.shape.n_layers
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} out of range for {n_layers} layers")
    if not groups:
        raise ValueError("no prompt pairs to take a difference of means over")
    name = ResidRef(layer, None).hook_name
    total = torch.zeros(model.shape.d_model)
    n = 0
    for g in groups:
        b = g.clean.shape[0]
        _, cache = M.run_with_cache(model, torch.cat([g.clean, g.corrupted]), [name])
        last = cache[name][:, -1].float().cpu()
        total += (last[:b] - last[b:]).sum(0)
        n += b
    return total / n


def steering_edit(
    model: M.HookedLM, groups: Sequence[TokenGroup], *, layer: int, coefficient: float = -1.0, form: Form = "hooks",
    suite: dict[str, str | int] | None = None,
) -> Edit:
    """A mean-difference steering vector added to ``resid_pre`` of ``layer`` at every position.

    Contrastive activation addition (CAA; Rimsky et al. 2024): ``v = mean(clean) − mean(corrupted)``
    at the last position (:func:`mean_difference`); the edit adds ``coefficient · v``. The default
    ``coefficient = −1`` steers away from the clean (harmful) side. ``form="weights"`` folds the vector
    into the bias of the writer before ``layer`` (where sublayer outputs reach the residual stream
    unnormalised).

    Raises:
        ValueError: ``layer`` out of range.
    """
    v = mean_difference(model, groups, layer)
    hp = {"coefficient": float(coefficient), "layer": layer}
    return new_edit("steering", (ResidRef(layer, None),), {"vector": v}, model, hp, suite, form=form, objective="mean_difference")


def direction_edit(
    model: M.HookedLM, groups: Sequence[TokenGroup], *, layer: int, form: Form = "hooks", suite: dict[str, str | int] | None = None
) -> Edit:
    """Directional ablation of the behaviour's difference-in-means direction (Arditi et al. 2024).

    ``r̂ = v / ‖v‖`` with ``v`` from :func:`mean_difference` at ``layer``. The hook form removes
    ``(x·r̂) r̂`` from the residual stream before and after every attention and MLP sublayer, at every
    position; the weight form (``form="weights"``, weight orthogonalization) projects ``r̂`` out of
    every matrix that writes to the residual stream (``W_E``, every ``W_O`` and ``W_out``, and their
    biases), so no component can write along ``r̂``. The two are equal (tested).

    Raises:
        ValueError: ``layer`` out of range.
        EditError: The difference in means is zero.
    """
    v = mean_difference(model, groups, layer)
    if v.norm() < 1e-8:
        raise EditError(f"clean and corrupted means are equal at layer {layer}; no direction to ablate")
    return new_edit(
        "directional_ablation", (ResidRef(layer, None),), {"direction": v / v.norm()}, model, {"layer": layer}, suite, form=form, objective="mean_difference"
    )
