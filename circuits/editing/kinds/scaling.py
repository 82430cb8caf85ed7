"""Scaling of heads' outputs ``z`` or neurons' ``hook_post`` by a constant α.

α = 0 is zero ablation, α = 1 a no-op, 0 < α < 1 a partial suppression, α > 1 amplification (the head
scaling of Michel et al. 2019, "Are Sixteen Heads Really Better than One?"). Weight form: the output
columns × α. No tensors; hyperparameter ``alpha``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from circuits.editing.kinds.base import BakeRules, EditError, Kind, Site
from circuits.interventions import Intervention, Scale
from circuits.model import HookedLM


class Scaling(Kind):
    name: ClassVar[str] = "scaling"
    tensors: ClassVar[str] = "none (hyperparameter ``alpha``)"
    summary: ClassVar[str] = "multiply heads' z / neurons' outputs by a constant α"
    source: ClassVar[str] = "Michel et al. 2019 (Are Sixteen Heads Really Better than One?)"
    bake: ClassVar[BakeRules] = BakeRules(owns_columns=True)
    hyperparameters: ClassVar[dict[str, tuple[type, Any]]] = {"alpha": (float, None)}

    def sites(self, edit: Any, model: HookedLM) -> list[tuple[Site, Intervention]]:
        self.check_components(edit, model)
        if "alpha" not in edit.hyperparameters:
            raise EditError("a scaling edit needs the hyperparameter alpha")
        alpha = float(edit.hyperparameters["alpha"])
        return [(c, Scale(alpha)) for c in edit.components]
