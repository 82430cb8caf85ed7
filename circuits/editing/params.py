"""The typed parameters of each edit method: frozen dataclasses whose defaults are the recipe's defaults.

Every field is validated by its annotation when the parameters are made (counts ≥ 1, finite numbers, a
``Literal``'s values), so a wrong option fails before any model work, with one error naming it.
:mod:`circuits.editing.recipes` pairs each class with its kind, objective and builder.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from circuits.editing.aifs import AIFSConfig, AifsSite
from circuits.editing.baselines import FULL_FT_LR
from circuits.editing.build import Granularity
from circuits.editing.care import CareConfig
from circuits.editing.edit import EditError
from circuits.editing.train import TrainConfig

Scope = Literal["flagged", "all"]
AblationMode = Literal["zero", "mean", "resample"]

# --- validation of the typed parameters ------------------------------------------------------------

#: Integer parameters that may be 0 (every other integer is a count, >= 1).
_MAY_BE_ZERO = frozenset({"seed", "layer"})


def check_value(name: str, value: Any, hint: Any) -> None:
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
            check_value(name, value, inner)
    elif origin is tuple:
        if not isinstance(value, tuple) or len(value) != len(args):
            raise EditError(f"{name} must be {len(args)} numbers, got {value!r}")
        for v, a in zip(value, args):
            check_value(name, v, a)
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


def param_hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=False)


def _check_fields(params: Any) -> None:
    """Validate every field of a parameters dataclass (and of the settings dataclass it nests) by its type.

    Raises:
        EditError: The first bad value, naming its parameter.
    """
    hints = param_hints(type(params))
    for f in fields(params):
        value = getattr(params, f.name)
        if is_dataclass(value):
            _check_fields(value)
        else:
            check_value(f.name, value, hints[f.name])


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
            head; :func:`circuits.experiments.choose_direction_layer` sweeps layers on the build split).
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


def flat_fields(params: Any) -> dict[str, tuple[Any, Any]]:
    """``{option name: (value, type hint)}`` of a parameters dataclass, its nested settings flattened."""
    out: dict[str, tuple[Any, Any]] = {}
    hints = param_hints(type(params))
    for f in fields(params):
        value = getattr(params, f.name)
        if is_dataclass(value):
            out.update(flat_fields(value))
        else:
            out[f.name] = (value, hints[f.name])
    return out


def set_fields(params: Any, options: dict[str, Any]) -> Any:
    """``params`` with ``options`` set, in it or in the settings it nests."""
    mine = {f.name for f in fields(params)}
    changes = {k: v for k, v in options.items() if k in mine}
    for f in fields(params):
        value = getattr(params, f.name)
        if is_dataclass(value):
            inner = {k: v for k, v in options.items() if k in flat_fields(value)}
            if inner:
                changes[f.name] = set_fields(value, inner)
    return replace(params, **changes)


def parse_value(name: str, text: str, hint: Any) -> Any:
    """``text`` (a CLI ``--param`` value) as ``hint``'s type: ``none``, tuples ``a,b``, ``true/false``, numbers; other text as is.

    Raises:
        EditError: A value that does not parse.
    """
    origin, args = get_origin(hint), get_args(hint)
    try:
        if origin in (Union, types.UnionType) and type(None) in args:
            if text.lower() == "none":
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return parse_value(name, text, inner)
        if origin is tuple:
            return tuple(parse_value(name, t.strip(), a) for t, a in zip(text.split(","), args, strict=True))
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
