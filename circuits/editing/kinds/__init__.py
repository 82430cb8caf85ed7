"""The edit kinds, one file each; :data:`KINDS` maps a manifest's kind name to its class."""

from __future__ import annotations

from circuits.editing.kinds.ablation import Ablation
from circuits.editing.kinds.aifs import AIFS
from circuits.editing.kinds.base import EditError, Kind, Site
from circuits.editing.kinds.directional import DirectionalAblation
from circuits.editing.kinds.low_rank import LowRankKind, low_rank_factors
from circuits.editing.kinds.neuron_repair import NeuronRepair
from circuits.editing.kinds.offset import Offset
from circuits.editing.kinds.scaling import Scaling
from circuits.editing.kinds.steering import Steering
from circuits.editing.kinds.weight_delta import WeightDeltaKind

KINDS: dict[str, Kind] = {k.name: k for k in (Ablation(), Scaling(), Steering(), Offset(), DirectionalAblation(), LowRankKind(), NeuronRepair(), AIFS(), WeightDeltaKind())}

#: Kind names of earlier manifests → (kind, default form, extra hyperparameters). "Baked" is an option
#: of applying (``form``), and invariance a training objective, not kinds of their own.
LEGACY: dict[str, tuple[str, str, dict[str, str]]] = {
    "pruning": ("ablation", "weights", {}),
    "orthogonalization": ("directional_ablation", "weights", {}),
    "invariance": ("low_rank", "weights", {"objective": "invariance"}),
    "mean_ablation": ("ablation", "hooks", {"mode": "mean"}),
}

__all__ = ["KINDS", "LEGACY", "EditError", "Kind", "Site", "low_rank_factors"]
