"""What an edit kind is: which sites it acts on, with which interventions, from which stored tensors.

A kind (one file each in this package, as auto-circuit's ``prune_algos/``) turns an
:class:`~circuits.editing.edit.Edit` — components, named tensors, typed hyperparameters — into a list
of ``(site, intervention)`` pairs (:mod:`circuits.interventions`). Applying an edit as hooks or as
weights is then the same for every kind (:mod:`circuits.editing.apply`): hooks run each intervention's
hook form at its site; weights run each intervention's weight form. A site is a component
(:mod:`circuits.sites`) or, for weight-only interventions, a weight name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from circuits.interventions import Intervention
from circuits.model import HookedLM
from circuits.sites import Component, ComponentError, HeadRef, NeuronRef, ResidRef, check_components

if TYPE_CHECKING:
    from circuits.editing.edit import Edit

#: Where an intervention acts: a component's activation, or a named weight (``blocks.3.attn.o.weight``).
Site = Component | str


class EditError(ValueError):
    """An edit file is malformed, or an edit does not fit its kind or the model it is applied to."""


class Kind:
    """One edit kind. Subclasses set the class attributes and implement :meth:`sites`."""

    name: ClassVar[str]
    #: The component types the kind acts on.
    accepts: ClassVar[tuple[type, ...]] = (HeadRef, NeuronRef)
    #: Whether the kind has a hook form (a weight-only kind is always applied as weights).
    has_hooks: ClassVar[bool] = True
    #: Hyperparameters with their types and defaults (validated at the JSON boundary).
    hyperparameters: ClassVar[dict[str, tuple[type, Any]]] = {}

    def required_tensors(self, edit: Edit) -> list[str]:
        """Names of the tensors the edit must carry (validated on load)."""
        return []

    def check_hyperparameters(self, hyperparameters: dict[str, Any]) -> None:
        """The kind's own rules for its hyperparameters, beyond their types (checked at construction).

        Raises:
            EditError: A value the kind does not accept.
        """

    def sites(self, edit: Edit, model: HookedLM) -> list[tuple[Site, Intervention]]:
        """The edit as ``(site, intervention)`` pairs, in application order.

        Raises:
            EditError: The edit does not fit the model.
        """
        raise NotImplementedError

    def check_components(self, edit: Edit, model: HookedLM) -> None:
        """Components of the accepted types, inside the model's shape, whole (no ``@pos``), no duplicates.

        Raises:
            EditError: The first violation, naming the component.
        """
        shape = model.shape
        seen: set[str] = set()
        for c in edit.components:
            if not isinstance(c, self.accepts):
                raise EditError(f"a {self.name} edit acts on {'/'.join(k.__name__ for k in self.accepts)}, got {c}")
            if str(c) in seen:
                raise EditError(f"{c} appears twice in a {self.name} edit")
            seen.add(str(c))
            try:
                check_components([c], shape)
            except ComponentError as e:
                raise EditError(f"a {self.name} edit names {e}") from None
            if isinstance(c, (HeadRef, NeuronRef)) and c.pos is not None:
                raise EditError(f"a {self.name} edit acts at every position; {c} names one")


def unit_value(edit: Edit, c: Component, model: HookedLM, *, bank: bool = False) -> Tensor:
    """The stored tensor of a head (``[d_head]``) or neuron (``[]``), or a bank of them (``[n, ...]``).

    Raises:
        EditError: A wrong shape.
    """
    t = edit.tensors[str(c)]
    want: tuple[int, ...] = (model.shape.d_head,) if isinstance(c, HeadRef) else ()
    got = tuple(t.shape[1:]) if bank else tuple(t.shape)
    if got != want or (bank and (t.ndim == 0 or t.shape[0] == 0)):
        raise EditError(f"{edit.kind} tensor for {c} has shape {tuple(t.shape)}, expected {('n',) if bank else ()}{want}")
    return t


def resid_vector(edit: Edit, model: HookedLM, key: str) -> Tensor:
    """A stored ``[d_model]`` vector.

    Raises:
        EditError: A wrong shape.
    """
    v = edit.tensors[key]
    if tuple(v.shape) != (model.shape.d_model,):
        raise EditError(f"{edit.kind} tensor {key!r} has shape {tuple(v.shape)}, expected ({model.shape.d_model},)")
    return v


def one_resid_site(edit: Edit, model: HookedLM) -> ResidRef:
    """The single whole ``resid_pre`` site a residual-stream edit names (e.g. ``L12RESID``).

    Raises:
        EditError: Not exactly one such site, or out of range.
    """
    (site,) = edit.components if len(edit.components) == 1 else (None,)
    if not isinstance(site, ResidRef) or site.site != "resid_pre" or site.pos is not None:
        raise EditError(f"a {edit.kind} edit acts on one residual stream at all positions (e.g. L12RESID), got {edit.components}")
    if not 0 <= site.layer < model.shape.n_layers:
        raise EditError(f"{site} does not exist in a model with {model.shape.n_layers} layers")
    return site
