"""Steering: a vector added to the residual stream entering layer ``L``, at every position.

Contrastive activation addition (CAA; Rimsky et al. 2024; activation addition, Turner et al. 2023).
Weight form (where sublayer outputs reach the residual stream unnormalised): the vector added to the
bias of the writer before layer ``L``, or to every embedding row for ``L = 0``. Tensors: ``vector``
``[d_model]``; hyperparameter ``coefficient``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from circuits.editing.kinds.base import (
    BakeRules,
    Kind,
    Site,
    one_resid_site,
    resid_vector,
)
from circuits.interventions import Add, Intervention
from circuits.model import HookedLM
from circuits.sites import ResidRef


class Steering(Kind):
    name: ClassVar[str] = "steering"
    tensors: ClassVar[str] = "``vector`` ``[d_model]``"
    summary: ClassVar[str] = "add a difference-in-means vector to the residual stream entering one layer"
    source: ClassVar[str] = "Rimsky et al. 2024 (CAA); Turner et al. 2023 (activation addition)"
    bake: ClassVar[BakeRules] = BakeRules(adds_to_residual=True)
    accepts: ClassVar[tuple[type, ...]] = (ResidRef,)
    hyperparameters: ClassVar[dict[str, tuple[type, Any]]] = {"coefficient": (float, 1.0)}

    def required_tensors(self, edit: Any) -> list[str]:
        return ["vector"]

    def sites(self, edit: Any, model: HookedLM) -> list[tuple[Site, Intervention]]:
        site = one_resid_site(edit, model)
        v = resid_vector(edit, model, "vector")
        return [(site, Add(v, float(edit.hyperparameters.get("coefficient", 1.0))))]
