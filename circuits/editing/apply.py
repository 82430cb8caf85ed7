"""Applying edits: as hooks or as weights, composed in order, removed bit for bit.

An edit's kind gives ``(site, intervention)`` pairs (:mod:`circuits.editing.kinds`). Applied as
**hooks**, each hook point gets one forward hook that runs the hook form of every intervention at
that point on its slice; applied as **weights**, each intervention's weight form replaces weights
(each step reads the weights the steps before it left). Both compute the same function (tested per
kind and per architecture). :func:`apply_edit` applies several edits, refuses a model whose weight
fingerprint differs from the edits', and gives the model back bit for bit on removal.

The function an edit list computes is the one of each edit in its own ``form``: weight-form edits
change weights in list order, and hook-form edits act on the activations of the weight-edited model.
``apply_edit(..., form="weights")`` (baking) computes that function with every edit as weights (the
weight-form edits first, in order, then the hook-form ones, in order), refusing the compositions whose
weight forms would differ (each kind's :class:`~circuits.editing.kinds.BakeRules`).
Hook-form edits are recorded on the model with their weight form, so generation
(:mod:`circuits.model.generation`) carries them over to a plain Hugging Face model.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from circuits import model as M
from circuits.editing.edit import Edit, EditError, required_tensors
from circuits.editing.kinds import Site
from circuits.interventions import Intervention, InterventionError, LowRank, WeightDelta
from circuits.sites import Component, ComponentError, activation_index, check_components

WeightStep = M.WeightStep
#: How :func:`apply_edit` applies edits: each in its own ``form`` (``"auto"``), every edit that has a
#: hook form as hooks (``"hooks"``), or every edit as weights (``"weights"``, baking).
ApplyForm = Literal["auto", "hooks", "weights"]

logger = logging.getLogger(__name__)


def _sites(edit: Edit, model: M.HookedLM) -> list[tuple[Site, Intervention]]:
    try:
        sites = edit.spec.sites(edit, model)
    except InterventionError as e:
        raise EditError(f"{edit}: {e}") from None
    check_sites(edit, model, sites)
    return sites


def _shown(name: str) -> str:
    return repr(name if len(name) <= 80 else name[:80] + "…")


def check_sites(edit: Edit, model: M.HookedLM, sites: list[tuple[Site, Intervention]]) -> None:
    """Check an edit's sites against the model before anything is applied: one error naming the bad entry.

    A weight site (low-rank factors, weight deltas) must name a weight of this model
    (``blocks.3.attn.o.weight``; ``../../etc/passwd``, an unknown block or a layer out of range is
    refused); a component site must exist in the model's shape and its hook point in the model.

    Raises:
        EditError: The first bad site, naming it.
    """
    for site, _ in sites:
        if isinstance(site, str):
            if not M.has_weight(model, site):
                raise EditError(f"{edit}: weight {_shown(site)} does not exist in {M.model_name(model)} (names look like blocks.3.attn.o.weight)")
            continue
        try:
            check_components([site], model.shape)
        except ComponentError as e:
            raise EditError(f"{edit}: {e}") from None
        if not M.has_hook(model, site.hook_name):
            raise EditError(f"{edit}: {site} acts at hook {site.hook_name!r}, which {M.model_name(model)} does not have")


def _probe_tokens(edits: tuple[Edit, ...]) -> Tensor:
    """Token ids of the check forward: one token, or as many as the largest position an edit names."""
    positions = [c.pos for e in edits for c in e.components if getattr(c, "pos", None) is not None]
    return torch.zeros(1, 1 + max(positions, default=0), dtype=torch.long)


def _finite_forward(model: M.HookedLM, edits: tuple[Edit, ...]) -> None:
    with torch.no_grad():
        logits = M.run(model, _probe_tokens(edits))
    if not bool(torch.isfinite(logits).all()):
        raise EditError(
            f"{', '.join(map(str, edits))}: the model's logits are not finite with {'this edit' if len(edits) == 1 else 'these edits'} applied "
            "(a hyperparameter or tensor too large for this model); refusing it"
        )


def check_finite_logits(model: M.HookedLM, *edits: Edit) -> None:
    """Refuse edits under which the model's logits are not finite (one forward of one token).

    The one check of an edit's numbers against a model: called when an edit is built
    (:func:`circuits.editing.build.new_edit`, :func:`circuits.editing.train.train_edit`) and by
    :func:`apply_edit` every time edits are applied (a loaded edit meets its model there). Finite
    tensors and bounded hyperparameters (:mod:`circuits.editing.validate`) can still overflow a model;
    this catches it. The model is left as it was.

    Raises:
        EditError: Non-finite logits, or an edit that does not fit the model.
    """
    apply_edit(model, *edits, check_fingerprint=False).remove()  # apply_edit runs the forward


def edit_hooks(edit: Edit, model: M.HookedLM, *, generator: torch.Generator | None = None) -> list[tuple[str, M.HookFn]]:
    """The hook form of an edit: one forward hook per hook point, running its interventions in order.

    Stochastic interventions (resample ablation) draw from one generator seeded with the edit's
    ``seed`` hyperparameter (or ``generator``, if given), advanced at every forward pass.

    Raises:
        EditError: A weight-only kind, or an edit that does not fit the model.
    """
    if not edit.spec.has_hooks:
        raise EditError(f"a {edit.kind} edit is applied to weights only; it has no hook form")
    shape = model.shape
    by_hook: dict[str, list[tuple[tuple[Any, ...], Intervention]]] = defaultdict(list)
    for site, iv in _sites(edit, model):
        assert not isinstance(site, str)
        by_hook[site.hook_name].append((activation_index(site, shape.n_heads, shape.n_kv_heads), iv))
    gen = generator if generator is not None else _seeded(edit)

    def make(items: list[tuple[tuple[Any, ...], Intervention]]) -> M.HookFn:
        def hook(act: Tensor, hook: Any) -> Tensor:
            out = act.clone()
            for index, iv in items:
                where = (slice(None), *index)
                out[where] = iv(act[where], None, gen)  # sites of one hook are disjoint slices
            return out

        return hook

    return [(name, make(items)) for name, items in by_hook.items()]


def _seeded(edit: Edit) -> torch.Generator:
    return torch.Generator().manual_seed(int(edit.hyperparameters.get("seed", 0)))


def weight_steps(edit: Edit, model: M.HookedLM) -> list[WeightStep]:
    """The weight form of an edit: its interventions' weight steps, in order (differentiable in its tensors).

    Raises:
        EditError: An intervention with no weight form at its site on this architecture (e.g. a
            resample ablation, or steering on a model whose sublayer outputs are normalised).
    """
    steps: list[WeightStep] = []
    for site, iv in _sites(edit, model):
        try:
            if isinstance(iv, (LowRank, WeightDelta)):  # weight-only, at a named weight
                assert isinstance(site, str)
                steps.append(iv.weight_step(site, model))
                continue
            assert not isinstance(site, str)
            found = iv.weight_steps(site, model)
        except InterventionError as e:
            raise EditError(f"{edit}: {e}") from None
        if found is None:
            why = "" if model.arch.residual_writes_foldable() else f" ({model.arch.name} normalises sublayer outputs before the residual stream)"
            raise EditError(f"a {edit.kind} edit ({iv.name} at {site}) has no weight form on this model{why}; apply it as hooks")
        steps.extend(found)
    return steps


def _fold(edit: Edit, model: M.HookedLM) -> Callable[[], list[WeightStep]] | None:
    """The weight form for generation, or ``None`` where there is none."""
    try:
        weight_steps(edit, model)
    except EditError:
        return None
    return lambda: weight_steps(edit, model)


def _check_bakeable(hook_edits: list[Edit]) -> None:
    """Refuse hook compositions whose weight forms are not the same function, by each kind's
    :class:`~circuits.editing.kinds.BakeRules`.

    Two edits that own one head's or neuron's output columns compose on its activation but not on its
    (then zeroed or rescaled) columns; a vector added to the residual stream after a residual
    projection keeps its component along the direction until the next projection site, which a
    projected weight cannot express.

    Raises:
        EditError: Such a composition.
    """
    owner: dict[str, Edit] = {}
    projection: Edit | None = None
    for e in hook_edits:
        rules = e.spec.bake
        if rules.owns_columns:
            for c in e.components:
                if str(c) in owner:
                    raise EditError(f"cannot bake {owner[str(c)]} and {e}: both act on {c}; bake them separately")
                owner[str(c)] = e
        if rules.adds_to_residual and projection is not None:
            raise EditError(f"cannot bake {e} after {projection} (a residual projection); put {e} first")
        if rules.projects_residual:
            projection = e


class AppliedEdits:
    """Edits applied to a model; remove them with :meth:`remove` or by leaving a ``with`` block.

    Used without ``with``, the edits stay applied (permanently) until :meth:`remove` is called.
    Removal reinstalls the original weight tensors, so the model is bit-for-bit what it was. Edits
    that changed weights must be removed in reverse order of application (later weight edits were
    computed from these weights); removing one out of order is refused with :class:`EditError`.
    """

    def __init__(self, model: M.HookedLM, removers: list[Callable[[], None]], edits: tuple[Edit, ...], changes_weights: bool):
        self._model = model
        self._removers = removers
        self.edits = edits
        self._changes_weights = changes_weights
        if changes_weights:
            model.weight_edits.append(self)

    def remove(self) -> None:
        """Undo the edits, last first (idempotent).

        Raises:
            EditError: Weight edits applied after these are still applied.
        """
        stack = self._model.weight_edits
        if self._changes_weights and self in stack and stack[-1] is not self:
            raise EditError(f"remove {', '.join(map(str, stack[-1].edits))} first: it was applied after {', '.join(map(str, self.edits))} and changed its weights")
        while self._removers:
            self._removers.pop()()
        if self in stack:
            stack.remove(self)

    def __enter__(self) -> AppliedEdits:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def verify_fingerprint(model: M.HookedLM, *edits: Edit) -> None:
    """Refuse edits made for another model.

    Raises:
        EditError: Some edit's fingerprint differs from the model's weights.
    """
    have = M.fingerprint(model)
    for e in edits:
        if e.model_fingerprint != have:
            raise EditError(
                f"edit {e} was made for model {e.model_name} {e.model_fingerprint[:19]}…, but this model is {have[:19]}…; refusing to apply"
            )


def _form(edit: Edit, form: ApplyForm) -> str:
    """The form ``edit`` is applied in when :func:`apply_edit` is asked for ``form``."""
    if form == "auto":
        return edit.form  # type: ignore[return-value]
    return "hooks" if form == "hooks" and edit.spec.has_hooks else "weights"


def apply_edit(model: M.HookedLM, *edits: Edit, check_fingerprint: bool = True, form: ApplyForm = "auto") -> AppliedEdits:
    """Apply edits to a model, in the order given.

    Args:
        model: The model.
        *edits: One or more edits.
        check_fingerprint: Refuse a model whose weights differ from the edits' (default on). All edits
            are checked against the *unedited* model, before any is applied.
        form: ``"auto"`` applies each edit in its own ``form``; ``"weights"`` applies every edit as
            weights (baking: what :func:`circuits.editing.export.export_hf` saves); ``"hooks"`` every
            edit that has a hook form as hooks (weight-only kinds, ``low_rank`` and ``weight_delta``,
            as weights, their only form).

    Returns:
        A handle: a context manager that removes the edits on exit; without ``with`` the edits stay
        until ``handle.remove()``.

    Raises:
        EditError: No edits, an unknown ``form``, a fingerprint mismatch, an edit that does not fit the
            model (a weight or hook it names does not exist, :func:`check_sites`), non-finite logits with
            the edits applied (:func:`check_finite_logits`), or (as weights) an edit without a weight
            form here or a composition whose weight forms differ from its hooks. Nothing stays applied
            after an error.
    """
    if not edits:
        raise EditError("no edits to apply")
    if form not in get_args(ApplyForm):
        raise EditError(f"form must be one of {', '.join(get_args(ApplyForm))}, got {form!r}")
    if check_fingerprint:
        verify_fingerprint(model, *edits)
    for e in edits:
        required_tensors(e)  # validates hyperparameters such as an ablation's mode
        if e.tokenization is not None and bool(e.tokenization.get("prepend_bos")) != model.tokenization.prepend_bos:
            logger.warning(
                "edit %s was built with prepend_bos=%s, but the model now encodes text with %s", e, e.tokenization.get("prepend_bos"),
                model.tokenization.describe(),
            )
    native = [e for e in edits if _form(e, "auto") == "weights"]
    hooked = [e for e in edits if _form(e, "auto") == "hooks"]
    if form == "weights":
        _check_bakeable(hooked)
    removers: list[Callable[[], None]] = []
    changes_weights = False
    generators: list[tuple[torch.Generator, Edit]] = []
    try:
        for e in native + hooked:
            if _form(e, form) == "weights":
                changes_weights = True
                for name, step in weight_steps(e, model):
                    try:
                        removers.append(M.replace_weight(model, name, step(M.read_weight(model, name))))
                    except (KeyError, ValueError) as err:
                        raise EditError(f"{e}: {err}") from None
            else:
                generators.append((_seeded(e), e))
                removers.append(M.attach_overlay(model, edit_hooks(e, model, generator=generators[-1][0]), _fold(e, model)))
        _finite_forward(model, edits)
    except Exception:
        for r in reversed(removers):
            r()
        raise
    for g, e in generators:  # the check forward drew from them: start the caller's runs where they would have started
        g.manual_seed(int(e.hyperparameters.get("seed", 0)))
    return AppliedEdits(model, removers, edits, changes_weights)


def attach_for_training(model: M.HookedLM, edit: Edit) -> Callable[[], None]:
    """Apply an edit whose tensors are trainable, keeping the autograd graph (the model is not changed).

    Hook-form edits run their hooks on the live tensors; weight-form edits compute their weights as
    ``torch.nn.utils.parametrize`` parametrizations of the original ones.

    Returns:
        A function that removes it.

    Raises:
        EditError: The edit does not fit the model.
    """
    if _form(edit, "auto") == "hooks":
        return apply_edit(model, edit, check_fingerprint=False).remove
    removers: list[Callable[[], None]] = []
    try:
        for name, step in weight_steps(edit, model):
            removers.append(M.parametrize_weight(model, name, step))
    except (KeyError, ValueError) as e:
        for r in reversed(removers):
            r()
        raise EditError(str(e.args[0])) from None

    def remove() -> None:
        for r in reversed(removers):
            r()

    return remove


def component_sites(edit: Edit) -> list[Component]:
    """The components an edit acts on (its manifest's ``components``)."""
    return list(edit.components)


@contextmanager
def edited(model: M.HookedLM, *edits: Edit, form: ApplyForm = "auto", check_fingerprint: bool = True) -> Iterator[M.HookedLM]:
    """The model with ``edits`` applied inside a ``with`` block, exactly as it was after it.

    ``with edited(lm, edit): generate(lm, ...)`` is :func:`apply_edit` whose handle is removed on exit
    (also when the block raises).

    Args:
        model: The model the edits were made for.
        *edits: One or more edits, applied in order.
        form: As in :func:`apply_edit`.
        check_fingerprint: As in :func:`apply_edit`.

    Yields:
        ``model`` itself, edited.

    Raises:
        EditError: As :func:`apply_edit`.
    """
    with apply_edit(model, *edits, form=form, check_fingerprint=check_fingerprint):
        yield model
