"""One entry point from an atlas to an edit of any kind (used by the CLI, notebooks and experiments)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from circuits.atlas.schema import Atlas
from circuits.editing.build import Granularity, ablation_edit, direction_edit, scaling_edit, select_components, steering_edit
from circuits.editing.edit import EDIT_KINDS, Edit, EditError, EditKind
from circuits.editing.train import TrainConfig, TrainingData, invariance_edit, low_rank_edit, neuron_repair_edit, offset_edit
from circuits.suites import Suite


@dataclass(frozen=True)
class EditRecipe:
    """How to build an edit from an atlas.

    Attributes:
        kind: One of :data:`~circuits.editing.edit.EDIT_KINDS`.
        k: Number of components (heads, or neurons for ``granularity="neuron"``).
        granularity: ``"head"`` or ``"neuron"`` (``neuron_repair`` always uses neurons).
        mode: Ablation/pruning mode (``zero``, ``mean``, ``resample``).
        alpha: Scaling factor (``scaling``) or low-rank scale (``low_rank``/``invariance``).
        layer: Residual layer for ``steering``/``directional_ablation``/``orthogonalization``
            (``None``: the layer of the strongest flagged head).
        coefficient: Steering coefficient.
        rank: Low-rank edit rank.
        train: Training-loop settings for trained kinds.
    """

    kind: EditKind
    k: int = 3
    granularity: Granularity = "head"
    mode: str = "mean"
    alpha: float | None = None
    layer: int | None = None
    coefficient: float = -1.0
    rank: int = 4
    train: TrainConfig = field(default_factory=TrainConfig)


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
    if recipe.kind not in EDIT_KINDS:
        raise EditError(f"unknown edit kind {recipe.kind!r}; kinds: {', '.join(EDIT_KINDS)}")
    b = behaviour or suite.name
    granularity: Granularity = "neuron" if recipe.kind == "neuron_repair" else recipe.granularity
    if recipe.kind in ("steering", "directional_ablation", "orthogonalization"):
        layer = recipe.layer if recipe.layer is not None else select_components(model, atlas, suite, k=1, behaviour=b)[0].layer
        if recipe.kind == "steering":
            return steering_edit(model, suite, layer=layer, coefficient=recipe.coefficient, atlas=atlas)
        return direction_edit(model, suite, layer=layer, bake=recipe.kind == "orthogonalization", atlas=atlas)
    components = select_components(model, atlas, suite, k=recipe.k, granularity=granularity, behaviour=b)
    if recipe.kind in ("ablation", "pruning"):
        return ablation_edit(model, components, suite, mode=recipe.mode, bake=recipe.kind == "pruning", atlas=atlas)  # type: ignore[arg-type]
    if recipe.kind == "scaling":
        return scaling_edit(model, components, alpha=0.5 if recipe.alpha is None else recipe.alpha, atlas=atlas)
    data = TrainingData.from_suite(model, suite)
    if recipe.kind == "offset":
        return offset_edit(model, components, data, config=recipe.train, atlas=atlas)
    if recipe.kind == "low_rank":
        return low_rank_edit(model, components, data, rank=recipe.rank, alpha=1.0 if recipe.alpha is None else recipe.alpha, config=recipe.train, atlas=atlas)
    if recipe.kind == "invariance":
        return invariance_edit(model, components, data, rank=recipe.rank, config=recipe.train, atlas=atlas)
    return neuron_repair_edit(model, components, data, config=recipe.train, atlas=atlas)
