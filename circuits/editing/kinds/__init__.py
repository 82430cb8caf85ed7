"""The edit kinds, one file each: :data:`KINDS` is the one list of them.

Every other list of kinds in the library is read from it: the manifest's ``kind`` field, the recipes
(:data:`circuits.editing.recipes.METHODS`: how each kind is built, by which objective), the ``circuits
edit --kind`` choices and help, and the generated table ``docs/edit_kinds.md``.
"""

from __future__ import annotations

from circuits.editing.kinds.ablation import Ablation
from circuits.editing.kinds.aifs import AIFS
from circuits.editing.kinds.base import FORMS, BakeRules, EditError, Form, Kind, Site
from circuits.editing.kinds.directional import DirectionalAblation
from circuits.editing.kinds.low_rank import LowRankKind, low_rank_factors
from circuits.editing.kinds.neuron_repair import NeuronRepair
from circuits.editing.kinds.offset import Offset
from circuits.editing.kinds.scaling import Scaling
from circuits.editing.kinds.steering import Steering
from circuits.editing.kinds.weight_delta import WeightDeltaKind

#: Kind name → its implementation, in the order the docs and the CLI list them.
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (Ablation(), Scaling(), Steering(), Offset(), DirectionalAblation(), LowRankKind(), NeuronRepair(), AIFS(), WeightDeltaKind())
}

__all__ = ["FORMS", "KINDS", "BakeRules", "EditError", "Form", "Kind", "Site", "low_rank_factors"]
