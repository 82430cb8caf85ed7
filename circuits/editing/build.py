"""Build edits from an atlas and a suite's *build* split (the kinds that need no training).

Every builder reads activations only on the build split, so evaluating on the ``eval`` split is
held out (no shared template or word). Target selection:

* heads: the top-``k`` flagged heads of a behaviour (largest mean effect first);
* neurons: the atlas flags MLP layers; inside the flagged MLP layers, neurons are ranked by their
  attribution-patching effect (Nanda 2023; Syed et al. 2023) on the build split, and the top ``k`` are
  taken (:func:`select_components`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from circuits import model as M
from circuits.atlas.schema import Atlas, AtlasError
from circuits.editing.edit import Edit, EditError
from circuits.metrics import metric_for_suite
from circuits.probing.attribution import attribution_patching
from circuits.probing.patching import TokenGroup, position_mean_activations, tokenize_pairs
from circuits.sites import Component, HeadRef, NeuronRef, ResidRef, parse_component
from circuits.suites import PromptPair, SplitName, Suite

Granularity = Literal["head", "neuron"]


def suite_record(suite: Suite, split: SplitName, pairs: list[PromptPair]) -> dict[str, str | int]:
    """Provenance of the data an edit was built from (recorded in its manifest)."""
    return {"name": suite.name, "split": split, "content_hash": suite.content_hash, "n_pairs": len(pairs)}


def new_edit(
    kind: Any, components: tuple[Component, ...], tensors: dict[str, Tensor], atlas: Atlas | None, model: Any, hp: dict[str, Any], suite: dict[str, str | int] | None = None
) -> Edit:
    """An edit for ``model`` as it is now (the atlas, if given, must describe the same weights).

    Raises:
        EditError: The atlas was measured on a model with other weights.
    """
    fp = M.fingerprint(model)
    if atlas is not None and atlas.model.fingerprint != fp:
        raise EditError(
            f"the atlas was measured on {atlas.model.name} {atlas.model.fingerprint[:19]}…, but this model is {fp[:19]}…; "
            "build edits on the model the atlas describes"
        )
    return Edit(
        kind=kind,
        components=components,
        tensors=tensors,
        model_name=M.model_name(model),
        model_fingerprint=fp,
        hyperparameters=hp,
        suite=suite or {},
        model_source=model.provenance.as_dict(),
    )


def select_components(
    model: Any,
    atlas: Atlas,
    suite: Suite,
    *,
    k: int,
    granularity: Granularity = "head",
    behaviour: str | None = None,
    split: SplitName = "build",
) -> tuple[Component, ...]:
    """The components an atlas points at, at head or neuron granularity.

    Args:
        model: The model the atlas was measured on.
        atlas: The atlas.
        suite: The behaviour's suite (its ``split`` ranks neurons).
        k: How many.
        granularity: ``"head"`` (top-``k`` flagged heads) or ``"neuron"`` (top-``k`` neurons of the
            flagged MLP layers by attribution-patching effect).
        behaviour: Behaviour name (default: the suite's name).
        split: Split used to rank neurons.

    Returns:
        Up to ``k`` components, strongest first.

    Raises:
        AtlasError: No such behaviour, or it flags nothing of the needed kind.
        ValueError: ``k < 1``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    b = atlas.behaviour(behaviour or suite.name)
    want = "head" if granularity == "head" else "mlp"
    flagged = [parse_component(c.id) for c in b.flagged() if c.kind == want]
    if not flagged:
        raise AtlasError(f"behaviour {b.name!r} flags no {want}; nothing to select")
    if granularity == "head":
        return tuple(flagged[:k])
    d_mlp = M.shape_of(model).d_mlp
    neurons = [NeuronRef(m.layer, n) for m in flagged for n in range(d_mlp)]
    result = attribution_patching(model, suite.pairs(split), metric_for_suite(model, suite), neurons, progress=False)
    order = torch.argsort(result.effects.mean(1), descending=True)[:k]
    return tuple(neurons[i] for i in order.tolist())


def _hook_of(c: Component) -> str:
    return HeadRef(c.layer, 0).hook_name if isinstance(c, HeadRef) else NeuronRef(c.layer, 0).hook_name


def _unit(c: Component) -> int:
    return c.head if isinstance(c, HeadRef) else c.index  # type: ignore[union-attr]


@torch.no_grad()
def _reference_bank(model: Any, groups: list[TokenGroup], components: tuple[Component, ...], size: int, seed: int) -> dict[str, Tensor]:
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
    model: Any,
    components: tuple[Component, ...],
    suite: Suite,
    *,
    mode: Literal["zero", "mean", "resample"] = "mean",
    bake: bool = False,
    split: SplitName = "build",
    atlas: Atlas | None = None,
    bank_size: int = 256,
    seed: int = 0,
) -> Edit:
    """Ablate heads' outputs ``z`` and/or neurons' ``hook_post``, as hooks or baked into the weights.

    * zero ablation sets the activation to 0; mean ablation to its mean over every position of the
      ``split`` prompts (clean and corrupted); resample ablation to the activation of a random
      reference prompt and position, drawn anew at every forward pass (Wang et al. 2023, IOI; Chan et
      al. 2022, causal scrubbing). Ablating flagged components is the pruning step of
      intervention-based causal pruning.
    * ``bake=True`` gives the structural-pruning form (kind ``pruning``): the component's output
      columns (``W_O[:, h]``, ``W_out[:, n]``) are zeroed and, for mean ablation, its constant mean
      contribution ``W_O[:, h] · mean`` is folded into the layer's output bias; identical outputs to
      the hook form, no hooks at generation time ("path-based merging"). Resample has no weight form.

    Args:
        model: The model.
        components: Heads (``L9H6``) and/or neurons (``L5N1024``), at all positions.
        suite: Suite whose ``split`` defines the means and the resample bank.
        mode: ``"zero"``, ``"mean"`` or ``"resample"``.
        bake: Build the weight (pruning) form.
        split: Reference split (default ``"build"``).
        atlas: The atlas the components came from (for model identity); default: the model itself.
        bank_size: Reference activations kept per component for resampling.
        seed: Seed for the bank and the per-pass draws.

    Returns:
        The edit (kind ``ablation`` or ``pruning``).

    Raises:
        EditError: No components, a component that is not a head or neuron, or ``bake`` with resample.
    """
    if not components:
        raise EditError("no components to ablate")
    if any(not isinstance(c, (HeadRef, NeuronRef)) or getattr(c, "pos", None) is not None for c in components):
        raise EditError(f"ablation acts on whole heads and neurons (e.g. L9H6, L5N1024), got {components}")
    if bake and mode == "resample":
        raise EditError("resample ablation is random per pass; it cannot be baked into weights")
    pairs = suite.pairs(split)
    groups = tokenize_pairs(model, pairs)
    tensors: dict[str, Tensor] = {}
    if mode == "mean":
        means = position_mean_activations(model, groups, sorted({_hook_of(c) for c in components}))
        tensors = {str(c): means[_hook_of(c)][_unit(c)].clone() for c in components}
    elif mode == "resample":
        tensors = _reference_bank(model, groups, components, bank_size, seed)
    hp: dict[str, Any] = {"mode": mode, "k": len(components)}
    if mode == "mean":
        hp["mean_over"] = f"{split} split, clean+corrupted, all positions"
    if mode == "resample":
        hp.update(seed=seed, bank_size=bank_size)
    return new_edit("pruning" if bake else "ablation", tuple(components), tensors, atlas, model, hp, suite_record(suite, split, pairs))


