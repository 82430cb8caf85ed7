"""Low-rank weight edits ``W' = W + α B A`` (LoRA, Hu et al. 2022) of the flagged components' output weights
(or, for the unrestricted ``lora_all`` baseline, every layer's projections: :mod:`circuits.editing.baselines`).

Trained with a harm objective (``gap``), counterfactual invariance (``invariance``, the ``invariance``
preset) or ICP's contrastive objective (``contrastive``, :mod:`circuits.editing.icp`). Weights only;
exportable as a PEFT adapter.
Tensors: ``{weight}.lora_A`` ``[rank, in]`` and ``{weight}.lora_B`` ``[out, rank]`` per edited weight;
hyperparameters ``alpha`` and ``rank``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from circuits.editing.kinds.base import EditError, Form, Kind, Site
from circuits.interventions import Intervention, LowRank
from circuits.model import HookedLM
from circuits.sites import AttnRef, HeadRef, MlpRef, NeuronRef


def low_rank_factors(edit: Any) -> dict[str, tuple[Tensor, Tensor]]:
    """``{weight name: (A [r, in], B [out, r])}`` of a low-rank edit.

    Raises:
        EditError: No factors, or only one of a pair.
    """
    names = sorted({k.rsplit(".", 1)[0] for k in edit.tensors if k.endswith((".lora_A", ".lora_B"))})
    out = {}
    for n in names:
        if f"{n}.lora_A" not in edit.tensors or f"{n}.lora_B" not in edit.tensors:
            raise EditError(f"{edit.kind} edit has only one of {n}.lora_A / {n}.lora_B")
        out[n] = (edit.tensors[f"{n}.lora_A"], edit.tensors[f"{n}.lora_B"])
    if not out:
        raise EditError(f"{edit.kind} edit has no lora_A/lora_B tensors")
    return out


class LowRankKind(Kind):
    name: ClassVar[str] = "low_rank"
    tensors: ClassVar[str] = "``{weight}.lora_A`` ``[r, in]``, ``{weight}.lora_B`` ``[out, r]``"
    summary: ClassVar[str] = "W + α B A on the flagged components' output weights (or every projection of every layer)"
    source: ClassVar[str] = "Hu et al. 2022 (LoRA)"
    accepts: ClassVar[tuple[type, ...]] = (HeadRef, NeuronRef, MlpRef, AttnRef)
    forms: ClassVar[tuple[Form, ...]] = ("weights",)
    hyperparameters: ClassVar[dict[str, tuple[type, Any]]] = {"alpha": (float, 1.0), "rank": (int, None)}

    def required_tensors(self, edit: Any) -> list[str]:
        return [k for k in edit.tensors if k.endswith((".lora_A", ".lora_B"))] or ["<weight>.lora_A"]

    def sites(self, edit: Any, model: HookedLM) -> list[tuple[Site, Intervention]]:
        alpha = float(edit.hyperparameters.get("alpha", 1.0))
        return [(name, LowRank(a, b, alpha)) for name, (a, b) in low_rank_factors(edit).items()]
