"""Learned activation offsets: ``z_h ← z_h + δ_h`` (``hook_post_n ← hook_post_n + δ_n``).

Small additive interventions fitted at the components a circuit analysis found (surgical circuit
interventions; CAA-style offsets, Rimsky et al. 2024, learned rather than a mean difference). Weight
form: ``W[:, cols] · δ`` added to the output bias. Tensors: ``{component}`` δ ``[d_head]``/``[]``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from circuits.editing.kinds.base import BakeRules, Kind, Site, unit_value
from circuits.interventions import Add, Intervention
from circuits.model import HookedLM


class Offset(Kind):
    name: ClassVar[str] = "offset"
    tensors: ClassVar[str] = "``{component}``: δ ``[d_head]``/``[]``"
    summary: ClassVar[str] = "a learned vector δ added to heads' z / neurons' outputs"
    source: ClassVar[str] = "surgical circuit interventions; learned CAA-style offsets (Rimsky et al. 2024)"
    bake: ClassVar[BakeRules] = BakeRules(owns_columns=True)

    def required_tensors(self, edit: Any) -> list[str]:
        return [str(c) for c in edit.components]

    def sites(self, edit: Any, model: HookedLM) -> list[tuple[Site, Intervention]]:
        self.check_components(edit, model)
        return [(c, Add(unit_value(edit, c, model))) for c in edit.components]