def scaling_edit(model: Any, components: tuple[Component, ...], *, alpha: float, atlas: Atlas | None = None) -> Edit:
    """Scale heads' ``z`` / neurons' ``hook_post`` by ``alpha`` (0 = zero ablation, 1 = no-op).

    Source: the attention-head scaling interventions of "Are Sixteen Heads Really Better than One?"
    (Michel et al. 2019) and amplification/suppression studies of circuits.

    Raises:
        EditError: No components, or a component that is not a head or neuron.
    """
    if not components or any(not isinstance(c, (HeadRef, NeuronRef)) for c in components):
        raise EditError(f"scaling acts on heads and neurons, got {components}")
    return new_edit("scaling", tuple(components), {}, atlas, model, {"alpha": float(alpha), "k": len(components)}, {})


@torch.no_grad()
def mean_difference(model: Any, suite: Suite, layer: int, *, split: SplitName = "build") -> Float[Tensor, " d_model"]:
    """``mean(resid_pre_L[clean, -1]) - mean(resid_pre_L[corrupted, -1])`` over a split's pairs.

    The difference-in-means direction of CAA (Rimsky et al. 2024) and of Arditi et al. 2024, read at
    the last prompt position, where the behaviour's next-token prediction is made.

    Raises:
        ValueError: ``layer`` out of range.
        PairError: Empty or misaligned pairs.
    """
    n_layers = M.shape_of(model).n_layers
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} out of range for {n_layers} layers")
    name = ResidRef(layer, None).hook_name
    total = torch.zeros(M.shape_of(model).d_model)
    n = 0
    for g in tokenize_pairs(model, suite.pairs(split)):
        b = g.clean.shape[0]
        _, cache = M.run_with_cache(model, torch.cat([g.clean, g.corrupted]), [name])
        last = cache[name][:, -1]
        total += (last[:b] - last[b:]).sum(0)
        n += b
    return total / n


