"""Neuron repair in the style of CARE (Sun et al. 2022, "Causality-based Neural Network Repair").

Each repaired neuron ``n`` gets a scale ``s_n`` on its output (equivalently on its outgoing weights
``W_out[:, n]``, the weight form). Tensors: ``{neuron}`` ``s_n`` ``[]``. The scales are found by CARE's
causal ranking and particle swarm (``care``, :mod:`circuits.editing.care`) or by gradient descent on a
training objective (``gap``/``invariance``, :func:`circuits.editing.train.neuron_repair_edit`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from circuits.editing.kinds.base import BakeRules, Kind, Site, unit_value
from circuits.interventions import Intervention, Scale
from circuits.model import HookedLM
from circuits.sites import NeuronRef


class NeuronRepair(Kind):
    name: ClassVar[str] = "neuron_repair"
    tensors: ClassVar[str] = "``{neuron}``: output scale ``[]``"
    summary: ClassVar[str] = "a scale on each repaired neuron's output"
    source: ClassVar[str] = "Sun et al. 2022 (CARE: Causality-based Neural Network Repair); seed 003"
    bake: ClassVar[BakeRules] = BakeRules(owns_columns=True)
    accepts: ClassVar[tuple[type, ...]] = (NeuronRef,)

    def required_tensors(self, edit: Any) -> list[str]:
        return [str(c) for c in edit.components]

    def sites(self, edit: Any, model: HookedLM) -> list[tuple[Site, Intervention]]:
        self.check_components(edit, model)
        return [(c, Scale(unit_value(edit, c, model))) for c in edit.components]
