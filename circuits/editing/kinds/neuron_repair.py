"""Neuron repair in the style of CARE (Sun et al. 2022, "Causality-based Neural Network Repair").

Each repaired neuron ``n`` gets a scale ``s_n`` on its output (equivalently on its outgoing weights
``W_out[:, n]``, the weight form). Tensors: ``{neuron}`` ``s_n`` ``[]``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from circuits.editing.kinds.base import Kind, Site, unit_value
from circuits.interventions import Intervention, Scale
from circuits.model import HookedLM
from circuits.sites import NeuronRef


class NeuronRepair(Kind):
    name: ClassVar[str] = "neuron_repair"
    accepts: ClassVar[tuple[type, ...]] = (NeuronRef,)

    def required_tensors(self, edit: Any) -> list[str]:
        return [str(c) for c in edit.components]

    def sites(self, edit: Any, model: HookedLM) -> list[tuple[Site, Intervention]]:
        self.check_components(edit, model)
        return [(c, Scale(unit_value(edit, c, model))) for c in edit.components]
