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
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from circuits.atlas.schema import Atlas
from circuits.editing.aifs import AIFSConfig, AifsSite, aifs_from_atlas
from circuits.editing.apply import apply_edit
from circuits.editing.baselines import FULL_FT_LR, LORA_ALL_LR, full_ft_edit, lora_all_edit
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
from circuits.editing.care import CareConfig, care_edit
from circuits.editing.edit import Edit, EditError
from circuits.editing.kinds import KINDS, Form
from circuits.editing.train import TrainConfig, TrainingData, low_rank_edit, neuron_repair_edit, offset_edit
from circuits.probing.pairs import Prepared, prepare, tokenize_pairs
from circuits.suites import Suite

Scope = Literal["flagged", "all"]
AblationMode = Literal["zero", "mean", "resample"]

# --- validation of the typed parameters ------------------------------------------------------------

#: Integer parameters that may be 0 (every other integer is a count, >= 1).
_MAY_BE_ZERO = frozenset({"seed", "layer"})


def _check_value(name: str, value: Any, hint: Any) -> None:
    """Refuse a value that does not fit its annotation (counts >= 1, finite floats, a Literal's values).

    Raises:
        EditError: Naming the parameter.
    """
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        if value not in args:
            raise EditError(f"{name} must be one of {', '.join(map(str, args))}, got {value!r}")
    elif origin in (Union, types.UnionType) and type(None) in args:
        if value is not None:
            (inner,) = [a for a in args if a is not type(None)]
            _check_value(name, value, inner)
    elif origin is tuple:
        if not isinstance(value, tuple) or len(value) != len(args):
            raise EditError(f"{name} must be {len(args)} numbers, got {value!r}")
        for v, a in zip(value, args):
            _check_value(name, v, a)
    elif hint is bool:
        if not isinstance(value, bool):
            raise EditError(f"{name} must be true or false, got {value!r}")
    elif hint is int:
        least = 0 if name in _MAY_BE_ZERO else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise EditError(f"{name} must be an integer >= {least}, got {value!r}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise EditError(f"{name} must be a finite number, got {value!r}")
        if name == "lr" and value <= 0:
            raise EditError(f"lr must be > 0, got {value!r}")
        if name == "preservation" and value < 0:
            raise EditError(f"preservation must be >= 0, got {value!r}")
    elif hint is str and not isinstance(value, str):
        raise EditError(f"{name} must be a string, got {value!r}")


def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=False)


def _check_fields(params: Any) -> None:
    """Validate every field of a parameters dataclass (and of the settings dataclass it nests) by its type.

    Raises:
        EditError: The first bad value, naming its parameter.
    """
    hints = _hints(type(params))
    for f in fields(params):
        value = getattr(params, f.name)
        if is_dataclass(value):
            _check_fields(value)
        else:
            _check_value(f.name, value, hints[f.name])


class _Params:
    """Base of the parameters dataclasses: validated on construction."""

    def __post_init__(self) -> None:
        _check_fields(self)


# --- the parameters of each method -----------------------------------------------------------------


@dataclass(frozen=True)
class AblationParams(_Params):
    """``ablation`` / ``reference``.

    Attributes:
        k: Components: the top-``k`` flagged heads, or neurons of the flagged MLP layers by attribution.
        granularity: ``"head"`` or ``"neuron"``.
        mode: ``"zero"``, ``"mean"`` (over every position of the build prompts, clean and corrupted) or
            ``"resample"`` (a reference bank drawn from them; no weight form).
        seed: Seed of the resample bank and of its per-pass draws.
    """

    k: int = 3
    granularity: Granularity = "head"
    mode: AblationMode = "mean"
    seed: int = 0


@dataclass(frozen=True)
class ScalingParams(_Params):
    """``scaling`` / ``constant``.

    Attributes:
        k: Components (as :class:`AblationParams`).
        granularity: ``"head"`` or ``"neuron"``.
        alpha: The factor (0 < α < 1 suppresses; α = 0 is zero ablation).
    """

    k: int = 3
    granularity: Granularity = "head"
    alpha: float = 0.5


