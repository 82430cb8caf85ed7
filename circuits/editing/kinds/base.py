"""What an edit kind is: which sites it acts on, with which interventions, from which stored tensors.

A kind (one file each in this package, as auto-circuit's ``prune_algos/``) turns an
:class:`~circuits.editing.edit.Edit` — components, named tensors, typed hyperparameters — into a list
of ``(site, intervention)`` pairs (:mod:`circuits.interventions`). Applying an edit as hooks or as
weights is then the same for every kind (:mod:`circuits.editing.apply`): hooks run each intervention's
hook form at its site; weights run each intervention's weight form. A site is a component
(:mod:`circuits.sites`) or, for weight-only interventions, a weight name.

Each kind declares, as class attributes, everything the rest of the library asks about it: its
``forms`` (``"hooks"`` and/or ``"weights"``, the default first), what it can be baked with
(:class:`BakeRules`, read by :func:`circuits.editing.apply.apply_edit` with ``form="weights"``), its
typed hyperparameters, a one-line ``summary`` and the ``source`` paper. How a kind is *built* from an
atlas (its objectives and their typed parameters) is registered next to the builders, in
:data:`circuits.editing.recipes.METHODS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from torch import Tensor

from circuits.interventions import Intervention
from circuits.model import HookedLM
from circuits.sites import (
    Component,
    ComponentError,
    HeadRef,
    NeuronRef,
    ResidRef,
    check_components,
)

if TYPE_CHECKING:
    from circuits.editing.edit import Edit

#: Where an intervention acts: a component's activation, or a named weight (``blocks.3.attn.o.weight``).
Site = Component | str
#: How an edit is applied: its interventions' hook forms at their sites, or their weight forms.
Form = Literal["hooks", "weights"]
FORMS: tuple[Form, ...] = ("hooks", "weights")


class EditError(ValueError):
    """An edit file is malformed, or an edit does not fit its kind or the model it is applied to."""


@dataclass(frozen=True)
class BakeRules:
    """What a kind's weight form can be baked with, when hook-form edits are applied as weights together.

    Hooks compose on activations; weight forms compose on weights. The two agree except where one
    edit's weight form rewrites what another's reads (:func:`circuits.editing.apply.apply_edit` refuses
    those compositions with ``form="weights"``).

    Attributes:
        owns_columns: The weight form rewrites its components' output columns (``W_O[:, h]``,
            ``W_out[:, n]``) and the output bias. Two such edits of one component compose on its
            activation, but not on its (then zeroed or rescaled) columns: refused.
        projects_residual: The weight form projects a direction out of every residual-stream writer.
        adds_to_residual: The weight form adds a vector to a residual writer's bias. After a
            ``projects_residual`` edit the hook form keeps the vector's component along the direction
            until the next projection site, which a projected weight cannot express: refused.
    """

    owns_columns: bool = False
    projects_residual: bool = False
    adds_to_residual: bool = False


class Kind:
    """One edit kind. Subclasses set the class attributes and implement :meth:`sites`."""

    name: ClassVar[str]
    #: One line: what the kind does (CLI help and the generated kinds table).
    summary: ClassVar[str]
    #: The method's source (paper), for the generated kinds table.
    source: ClassVar[str]
    #: The tensors an edit of the kind stores, with their shapes (for the generated kinds table).
    tensors: ClassVar[str]
    #: The component types the kind acts on.
    accepts: ClassVar[tuple[type, ...]] = (HeadRef, NeuronRef)
    #: The forms it can be applied in, its default first (a weight-only kind has only ``"weights"``).
    forms: ClassVar[tuple[Form, ...]] = ("hooks", "weights")
    #: What its weight form can be baked with.
    bake: ClassVar[BakeRules] = BakeRules()
    #: Hyperparameters with their types and defaults (validated at the JSON boundary).
    hyperparameters: ClassVar[dict[str, tuple[type, Any]]] = {}

    @property
    def has_hooks(self) -> bool:
        """Whether the kind has a hook form (a weight-only kind is always applied as weights)."""
        return "hooks" in self.forms

    def check_form(self, form: str, hyperparameters: dict[str, Any]) -> None:
        """Refuse a form the kind (with these hyperparameters) cannot be applied in by default.

        Args:
            form: ``"hooks"`` or ``"weights"``.
            hyperparameters: The edit's (or recipe's) hyperparameters, for kinds whose forms depend on them.

        Raises:
            EditError: Not one of :attr:`forms`.
        """
        if form not in self.forms:
            raise EditError(f"a {self.name} edit is applied as {' or '.join(self.forms)}, not {form!r}")

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
