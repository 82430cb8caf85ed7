"""Directional ablation: remove a direction from the residual stream everywhere (Arditi et al. 2024).

``x ← x − (x · r̂) r̂`` at every residual site (``resid_pre`` and ``resid_mid`` of every block, and after
the last), every position. Weight form (weight orthogonalization, the ``orthogonalization`` preset): every matrix writing to the residual stream — embeddings, each ``W_O`` and ``W_out`` and
their biases — projected so nothing writes along ``r̂``; the same function. The edit's component names
the residual site the direction was read at (e.g. ``L12RESID``). Tensors: ``direction`` ``[d_model]``.
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
from circuits.interventions import Intervention, ProjectOut
from circuits.model import HookedLM, has_hook
from circuits.sites import ResidRef


class DirectionalAblation(Kind):
    name: ClassVar[str] = "directional_ablation"
    tensors: ClassVar[str] = "``direction`` ``[d_model]``"
    summary: ClassVar[str] = "remove a difference-in-means direction from the residual stream everywhere"
    source: ClassVar[str] = "Arditi et al. 2024 (refusal is mediated by a single direction)"
    bake: ClassVar[BakeRules] = BakeRules(projects_residual=True)
    accepts: ClassVar[tuple[type, ...]] = (ResidRef,)

    def required_tensors(self, edit: Any) -> list[str]:
        return ["direction"]

    def sites(self, edit: Any, model: HookedLM) -> list[tuple[Site, Intervention]]:
        one_resid_site(edit, model)
        iv = ProjectOut(resid_vector(edit, model, "direction"))
        iv.unit()  # refuses a zero or non-finite direction now, not at the first forward
        n = model.shape.n_layers
        sites = [ResidRef(layer, None, s) for layer in range(n) for s in ("resid_pre", "resid_mid")]
        sites.append(ResidRef(n - 1, None, "resid_post"))
        return [(s, iv) for s in sites if has_hook(model, s.hook_name)]  # parallel and attention-only blocks have no resid_mid
