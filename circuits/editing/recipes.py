"""The recipe registry: how each edit kind is built from an atlas — the one list that ``build_edit``, the
CLI (``circuits edit``) and the docs (``docs/edit_kinds.md``) read.

A **recipe** (:class:`EditRecipe`) is ``(kind, form, objective)`` plus the method's typed parameters:

* the **kind** (:data:`circuits.editing.kinds.KINDS`) says what the edit stores and where it acts;
* the **form** (``hooks`` or ``weights``, one of the kind's ``forms``) says how it is applied by
  default — ``pruning`` is an ablation applied as weights, ``orthogonalization`` a directional
  ablation applied as weights;
* the **objective** says how its tensors are found: ``reference`` (statistics of the build prompts'
  activations), ``constant`` (given), ``mean_difference`` (clean − corrupted means), ``gap`` or
  ``invariance`` (trained on the squared bias gap or the symmetric KL between a prompt and its
  counterfactual, :mod:`circuits.editing.train`), ``care`` (ACE ranking and particle swarm,
  :mod:`circuits.editing.care`) or ``aifs`` (a gate trained under synthetic interventions,
  :mod:`circuits.editing.aifs`).

:data:`METHODS` lists every ``(kind, objective)`` the library builds, each with its parameters type
(a frozen dataclass whose defaults are the recipe's defaults, validated on construction) and builder;
:data:`PRESETS` names the combinations the experiments use (``pruning``, ``orthogonalization``,
``invariance``, ``lora_all``, ``full_ft``, ``care``). Every recipe is built on the suite's *build*
split only; trained methods hold out a quarter of its templates for early stopping.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

from circuits.atlas.schema import Atlas
from circuits.editing.aifs import aifs_from_atlas
from circuits.editing.baselines import LORA_ALL_LR, full_ft_edit, lora_all_edit
from circuits.editing.build import (
    Granularity,
    Selector,
    ablation_edit,
    check_atlas,
    direction_edit,
    scaling_edit,
    select_components,
    steering_edit,
    suite_record,
)
from circuits.editing.care import care_edit
from circuits.editing.edit import Edit, EditError
from circuits.editing.kinds import KINDS, Form
from circuits.editing.params import (
    AblationParams,
    AIFSParams,
    CareParams,
    DirectionParams,
    LowRankParams,
    NeuronRepairParams,
    OffsetParams,
    ScalingParams,
    SteeringParams,
    WeightDeltaParams,
    check_value,
    flat_fields,
    param_hints,
    parse_value,
    set_fields,
)
from circuits.editing.train import (
    TrainConfig,
    TrainingData,
    low_rank_edit,
    neuron_repair_edit,
    offset_edit,
)
from circuits.model import HookedLM
from circuits.probing.pairs import Prepared, prepare
from circuits.suites import Suite

#: ``(model, atlas, suite, behaviour, recipe) → edit``, on the suite's build split (``behaviour``: the
#: behaviour in the atlas, ``None`` for the suite's name).
Builder = Callable[[Any, Atlas, Suite, "str | None", "EditRecipe"], Edit]


def _build_pairs(model: HookedLM, suite: Suite) -> tuple[Prepared, dict[str, str | int]]:
    pairs = suite.pairs("build")
    return prepare(model, pairs, suite.metric), suite_record(suite, "build", pairs)


def _select(model: HookedLM, atlas: Atlas, behaviour: str, data: Prepared, k: int, granularity: Granularity, by: Selector) -> tuple:
    return select_components(model, atlas, behaviour, k=k, granularity=granularity, groups=data.groups, metric=data.metric, by=by)


def _layer(model: HookedLM, atlas: Atlas, behaviour: str, layer: int | None, by: Selector) -> int:
    return layer if layer is not None else select_components(model, atlas, behaviour, k=1, by=by)[0].layer


def _named(suite: Suite, behaviour: str | None) -> str:
    return behaviour or suite.name


def _ablation(model: HookedLM, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: AblationParams = r.params
    data, record = _build_pairs(model, suite)
    comps = _select(model, atlas, _named(suite, b), data, p.k, p.granularity, r.select)
    return ablation_edit(model, comps, data.groups, mode=p.mode, form=r.form, seed=p.seed, suite=record)  # type: ignore[arg-type]


def _scaling(model: HookedLM, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: ScalingParams = r.params
    data, record = _build_pairs(model, suite)
    return scaling_edit(model, _select(model, atlas, _named(suite, b), data, p.k, p.granularity, r.select), alpha=p.alpha, form=r.form, suite=record)  # type: ignore[arg-type]


def _steering(model: HookedLM, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: SteeringParams = r.params
    data, record = _build_pairs(model, suite)
    layer = _layer(model, atlas, _named(suite, b), p.layer, r.select)
    return steering_edit(model, data.groups, layer=layer, coefficient=p.coefficient, form=r.form, suite=record)  # type: ignore[arg-type]


def _direction(model: HookedLM, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: DirectionParams = r.params
    data, record = _build_pairs(model, suite)
    return direction_edit(model, data.groups, layer=_layer(model, atlas, _named(suite, b), p.layer, r.select), form=r.form, suite=record)  # type: ignore[arg-type]


def _offset(model: HookedLM, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: OffsetParams = r.params
    data, _ = _build_pairs(model, suite)
    comps = _select(model, atlas, _named(suite, b), data, p.k, p.granularity, r.select)
    return offset_edit(model, comps, TrainingData.from_suite(model, suite), objective=r.objective, config=p.train)  # type: ignore[arg-type]


def _low_rank(model: HookedLM, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: LowRankParams = r.params
    if p.scope == "all":  # the unrestricted baseline: nothing selected from the atlas
        data = TrainingData.from_suite(model, suite)
        return lora_all_edit(model, data, rank=p.rank, alpha=p.alpha, objective=r.objective, config=p.train)  # type: ignore[arg-type]
    pairs, _ = _build_pairs(model, suite)
    comps = _select(model, atlas, _named(suite, b), pairs, p.k, p.granularity, r.select)
    data = TrainingData.from_suite(model, suite)
    return low_rank_edit(model, comps, data, rank=p.rank, alpha=p.alpha, objective=r.objective, config=p.train)  # type: ignore[arg-type]


def _neuron_repair(model: HookedLM, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: NeuronRepairParams = r.params
    data, _ = _build_pairs(model, suite)
    neurons = _select(model, atlas, _named(suite, b), data, p.k, "neuron", r.select)
    return neuron_repair_edit(model, neurons, TrainingData.from_suite(model, suite), objective=r.objective, config=p.train)  # type: ignore[arg-type]


def _care(model: HookedLM, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: CareParams = r.params
    return care_edit(model, atlas, suite, _named(suite, b), candidates=p.candidates, max_pairs=p.max_pairs, config=p.config).edit


def _aifs(model: HookedLM, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: AIFSParams = r.params
    return aifs_from_atlas(model, atlas, suite, _named(suite, b), site=p.site, layer=p.layer, k=p.k, max_pairs=p.max_pairs, config=p.config)


def _weight_delta(model: HookedLM, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: WeightDeltaParams = r.params
    return full_ft_edit(model, TrainingData.from_suite(model, suite), objective=r.objective, config=p.train)  # type: ignore[arg-type]


# --- the registry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """One way to build a kind: an objective, its typed parameters and its builder.

    Attributes:
        kind: A key of :data:`~circuits.editing.kinds.KINDS`.
        objective: How the tensors are found (recorded as the edit's ``objective``).
        params: The parameters dataclass (its defaults are the method's defaults).
        build: The builder.
        summary: One line, for the CLI help and the docs.
        source: The method's source.
    """

    kind: str
    objective: str
    params: type
    build: Builder
    summary: str
    source: str


_GAP = "trained: squared bias gap (m(x) − m(x'))² + λ·KL to the unedited model on neutral text"
_INVARIANCE = "trained: symmetric KL between the next-token distributions on x and x' + λ·KL preservation"
_TRAINED_SOURCE = "train_edit (circuits.editing.train); counterfactual invariance: Peters et al. 2016"

#: Every ``(kind, objective)`` the library builds from an atlas; a kind's first method is its default.
METHODS: tuple[Method, ...] = (
    Method("ablation", "reference", AblationParams, _ablation, "zero, the mean, or a resampled value of the build prompts' activations",
           "Wang et al. 2023; Chan et al. 2022"),
    Method("scaling", "constant", ScalingParams, _scaling, "a given factor α", "Michel et al. 2019"),
    Method("steering", "mean_difference", SteeringParams, _steering, "coefficient × (mean clean − mean corrupted) at the last position",
           "Rimsky et al. 2024"),
    Method("offset", "gap", OffsetParams, _offset, _GAP, _TRAINED_SOURCE),
    Method("offset", "invariance", OffsetParams, _offset, _INVARIANCE, _TRAINED_SOURCE),
    Method("directional_ablation", "mean_difference", DirectionParams, _direction, "the unit clean − corrupted mean difference at the last position",
           "Arditi et al. 2024"),
    Method("low_rank", "gap", LowRankParams, _low_rank, _GAP, "Hu et al. 2022 (LoRA), restricted to the circuit or on every layer"),
    Method("low_rank", "invariance", LowRankParams, _low_rank, _INVARIANCE, "counterfactual invariance fine-tuning (Peters et al. 2016; AIFS)"),
    Method("neuron_repair", "gap", NeuronRepairParams, _neuron_repair, _GAP + "; neurons by attribution patching", _TRAINED_SOURCE),
    Method("neuron_repair", "invariance", NeuronRepairParams, _neuron_repair, _INVARIANCE + "; neurons by attribution patching", _TRAINED_SOURCE),
    Method("neuron_repair", "care", CareParams, _care,
           "CARE: flagged-MLP neurons screened by attribution patching, ranked by interventional ACE, scales by particle swarm "
           "(unfairness vs accuracy on prompts labelled by their pair's answer); NSGA-III front recorded",
           "Sun et al. 2022 (CARE); seed 003"),
    Method("aifs", "aifs", AIFSParams, _aifs,
           "gate trained with L_ce + α·L_inv + β·L_sens under mask-gated noise z + λ(m ⊗ ε), mask from integrated gradients "
           "(prompts labelled by their pair's answer)", "seed 002 (AIFS)"),
    Method("weight_delta", "gap", WeightDeltaParams, _weight_delta, _GAP + "; every projection of every layer (full fine-tuning)", "seed 004; issue 22"),
    Method("weight_delta", "invariance", WeightDeltaParams, _weight_delta, _INVARIANCE + "; every projection of every layer", "seed 004; issue 22"),
)

#: Every objective name, in registry order (the ``--objective`` choices).
OBJECTIVES: tuple[str, ...] = tuple(dict.fromkeys(m.objective for m in METHODS))


def methods_of(kind: str) -> tuple[Method, ...]:
    """The methods that build ``kind``, its default first.

    Raises:
        EditError: Unknown kind.
    """
    if kind not in KINDS:
        raise EditError(f"unknown edit kind {kind!r}; kinds: {', '.join(KINDS)}")
    return tuple(m for m in METHODS if m.kind == kind)


def method(kind: str, objective: str) -> Method:
    """The method that builds ``kind`` by ``objective``.

    Raises:
        EditError: Unknown kind, or an objective that does not build it (naming the ones that do).
    """
    found = [m for m in methods_of(kind) if m.objective == objective]
    if not found:
        raise EditError(f"a {kind} edit is not built by objective {objective!r}; its objectives: {', '.join(m.objective for m in methods_of(kind))}")
    return found[0]


@dataclass(frozen=True)
class EditRecipe:
    """How to build an edit from an atlas: ``(kind, form, objective)`` and the method's typed parameters.

    ``None`` fields take the registry's defaults on construction: the kind's first form, its first
    objective (:func:`methods_of`), the method's default parameters. :meth:`with_options` sets
    parameters by name (``k``, ``mode``, ``rank``, ``steps``, ``lr``, ``seed``…), as the CLI does.

    Attributes:
        kind: A key of :data:`~circuits.editing.kinds.KINDS`.
        form: The edit's default form (``"hooks"`` or ``"weights"``).
        objective: How its tensors are found (a :class:`Method` of the kind).
        params: An instance of the method's parameters type.
        select: The atlas components acted on (``by`` of :func:`~circuits.editing.build.select_components`):
            ``"flagged"`` (default), ``"top"`` (largest mean effects, flagged or not: a first look at a scan of too
            few pairs to flag anything), ``"R"`` or ``"tracing"``; recorded in the edit's ``suite`` unless ``"flagged"``.
    """

    kind: str
    form: Form | None = None
    objective: str | None = None
    params: Any = None
    select: Selector = "flagged"

    def __post_init__(self) -> None:
        """Resolve the defaults and validate everything before any work (a wrong option fails here, not after a model load).

        Raises:
            EditError: Unknown kind or objective, parameters of another method, a form the kind (with these
                parameters) does not have, or a parameter out of range.
        """
        default = methods_of(self.kind)[0]
        m = method(self.kind, self.objective if self.objective is not None else default.objective)
        params = m.params() if self.params is None else self.params
        if type(params) is not m.params:
            raise EditError(f"{self.kind} by {m.objective} takes {m.params.__name__}, got {type(params).__name__}")
        check_value("select", self.select, Selector)
        spec = KINDS[self.kind]
        form = spec.forms[0] if self.form is None else self.form
        spec.check_form(form, {k: v for k, (v, _) in flat_fields(params).items()})
        object.__setattr__(self, "objective", m.objective)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "form", form)

    @property
    def method(self) -> Method:
        """Its :class:`Method`."""
        return method(self.kind, self.objective)  # type: ignore[arg-type]

    def options(self) -> dict[str, Any]:
        """Its parameters by option name (nested settings such as ``train`` flattened: ``steps``, ``lr``…)."""
        return {k: v for k, (v, _) in flat_fields(self.params).items()}

    def with_options(self, **options: Any) -> EditRecipe:
        """A copy with parameters set by option name.

        Args:
            **options: Option names of this recipe's method (:meth:`options`) and their values.

        Returns:
            The new recipe (validated).

        Raises:
            EditError: A non-finite number, an option this method does not take (naming the ones it
                does), or a value out of range.
        """
        for name, value in options.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise EditError(f"{name} must be a finite number, got {value!r}")
        known = flat_fields(self.params)
        unknown = [n for n in options if n not in known]
        if unknown:
            raise EditError(f"{', '.join(unknown)} {'does' if len(unknown) == 1 else 'do'} not apply to {self}; its options: {', '.join(known)}")
        for name, value in options.items():  # before the dataclasses are made: one error type for every bad value
            check_value(name, value, known[name][1])
        return replace(self, params=set_fields(self.params, options))

    def with_assignments(self, assignments: Sequence[str]) -> EditRecipe:
        """A copy with ``NAME=VALUE`` strings (the CLI's ``--param``: ``"bounds=0,1.2"``, ``"layer=none"``) set, each parsed by its parameter's type.

        Raises:
            EditError: No ``=``, an option this method does not take, or a value that does not parse or is out of range.
        """
        types_ = {k: hint for k, (_, hint) in flat_fields(self.params).items()}
        options: dict[str, Any] = {}
        for a in assignments:
            name, eq, text = (part.strip() for part in a.partition("="))
            if not eq or name not in types_:
                raise EditError(f"{name} does not apply to {self}; its options: {', '.join(types_)}" if eq else f"--param takes NAME=VALUE, got {a!r}")
            options[name] = parse_value(name, text, types_[name])
        return self.with_options(**options)

    def with_shared(self, **options: Any) -> EditRecipe:
        """A copy with those of ``options`` this method takes set, the others skipped.

        For settings a sweep over kinds shares (``steps``, ``seed``, ``progress``): a gradient-trained
        method takes ``steps``, a constant one does not. Use :meth:`with_options` for options meant for
        this method (an option it does not take is an error there).

        Raises:
            EditError: A value out of range.
        """
        known = self.options()
        return self.with_options(**{k: v for k, v in options.items() if k in known})

    def __str__(self) -> str:
        return f"{self.kind} ({self.form}, {self.objective})"


#: Named recipes of the experiments: (kind, form, objective) combinations from :data:`METHODS`.
PRESETS: dict[str, EditRecipe] = {
    "pruning": EditRecipe("ablation", form="weights"),
    "orthogonalization": EditRecipe("directional_ablation", form="weights"),
    "invariance": EditRecipe("low_rank", objective="invariance"),
    "lora_all": EditRecipe("low_rank", params=LowRankParams(scope="all", train=TrainConfig(lr=LORA_ALL_LR))),
    "full_ft": EditRecipe("weight_delta"),
    "care": EditRecipe("neuron_repair", objective="care"),
}


def recipe(
    name: str, *, form: Form | None = None, objective: str | None = None, select: Selector = "flagged", **options: Any
) -> EditRecipe:
    """The recipe a kind or a preset names, with options set (what scripts and notebooks use).

    Args:
        name: A kind (:data:`~circuits.editing.kinds.KINDS`: its default form and objective unless
            given) or a preset (:data:`PRESETS`: its form and objective are fixed).
        form: The edit's default form (kinds only).
        objective: The objective (kinds only).
        select: ``"flagged"``, ``"top"``, ``"R"`` or ``"tracing"`` (:attr:`EditRecipe.select`).
        **options: Parameters by option name (:meth:`EditRecipe.with_options`).

    Returns:
        The recipe.

    Raises:
        EditError: Neither a kind nor a preset, a form or objective given with a preset, or a bad option.
    """
    if name in PRESETS:
        if form is not None or objective is not None:
            raise EditError(f"preset {name!r} fixes the kind, form and objective ({PRESETS[name]}); name a kind to choose them")
        return replace(PRESETS[name], select=select).with_options(**options)
    if name not in KINDS:
        raise EditError(f"unknown edit kind or preset {name!r}; kinds: {', '.join(KINDS)}; presets: {', '.join(PRESETS)}")
    return EditRecipe(name, form=form, objective=objective, select=select).with_options(**options)


def build_edit(model: HookedLM, atlas: Atlas, suite: Suite, recipe: EditRecipe, *, behaviour: str | None = None) -> Edit:
    """Build (and for trained methods, train) the edit a recipe describes, on the suite's build split.

    Args:
        model: The model the atlas was measured on.
        atlas: The atlas.
        suite: The behaviour's suite.
        recipe: What to build.
        behaviour: Behaviour name in the atlas (default: the suite's name).

    Returns:
        The edit: the recipe's kind, in its form, with its objective recorded.

    Raises:
        EditError: An atlas of other weights or tokenization, or data the method cannot use (e.g. CARE
            or AIFS on pairs without two answers).
        AtlasError: The behaviour flags nothing usable.
    """
    check_atlas(model, atlas)
    edit = recipe.method.build(model, atlas, suite, behaviour, recipe)
    if (edit.kind, edit.objective) != (recipe.kind, recipe.objective):
        raise AssertionError(f"the {recipe} builder made a {edit.kind} edit by {edit.objective}")  # a registry bug, not a user error
    if recipe.select != "flagged":
        edit = replace(edit, suite={**edit.suite, "select": recipe.select})
    return edit if edit.form == recipe.form else replace(edit, form=recipe.form)


def _check_registry() -> None:
    """Every kind is buildable, objectives are distinct per kind, and option names are unique per method."""
    for k in KINDS:
        objectives = [m.objective for m in methods_of(k)]
        if not objectives or len(set(objectives)) != len(objectives):
            raise AssertionError(f"kind {k!r} has objectives {objectives}")
    for m in METHODS:
        names: list[str] = []

        def collect(cls: type) -> None:
            for f in fields(cls):
                hint = param_hints(cls)[f.name]
                if isinstance(hint, type) and is_dataclass(hint):
                    collect(hint)
                else:
                    names.append(f.name)

        collect(m.params)
        if len(set(names)) != len(names):
            raise AssertionError(f"{m.kind}/{m.objective}: option names repeat: {names}")
    if set(PRESETS) & set(KINDS):
        raise AssertionError("a preset is named like a kind")


_check_registry()

__all__ = [
    "AIFSParams", "AblationParams", "CareParams", "DirectionParams", "EditRecipe", "LowRankParams", "METHODS", "Method", "NeuronRepairParams",
    "OBJECTIVES", "OffsetParams", "PRESETS", "ScalingParams", "SteeringParams", "WeightDeltaParams", "build_edit", "method", "methods_of", "recipe",
]
