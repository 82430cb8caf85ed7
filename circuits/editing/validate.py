"""Validation of an edit's values, at construction and at load: one place, so both refuse the same things.

An :class:`~circuits.editing.edit.Edit` is checked when it is made (by a builder, a trainer, or
:func:`~circuits.editing.edit.load_edit`), so an edit that loading would refuse is never written:

* ``form`` is ``hooks`` or ``weights``;
* components are component identities (:mod:`circuits.sites`), each named once (a duplicated component
  would fold its mean or scale in twice);
* tensors have one of the dtypes the project computes in (:data:`EDIT_DTYPES`: float32, float16,
  bfloat16; an integer or float8 tensor is refused, not discovered when a check cannot run on it) and
  hold finite numbers only (a NaN tensor makes every edited forward NaN and generation silently
  produce nothing);
* hyperparameters are strings, booleans or numbers within bounds (integers within 64 bits, floats of
  magnitude at most :data:`MAX_HYPERPARAMETER`: ``alpha = 1e308`` is refused, not turned into
  NaN logits); those a kind declares
  (:attr:`circuits.editing.kinds.base.Kind.hyperparameters`) have its type (an ``alpha`` is a number,
  a ``mode`` a string), and :meth:`~circuits.editing.kinds.base.Kind.check_hyperparameters` adds the
  kind's own rules (an ablation ``mode`` is ``zero``, ``mean`` or ``resample``);
* training and evaluation records hold finite numbers.

Shapes, weight names and hook names against a model are checked when the edit meets one
(:func:`circuits.editing.apply.check_sites`, before anything is applied), and so are its logits: a
one-token forward with the edit applied must be finite (:func:`circuits.editing.apply.check_finite_logits`,
when an edit is built and whenever it is applied).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from circuits.editing.kinds import KINDS, EditError
from circuits.io import SURROGATE
from circuits.model import DTYPES
from circuits.sites import AttnRef, HeadRef, MlpRef, NeuronRef, ResidRef

if TYPE_CHECKING:
    from circuits.editing.edit import Edit

_COMPONENT_TYPES = (HeadRef, AttnRef, MlpRef, NeuronRef, ResidRef)
#: The tensor dtypes an edit may store: the ones models are loaded in (:data:`circuits.model.DTYPES`).
EDIT_DTYPES = frozenset(DTYPES.values())
#: Largest magnitude of a float hyperparameter (a scale, coefficient or rate); beyond it logits overflow.
MAX_HYPERPARAMETER = 1e6
_MAX_INT = 2**63


def _scalar_ok(v: Any) -> bool:
    if isinstance(v, bool) or isinstance(v, str):
        return SURROGATE.search(v) is None if isinstance(v, str) else True
    if isinstance(v, int):
        return abs(v) < _MAX_INT
    return isinstance(v, float) and math.isfinite(v)


def check_scalars(values: dict[str, Any] | None, what: str) -> None:
    """Refuse anything but strings, booleans, 64-bit integers and finite floats in a flat record.

    Raises:
        EditError: ``what.key: ...`` naming the first bad value.
    """
    if values is None:
        return
    if not isinstance(values, dict):
        raise EditError(f"{what} must be an object of numbers and strings, got {type(values).__name__}")
    for k, v in values.items():
        if not isinstance(k, str) or SURROGATE.search(k):
            raise EditError(f"{what}: keys must be strings encodable as UTF-8, got {k!r}")
        if not _scalar_ok(v):
            raise EditError(f"{what}.{k} must be a finite number within 64 bits or a string encodable as UTF-8, got {v!r}")


def check_hyperparameter_bounds(values: dict[str, Any]) -> None:
    """Refuse float hyperparameters of magnitude above :data:`MAX_HYPERPARAMETER`, and a ``seed`` that is
    not an integer >= 0 (applying any edit as hooks seeds a generator with it).

    Raises:
        EditError: ``hyperparameters.key: ...`` naming the first bad value.
    """
    for k, v in values.items():
        if isinstance(v, float) and abs(v) > MAX_HYPERPARAMETER:
            raise EditError(f"hyperparameters.{k} must be within ±{MAX_HYPERPARAMETER:g}, got {v!r}")
        if k == "seed" and (not isinstance(v, int) or isinstance(v, bool) or v < 0):  # every kind's hooks seed a generator with it
            raise EditError(f"hyperparameters.seed must be an integer >= 0, got {v!r}")


def check_edit_values(edit: Edit) -> None:
    """Validate an edit's form, components, tensors and hyperparameters (see module docstring).

    Raises:
        EditError: The first violation, naming the field.
    """
    if edit.form not in ("hooks", "weights"):
        raise EditError(f"form must be hooks or weights, got {edit.form!r}")
    seen: set[str] = set()
    for c in edit.components:
        if not isinstance(c, _COMPONENT_TYPES):
            raise EditError(f"components must be component identities (e.g. HeadRef(9, 6)), got {c!r}")
        if str(c) in seen:
            raise EditError(f"component {c} appears twice; an edit names each component once")
        seen.add(str(c))
    for name, t in edit.tensors.items():
        if not isinstance(t, torch.Tensor):
            raise EditError(f"tensor {name!r} is not a tensor ({type(t).__name__})")
        if t.dtype not in EDIT_DTYPES:
            raise EditError(f"tensor {name!r} has dtype {str(t.dtype).removeprefix('torch.')}; edits store {', '.join(sorted(str(d).removeprefix('torch.') for d in EDIT_DTYPES))}")
        if not bool(torch.isfinite(t).all()):
            raise EditError(f"tensor {name!r} holds NaN or infinite values")
    check_scalars(edit.hyperparameters, "hyperparameters")
    check_hyperparameter_bounds(edit.hyperparameters)
    spec = KINDS[edit.kind]
    for key, (typ, _default) in spec.hyperparameters.items():
        if key not in edit.hyperparameters:
            continue
        v = edit.hyperparameters[key]
        ok = isinstance(v, str) if typ is str else (isinstance(v, (int, float)) and not isinstance(v, bool) and (typ is float or isinstance(v, int)))
        if not ok:
            raise EditError(f"hyperparameters.{key} of a {edit.kind} edit must be {typ.__name__}, got {v!r}")
    spec.check_hyperparameters(edit.hyperparameters)
    check_scalars(edit.suite, "suite")
    check_scalars(edit.training, "training")
    check_scalars(edit.evaluation, "evaluation")
