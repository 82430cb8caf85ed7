"""Ablation of heads' outputs ``z`` and neurons' ``hook_post``: zero, mean or resample.

Zero and mean ablation (Wang et al. 2023, IOI's knock-outs) have a weight form — the component's output
columns zeroed and, for the mean, its constant contribution ``W[:, cols] · mean`` folded into the
output bias: the *structural pruning* of intervention-based causal pruning (the ``pruning`` preset: this
kind applied as weights). Resample ablation (Chan et al. 2022, causal scrubbing) draws a stored
reference activation per prompt at every forward pass and has none.

Tensors: ``{component}`` — the mean ``[d_head]``/``[]``, or a bank ``[n, d_head]``/``[n]`` for resample.
Hyperparameters: ``mode`` (``zero``/``mean``/``resample``), ``seed`` (resample draws).
"""

from __future__ import annotations

from typing import Any, ClassVar

from circuits.editing.kinds.base import BakeRules, EditError, Kind, Site, unit_value
from circuits.interventions import Intervention, Mean, Resample, Zero
from circuits.model import HookedLM

MODES = ("zero", "mean", "resample")


class Ablation(Kind):
    name: ClassVar[str] = "ablation"
    tensors: ClassVar[str] = "``{component}``: the mean ``[d_head]``/``[]``, or a reference bank ``[n, …]`` (resample); none for zero"
    summary: ClassVar[str] = "set heads' z / neurons' outputs to zero, their mean, or a resampled reference value"
    source: ClassVar[str] = "Wang et al. 2023 (IOI); Chan et al. 2022 (causal scrubbing)"
    bake: ClassVar[BakeRules] = BakeRules(owns_columns=True)
    hyperparameters: ClassVar[dict[str, tuple[type, Any]]] = {"mode": (str, "mean"), "seed": (int, 0)}

    def check_hyperparameters(self, hyperparameters: dict[str, Any]) -> None:
        if "mode" in hyperparameters and hyperparameters["mode"] not in MODES:
            raise EditError(f"an ablation edit needs hyperparameter mode in {MODES}, got {hyperparameters['mode']!r}")

    def check_form(self, form: str, hyperparameters: dict[str, Any]) -> None:
        """As :meth:`Kind.check_form`; a resample ablation is random per pass and has no weight form.

        Raises:
            EditError: An unknown form, or ``weights`` with ``mode="resample"``.
        """
        super().check_form(form, hyperparameters)
        if form == "weights" and hyperparameters.get("mode") == "resample":
            raise EditError("resample ablation is random per pass; it cannot be applied as weights (use mode zero or mean, or form hooks)")

    def required_tensors(self, edit: Any) -> list[str]:
        mode = edit.hyperparameters.get("mode")
        if mode not in MODES:
            raise EditError(f"an ablation edit needs hyperparameter mode in {MODES}, got {mode!r}")
        return [] if mode == "zero" else [str(c) for c in edit.components]

    def sites(self, edit: Any, model: HookedLM) -> list[tuple[Site, Intervention]]:
        self.required_tensors(edit)
        self.check_components(edit, model)
        mode = edit.hyperparameters["mode"]
        if mode == "zero":
            return [(c, Zero()) for c in edit.components]
        if mode == "mean":
            return [(c, Mean(unit_value(edit, c, model))) for c in edit.components]
        return [(c, Resample(bank=unit_value(edit, c, model, bank=True))) for c in edit.components]