@dataclass(frozen=True)
class SteeringParams(_Params):
    """``steering`` / ``mean_difference``.

    Attributes:
        layer: Residual layer whose input is steered (``None``: the layer of the strongest flagged head).
        coefficient: Multiple of the clean − corrupted mean difference added (negative: away from the clean side).
    """

    layer: int | None = None
    coefficient: float = -1.0


@dataclass(frozen=True)
class DirectionParams(_Params):
    """``directional_ablation`` / ``mean_difference``.

    Attributes:
        layer: Residual layer the direction is read at (``None``: the layer of the strongest flagged
            head; :func:`choose_direction_layer` sweeps layers on the build split).
    """

    layer: int | None = None


@dataclass(frozen=True)
class OffsetParams(_Params):
    """``offset`` / ``gap`` or ``invariance``.

    Attributes:
        k: Components (as :class:`AblationParams`).
        granularity: ``"head"`` or ``"neuron"``.
        train: The training loop's settings.
    """

    k: int = 3
    granularity: Granularity = "head"
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class LowRankParams(_Params):
    """``low_rank`` / ``gap`` or ``invariance``.

    Attributes:
        k: Components whose output weights are edited (``scope="flagged"``).
        granularity: ``"head"`` or ``"neuron"``.
        rank: ``r`` of ``B A``.
        alpha: The scale ``α`` of ``W + α B A``.
        scope: ``"flagged"`` (the components' output columns) or ``"all"`` (every q, k, v, o, gate, in
            and out projection of every layer, nothing selected from the atlas: the ``lora_all``
            baseline, :mod:`circuits.editing.baselines`).
        train: The training loop's settings.
    """

    k: int = 3
    granularity: Granularity = "head"
    rank: int = 4
    alpha: float = 1.0
    scope: Scope = "flagged"
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class NeuronRepairParams(_Params):
    """``neuron_repair`` / ``gap`` or ``invariance`` (output scales trained by gradient descent).

    Attributes:
        k: Neurons of the flagged MLP layers, by attribution.
        train: The training loop's settings.
    """

    k: int = 3
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class CareParams(_Params):
    """``neuron_repair`` / ``care`` (the settings of ``scripts/headline.py``'s CARE rows by default).

    Attributes:
        candidates: Neurons of the flagged MLP layers screened by attribution patching, then ranked by ACE.
        max_pairs: Build pairs used (spread over the split): the ACE, unfairness and accuracy objectives.
        config: CARE's settings (repaired ``k``, scale bounds, PSO/NSGA-III sizes, ACE values, seed).
    """

    candidates: int = 24
    max_pairs: int = 40
    config: CareConfig = field(default_factory=lambda: CareConfig(k=4, pop_size=10, generations=5, n_values=3))


@dataclass(frozen=True)
class AIFSParams(_Params):
    """``aifs`` / ``aifs``.

    Attributes:
        site: ``"resid"`` (the residual stream entering ``layer``) or ``"heads"`` (up to ``k`` flagged
            heads of ``layer``).
        layer: The site's layer (``None``: the layer of the strongest flagged head).
        k: Heads, for ``site="heads"``.
        max_pairs: Build pairs whose prompts (clean and corrupted) are the labelled training prompts.
        config: AIFS's settings (λ, α, β, γ, ε, epochs, learning rate, seed…).
    """

    site: AifsSite = "resid"
    layer: int | None = None
    k: int = 3
    max_pairs: int = 40
    config: AIFSConfig = field(default_factory=AIFSConfig)


@dataclass(frozen=True)
class WeightDeltaParams(_Params):
    """``weight_delta`` / ``gap`` or ``invariance``: full fine-tuning of every projection of every layer.

    Attributes:
        train: The training loop's settings (default learning rate :data:`~circuits.editing.baselines.FULL_FT_LR`).
    """

    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=FULL_FT_LR))