def steering_edit(model: Any, suite: Suite, *, layer: int, coefficient: float = -1.0, split: SplitName = "build", atlas: Atlas | None = None) -> Edit:
    """A mean-difference steering vector added to ``resid_pre`` of ``layer`` at every position.

    Contrastive activation addition (CAA; Rimsky et al. 2024): ``v = mean(clean) − mean(corrupted)``
    at the last position (:func:`mean_difference`); the edit adds ``coefficient · v``. The default
    ``coefficient = −1`` steers away from the clean (harmful) side.

    Raises:
        ValueError: ``layer`` out of range.
    """
    pairs = suite.pairs(split)
    v = mean_difference(model, suite, layer, split=split)
    return new_edit("steering", (ResidRef(layer, None),), {"vector": v}, atlas, model, {"coefficient": float(coefficient), "layer": layer}, suite_record(suite, split, pairs))


def direction_edit(
    model: Any, suite: Suite, *, layer: int, bake: bool = False, split: SplitName = "build", atlas: Atlas | None = None
) -> Edit:
    """Directional ablation of the behaviour's difference-in-means direction (Arditi et al. 2024).

    ``r̂ = v / ‖v‖`` with ``v`` from :func:`mean_difference` at ``layer``. The hook form
    (``directional_ablation``) removes ``(x·r̂) r̂`` from the residual stream before and after every
    attention and MLP sublayer, at every position; the weight form (``orthogonalization``,
    ``bake=True``) projects ``r̂`` out of every matrix that writes to the residual stream
    (``W_E``, every ``W_O`` and ``W_out``, and their biases), so no component can write along ``r̂``.
    The two are equal (tested).

    Raises:
        ValueError: ``layer`` out of range.
        EditError: The difference in means is zero.
    """
    pairs = suite.pairs(split)
    v = mean_difference(model, suite, layer, split=split)
    if v.norm() < 1e-8:
        raise EditError(f"clean and corrupted means are equal at layer {layer}; no direction to ablate")
    kind = "orthogonalization" if bake else "directional_ablation"
    return new_edit(kind, (ResidRef(layer, None),), {"direction": v / v.norm()}, atlas, model, {"layer": layer}, suite_record(suite, split, pairs))

