"""One entry point from an atlas to an edit of any kind (used by the CLI, notebooks and experiments)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from circuits.atlas.schema import Atlas
from circuits.editing.apply import apply_edit
from circuits.editing.baselines import full_ft_edit, lora_all_edit
from circuits.editing.build import (
    Granularity,
    ablation_edit,
    check_atlas,
    direction_edit,
    scaling_edit,
    select_components,
    steering_edit,
    suite_record,
)
from circuits.editing.edit import Edit, EditError
from circuits.editing.kinds.ablation import MODES
from circuits.editing.train import TrainConfig, TrainingData, invariance_edit, low_rank_edit, neuron_repair_edit, offset_edit
from circuits.probing.pairs import prepare, tokenize_pairs
from circuits.suites import Suite

#: What a recipe can build: the edit kinds, plus ``pruning`` (an ablation applied as weights),
#: ``orthogonalization`` (a directional ablation applied as weights) and ``invariance`` (a low-rank
#: edit trained for counterfactual invariance), and the unrestricted baselines ``lora_all`` (a low-rank
#: edit of every layer) and ``full_ft`` (dense deltas of every layer; :mod:`circuits.editing.baselines`).
RecipeKind = Literal[
    "ablation", "pruning", "scaling", "steering", "offset", "directional_ablation", "orthogonalization", "low_rank",
    "invariance", "neuron_repair", "lora_all", "full_ft",
]
RECIPE_KINDS: tuple[str, ...] = get_args(RecipeKind)


@dataclass(frozen=True)
class EditRecipe:
    """How to build an edit from an atlas.

    Attributes:
        kind: One of :data:`RECIPE_KINDS`.
        k: Number of components (heads, or neurons for ``granularity="neuron"``).
        granularity: ``"head"`` or ``"neuron"`` (``neuron_repair`` always uses neurons).
        mode: Ablation/pruning mode (``zero``, ``mean``, ``resample``).
        alpha: Scaling factor (``scaling``) or low-rank scale (``low_rank``/``invariance``/``lora_all``).
        layer: Residual layer for ``steering``/``directional_ablation``/``orthogonalization``
            (``None``: the layer of the strongest flagged head).
        coefficient: Steering coefficient.
        rank: Low-rank edit rank (``low_rank``, ``invariance``, ``lora_all``).
        train: Training-loop settings for trained kinds (the baselines want smaller ``lr``s:
            :data:`circuits.editing.baselines.FULL_FT_LR`, :data:`circuits.editing.baselines.LORA_ALL_LR`).
    """

    kind: RecipeKind
    k: int = 3
    granularity: Granularity = "head"
    mode: str = "mean"
    alpha: float | None = None
    layer: int | None = None
    coefficient: float = -1.0
    rank: int = 4
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        """Validate every option before any work (a wrong option fails here, not after a model load).

        Raises:
            EditError: Unknown kind, granularity or mode; a count below 1; a non-finite number.
        """
        if self.kind not in RECIPE_KINDS:
            raise EditError(f"unknown edit kind {self.kind!r}; kinds: {', '.join(RECIPE_KINDS)}")
        if self.granularity not in ("head", "neuron"):
            raise EditError(f"granularity must be head or neuron, got {self.granularity!r}")
        if self.mode not in MODES:
            raise EditError(f"ablation mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.kind == "pruning" and self.mode == "resample":
            raise EditError("pruning is applied as weights; resample ablation has no weight form (use --kind ablation)")
        for name, v in (("k", self.k), ("rank", self.rank), ("steps", self.train.steps)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise EditError(f"{name} must be an integer >= 1, got {v!r}")
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0):
            raise EditError(f"layer must be an integer >= 0, got {self.layer!r}")
        for name, x in (("alpha", self.alpha), ("coefficient", self.coefficient), ("lr", self.train.lr), ("preservation", self.train.preservation)):
            if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x)):
                raise EditError(f"{name} must be a finite number, got {x!r}")
        if self.train.lr <= 0 or self.train.preservation < 0:
            raise EditError(f"lr must be > 0 and preservation >= 0, got {self.train.lr}, {self.train.preservation}")


def build_edit(model: Any, atlas: Atlas, suite: Suite, recipe: EditRecipe, *, behaviour: str | None = None) -> Edit:
    """Build (and for trained kinds, train) the edit a recipe describes, on the suite's build split.

    Args:
        model: The model the atlas was measured on.
        atlas: The atlas.
        suite: The behaviour's suite.
        recipe: What to build.
        behaviour: Behaviour name in the atlas (default: the suite's name).

    Returns:
        The edit.

    Raises:
        EditError: Unknown kind or options that do not fit it.
        AtlasError: The behaviour flags nothing usable.
    """
    if recipe.kind not in RECIPE_KINDS:
        raise EditError(f"unknown edit kind {recipe.kind!r}; kinds: {', '.join(RECIPE_KINDS)}")
    check_atlas(model, atlas)
    if recipe.kind in ("lora_all", "full_ft"):  # unrestricted baselines: no components from the atlas
        data = TrainingData.from_suite(model, suite)
        if recipe.kind == "full_ft":
            return full_ft_edit(model, data, config=recipe.train)
        return lora_all_edit(model, data, rank=recipe.rank, alpha=1.0 if recipe.alpha is None else recipe.alpha, config=recipe.train)
    b = behaviour or suite.name
    pairs = suite.pairs("build")
    data = prepare(model, pairs, suite.metric)
    groups, metric = data.groups, data.metric
    record = suite_record(suite, "build", pairs)
    granularity: Granularity = "neuron" if recipe.kind == "neuron_repair" else recipe.granularity
    if recipe.kind in ("steering", "directional_ablation", "orthogonalization"):
        layer = recipe.layer if recipe.layer is not None else select_components(model, atlas, b, k=1)[0].layer
        if recipe.kind == "steering":
            return steering_edit(model, groups, layer=layer, coefficient=recipe.coefficient, suite=record)
        form = "weights" if recipe.kind == "orthogonalization" else "hooks"
        return direction_edit(model, groups, layer=layer, form=form, suite=record)
    components = select_components(model, atlas, b, k=recipe.k, granularity=granularity, groups=groups, metric=metric)
    if recipe.kind in ("ablation", "pruning"):
        form = "weights" if recipe.kind == "pruning" else "hooks"
        return ablation_edit(model, components, groups, mode=recipe.mode, form=form, suite=record)  # type: ignore[arg-type]
    if recipe.kind == "scaling":
        return scaling_edit(model, components, alpha=0.5 if recipe.alpha is None else recipe.alpha)
    data = TrainingData.from_suite(model, suite)
    if recipe.kind == "offset":
        return offset_edit(model, components, data, config=recipe.train)
    if recipe.kind == "low_rank":
        return low_rank_edit(model, components, data, rank=recipe.rank, alpha=1.0 if recipe.alpha is None else recipe.alpha, config=recipe.train)
    if recipe.kind == "invariance":
        return invariance_edit(model, components, data, rank=recipe.rank, config=recipe.train)
    return neuron_repair_edit(model, components, data, config=recipe.train)


def choose_direction_layer(
    model: Any,
    suite: Suite,
    layers: Sequence[int],
    *,
    kind: RecipeKind = "directional_ablation",
    kl_budget: float = 0.1,
) -> tuple[int, list[dict[str, float]]]:
    """Pick the residual layer for a direction edit on the *build* split (never on evaluation data).

    For each candidate layer: build the difference-in-means direction edit (Arditi et al. 2024), measure
    the suite's harm on the build split (signed bias gap; absolute for spurious suites) and the KL to
    the unedited model on the build text (:func:`circuits.data.english_sample`, nats/token). The chosen
    layer has the lowest harm among layers within ``kl_budget``; if none is, the lowest ``harm + KL``.

    Args:
        model: The model.
        suite: The behaviour's suite.
        layers: Candidate layers.
        kind: ``"directional_ablation"`` or ``"orthogonalization"`` (same function, different form).
        kl_budget: Largest acceptable KL on the build text.

    Returns:
        ``(layer, sweep)``: the chosen layer and one ``{"layer", "harm", "kl"}`` row per candidate.

    Raises:
        EditError: No candidate layers, or a kind that is not a direction edit.
    """
    from circuits import model as M
    from circuits.data import english_sample
    from circuits.evaluation.run import neutral_kl, suite_harm

    if not layers or kind not in ("directional_ablation", "orthogonalization"):
        raise EditError(f"need candidate layers and a direction kind (got {list(layers)}, {kind!r})")
    windows = M.text_windows(model, english_sample(), window=128)
    groups = tokenize_pairs(model, suite.pairs("build"))
    sweep = []
    for layer in layers:
        edit = direction_edit(model, groups, layer=layer, form="weights" if kind == "orthogonalization" else "hooks")
        # The edit was just built from this model: no need to hash its weights again per layer.
        with apply_edit(model, edit, check_fingerprint=False):
            harm = float(suite_harm(model, suite, "build").mean())
        sweep.append({"layer": float(layer), "harm": harm, "kl": float(neutral_kl(model, [edit], windows, check_fingerprint=False).mean())})
    ok = [r for r in sweep if r["kl"] <= kl_budget]
    best = min(ok, key=lambda r: r["harm"]) if ok else min(sweep, key=lambda r: r["harm"] + r["kl"])
    return int(best["layer"]), sweep