# --- builders ---------------------------------------------------------------------------------------

#: ``(model, atlas, suite, behaviour, recipe) → edit``, on the suite's build split (``behaviour``: the
#: behaviour in the atlas, ``None`` for the suite's name).
Builder = Callable[[Any, Atlas, Suite, "str | None", "EditRecipe"], Edit]


def _build_pairs(model: Any, suite: Suite) -> tuple[Prepared, dict[str, str | int]]:
    pairs = suite.pairs("build")
    return prepare(model, pairs, suite.metric), suite_record(suite, "build", pairs)


def _select(model: Any, atlas: Atlas, behaviour: str, data: Prepared, k: int, granularity: Granularity) -> tuple:
    return select_components(model, atlas, behaviour, k=k, granularity=granularity, groups=data.groups, metric=data.metric)


def _layer(model: Any, atlas: Atlas, behaviour: str, layer: int | None) -> int:
    return layer if layer is not None else select_components(model, atlas, behaviour, k=1)[0].layer


def _named(suite: Suite, behaviour: str | None) -> str:
    return behaviour or suite.name


def _ablation(model: Any, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: AblationParams = r.params
    data, record = _build_pairs(model, suite)
    comps = _select(model, atlas, _named(suite, b), data, p.k, p.granularity)
    return ablation_edit(model, comps, data.groups, mode=p.mode, form=r.form, seed=p.seed, suite=record)  # type: ignore[arg-type]


def _scaling(model: Any, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: ScalingParams = r.params
    data, record = _build_pairs(model, suite)
    return scaling_edit(model, _select(model, atlas, _named(suite, b), data, p.k, p.granularity), alpha=p.alpha, form=r.form, suite=record)  # type: ignore[arg-type]


def _steering(model: Any, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: SteeringParams = r.params
    data, record = _build_pairs(model, suite)
    layer = _layer(model, atlas, _named(suite, b), p.layer)
    return steering_edit(model, data.groups, layer=layer, coefficient=p.coefficient, form=r.form, suite=record)  # type: ignore[arg-type]


def _direction(model: Any, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: DirectionParams = r.params
    data, record = _build_pairs(model, suite)
    return direction_edit(model, data.groups, layer=_layer(model, atlas, _named(suite, b), p.layer), form=r.form, suite=record)  # type: ignore[arg-type]


def _offset(model: Any, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: OffsetParams = r.params
    data, _ = _build_pairs(model, suite)
    comps = _select(model, atlas, _named(suite, b), data, p.k, p.granularity)
    return offset_edit(model, comps, TrainingData.from_suite(model, suite), objective=r.objective, config=p.train)  # type: ignore[arg-type]


def _low_rank(model: Any, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: LowRankParams = r.params
    if p.scope == "all":  # the unrestricted baseline: nothing selected from the atlas
        data = TrainingData.from_suite(model, suite)
        return lora_all_edit(model, data, rank=p.rank, alpha=p.alpha, objective=r.objective, config=p.train)  # type: ignore[arg-type]
    pairs, _ = _build_pairs(model, suite)
    comps = _select(model, atlas, _named(suite, b), pairs, p.k, p.granularity)
    data = TrainingData.from_suite(model, suite)
    return low_rank_edit(model, comps, data, rank=p.rank, alpha=p.alpha, objective=r.objective, config=p.train)  # type: ignore[arg-type]


def _neuron_repair(model: Any, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: NeuronRepairParams = r.params
    data, _ = _build_pairs(model, suite)
    neurons = _select(model, atlas, _named(suite, b), data, p.k, "neuron")
    return neuron_repair_edit(model, neurons, TrainingData.from_suite(model, suite), objective=r.objective, config=p.train)  # type: ignore[arg-type]


def _care(model: Any, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: CareParams = r.params
    return care_edit(model, atlas, suite, _named(suite, b), candidates=p.candidates, max_pairs=p.max_pairs, config=p.config).edit


def _aifs(model: Any, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
    p: AIFSParams = r.params
    return aifs_from_atlas(model, atlas, suite, _named(suite, b), site=p.site, layer=p.layer, k=p.k, max_pairs=p.max_pairs, config=p.config)


def _weight_delta(model: Any, atlas: Atlas, suite: Suite, b: str | None, r: EditRecipe) -> Edit:
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


def _flat_fields(params: Any) -> dict[str, tuple[Any, Any]]:
    """``{option name: (value, type hint)}`` of a parameters dataclass, its nested settings flattened."""
    out: dict[str, tuple[Any, Any]] = {}
    hints = _hints(type(params))
    for f in fields(params):
        value = getattr(params, f.name)
        if is_dataclass(value):
            out.update(_flat_fields(value))
        else:
            out[f.name] = (value, hints[f.name])
    return out


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
    """

    kind: str
    form: Form | None = None
    objective: str | None = None
    params: Any = None

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
        spec = KINDS[self.kind]
        form = spec.forms[0] if self.form is None else self.form
        spec.check_form(form, {k: v for k, (v, _) in _flat_fields(params).items()})
        object.__setattr__(self, "objective", m.objective)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "form", form)

    @property
    def method(self) -> Method:
        """Its :class:`Method`."""
        return method(self.kind, self.objective)  # type: ignore[arg-type]

    def options(self) -> dict[str, Any]:
        """Its parameters by option name (nested settings such as ``train`` flattened: ``steps``, ``lr``…)."""
        return {k: v for k, (v, _) in _flat_fields(self.params).items()}

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
        known = _flat_fields(self.params)
        unknown = [n for n in options if n not in known]
        if unknown:
            raise EditError(f"{', '.join(unknown)} {'does' if len(unknown) == 1 else 'do'} not apply to {self}; its options: {', '.join(known)}")
        for name, value in options.items():  # before the dataclasses are made: one error type for every bad value
            _check_value(name, value, known[name][1])
        return replace(self, params=_set(self.params, options))

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


def _set(params: Any, options: dict[str, Any]) -> Any:
    """``params`` with ``options`` set, in it or in the settings it nests."""
    mine = {f.name for f in fields(params)}
    changes = {k: v for k, v in options.items() if k in mine}
    for f in fields(params):
        value = getattr(params, f.name)
        if is_dataclass(value):
            inner = {k: v for k, v in options.items() if k in _flat_fields(value)}
            if inner:
                changes[f.name] = _set(value, inner)
    return replace(params, **changes)


def parse_options(recipe: EditRecipe, assignments: Sequence[str]) -> dict[str, Any]:
    """``NAME=VALUE`` strings (the CLI's ``--param``) → typed options of ``recipe``'s method.

    Args:
        recipe: The recipe the options are for.
        assignments: e.g. ``["pop_size=6", "bounds=0,1.2", "layer=none"]``.

    Returns:
        ``{name: value}``, each parsed by its parameter's type (validated by :meth:`EditRecipe.with_options`).

    Raises:
        EditError: No ``=``, an option the method does not take, or a value that does not parse.
    """
    types_ = {k: hint for k, (_, hint) in _flat_fields(recipe.params).items()}
    out: dict[str, Any] = {}
    for a in assignments:
        name, eq, text = a.partition("=")
        name = name.strip()
        if not eq:
            raise EditError(f"--param takes NAME=VALUE, got {a!r}")
        if name not in types_:
            raise EditError(f"{name} does not apply to {recipe}; its options: {', '.join(types_)}")
        out[name] = _parse(name, text.strip(), types_[name])
    return out


def _parse(name: str, text: str, hint: Any) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    try:
        if origin in (Union, types.UnionType) and type(None) in args:
            if text.lower() == "none":
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return _parse(name, text, inner)
        if origin is tuple:
            return tuple(_parse(name, t.strip(), a) for t, a in zip(text.split(","), args, strict=True))
        if hint is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except ValueError:
        raise EditError(f"{name}: cannot read {text!r} as {getattr(hint, '__name__', str(hint))}") from None
    return text  # str and Literal values (checked by the parameters' validation)


#: Named recipes of the experiments: (kind, form, objective) combinations from :data:`METHODS`.
PRESETS: dict[str, EditRecipe] = {
    "pruning": EditRecipe("ablation", form="weights"),
    "orthogonalization": EditRecipe("directional_ablation", form="weights"),
    "invariance": EditRecipe("low_rank", objective="invariance"),
    "lora_all": EditRecipe("low_rank", params=LowRankParams(scope="all", train=TrainConfig(lr=LORA_ALL_LR))),
    "full_ft": EditRecipe("weight_delta"),
    "care": EditRecipe("neuron_repair", objective="care"),
}


def recipe(name: str, *, form: Form | None = None, objective: str | None = None, **options: Any) -> EditRecipe:
    """The recipe a kind or a preset names, with options set (what scripts and notebooks use).

    Args:
        name: A kind (:data:`~circuits.editing.kinds.KINDS`: its default form and objective unless
            given) or a preset (:data:`PRESETS`: its form and objective are fixed).
        form: The edit's default form (kinds only).
        objective: The objective (kinds only).
        **options: Parameters by option name (:meth:`EditRecipe.with_options`).

    Returns:
        The recipe.

    Raises:
        EditError: Neither a kind nor a preset, a form or objective given with a preset, or a bad option.
    """
    if name in PRESETS:
        if form is not None or objective is not None:
            raise EditError(f"preset {name!r} fixes the kind, form and objective ({PRESETS[name]}); name a kind to choose them")
        return PRESETS[name].with_options(**options)
    if name not in KINDS:
        raise EditError(f"unknown edit kind or preset {name!r}; kinds: {', '.join(KINDS)}; presets: {', '.join(PRESETS)}")
    return EditRecipe(name, form=form, objective=objective).with_options(**options)


def build_edit(model: Any, atlas: Atlas, suite: Suite, recipe: EditRecipe, *, behaviour: str | None = None) -> Edit:
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
    return edit if edit.form == recipe.form else replace(edit, form=recipe.form)


def choose_direction_layer(
    model: Any,
    suite: Suite,
    layers: Sequence[int],
    *,
    form: Form = "hooks",
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
        form: The direction edit's form (``"weights"``: orthogonalization; the same function).
        kl_budget: Largest acceptable KL on the build text.

    Returns:
        ``(layer, sweep)``: the chosen layer and one ``{"layer", "harm", "kl"}`` row per candidate.

    Raises:
        EditError: No candidate layers.
    """
    from circuits import model as M
    from circuits.data import english_sample
    from circuits.evaluation.run import neutral_kl, suite_harm

    if not layers:
        raise EditError("need candidate layers for the direction edit")
    windows = M.text_windows(model, english_sample(), window=128)
    groups = tokenize_pairs(model, suite.pairs("build"))
    sweep = []
    for layer in layers:
        edit = direction_edit(model, groups, layer=layer, form=form)
        # The edit was just built from this model: no need to hash its weights again per layer.
        with apply_edit(model, edit, check_fingerprint=False):
            harm = float(suite_harm(model, suite, "build").mean())
        sweep.append({"layer": float(layer), "harm": harm, "kl": float(neutral_kl(model, [edit], windows, check_fingerprint=False).mean())})
    ok = [r for r in sweep if r["kl"] <= kl_budget]
    best = min(ok, key=lambda r: r["harm"]) if ok else min(sweep, key=lambda r: r["harm"] + r["kl"])
    return int(best["layer"]), sweep


# --- generated documentation ------------------------------------------------------------------------


def _default(value: Any) -> str:
    return "none" if value is None else ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _preset_line(name: str, r: EditRecipe) -> str:
    base = EditRecipe(r.kind, objective=r.objective).options()
    changed = {k: v for k, v in r.options().items() if base.get(k) != v}
    extra = "; " + ", ".join(f"{k}={_default(v)}" for k, v in changed.items()) if changed else ""
    return f"{name} = {r.kind} as {r.form} by {r.objective}{extra}"


def cli_help() -> str:
    """The kinds, objectives, presets and options, for ``circuits edit --help`` (click keeps ``\\b`` blocks as written)."""
    width = max(map(len, KINDS))
    lines = ["\b", "Kinds: forms (default first); objectives (default first).", *(
        f"  {k:<{width}}  {'|'.join(s.forms):<13}  {'|'.join(m.objective for m in methods_of(k))}" for k, s in KINDS.items()
    )]
    lines += ["", "\b", "Presets (--preset):", *(f"  {_preset_line(n, r)}" for n, r in PRESETS.items())]
    lines += ["", "\b", "Options of each kind/objective (--k, --mode, … or --param NAME=VALUE):"]
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for m in METHODS:
        groups.setdefault((m.kind, tuple(EditRecipe(m.kind, objective=m.objective).options())), []).append(m.objective)
    lines += [f"  {kind}/{'|'.join(objectives)}: {', '.join(names)}" for (kind, names), objectives in groups.items()]
    return "\n".join(lines)


def kinds_markdown() -> str:
    """``docs/edit_kinds.md``: the kinds, their forms, bake rules, methods and presets, from the registry.

    Regenerate with ``python scripts/write_kinds_doc.py``; a test checks the committed file is current.
    """
    rules = {"owns_columns": "not with another column-owning edit of the same component", "projects_residual": "a residual projection",
             "adds_to_residual": "not after a residual projection"}
    out = [
        "# Edit kinds, forms and objectives",
        "",
        "Generated from the registry (`circuits.editing.kinds.KINDS`, `circuits.editing.recipes.METHODS` and `PRESETS`) by "
        "`python scripts/write_kinds_doc.py`; `circuits edit --help` prints the same lists. A recipe is (kind, form, objective) "
        "plus the method's parameters; an edit's manifest records all three.",
        "",
        "| kind | what it does | tensors | forms (default first) | objectives (default first) | baking | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, s in KINDS.items():
        bake = "; ".join(v for f, v in rules.items() if getattr(s.bake, f)) or "any"
        out.append(f"| `{k}` | {s.summary} | {s.tensors.replace('``', '`')} | {', '.join(s.forms)} | {', '.join(m.objective for m in methods_of(k))} | {bake} | {s.source} |")
    out += ["", "## Methods: how each kind is built from an atlas", "", "| kind | objective | how | parameters (defaults) | source |", "|---|---|---|---|---|"]
    for m in METHODS:
        opts = ", ".join(f"{n}={_default(v)}" for n, v in EditRecipe(m.kind, objective=m.objective).options().items())
        out.append(f"| `{m.kind}` | `{m.objective}` | {m.summary} | {opts} | {m.source} |")
    out += ["", "## Presets", "", "| preset | recipe |", "|---|---|"]
    out += [f"| `{n}` | {_preset_line(n, r).split(' = ', 1)[1]} |" for n, r in PRESETS.items()]
    out += [
        "",
        "`apply_edit(model, *edits, form=...)`: `\"auto\"` applies each edit in its own form, `\"hooks\"` every edit that has a hook "
        "form as hooks, `\"weights\"` every edit as weights (baking; what `circuits export` saves), refusing the compositions the "
        "baking column names.",
        "",
    ]
    return "\n".join(out)


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
                hint = _hints(cls)[f.name]
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
    "OBJECTIVES", "OffsetParams", "PRESETS", "ScalingParams", "SteeringParams", "WeightDeltaParams", "build_edit", "choose_direction_layer",
    "cli_help", "kinds_markdown", "method", "methods_of", "parse_options", "recipe",
]
