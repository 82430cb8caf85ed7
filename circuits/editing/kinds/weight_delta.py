"""Dense weight deltas ``W' = W + Δ`` on named weights: the stored form of full fine-tuning.

The unrestricted baseline of issue 22 (:func:`circuits.editing.baselines.full_ft_edit`): every entry
of every edited matrix may change. Weights only (no hook form); applied, baked and removed bit for bit
like :mod:`~circuits.editing.kinds.low_rank`. Tensors: ``{weight}.delta`` ``[out, in]`` per edited
weight (``blocks.3.mlp.in.weight.delta``); components: the attention and MLP layers whose weights
it edits (``L3ATTN``, ``L3MLP``), for the manifest.
"""

from __future__ import annotations

from typing import Any, ClassVar

from circuits.editing.kinds.base import EditError, Form, Kind, Site
from circuits.interventions import Intervention, WeightDelta
from circuits.model import HookedLM
from circuits.sites import AttnRef, MlpRef

SUFFIX = ".delta"


class WeightDeltaKind(Kind):
    name: ClassVar[str] = "weight_delta"
    tensors: ClassVar[str] = "``{weight}.delta`` ``[out, in]``"
    summary: ClassVar[str] = "dense W + Δ on every projection of every layer (full fine-tuning)"
    source: ClassVar[str] = "full fine-tuning; the unrestricted baseline of seed 004 / issue 22"
    accepts: ClassVar[tuple[type, ...]] = (AttnRef, MlpRef)
    forms: ClassVar[tuple[Form, ...]] = ("weights",)

    def required_tensors(self, edit: Any) -> list[str]:
        return [k for k in edit.tensors if k.endswith(SUFFIX)] or [f"<weight>{SUFFIX}"]

    def sites(self, edit: Any, model: HookedLM) -> list[tuple[Site, Intervention]]:
        """One :class:`~circuits.interventions.WeightDelta` per stored delta, in sorted weight order.

        Raises:
            EditError: No deltas, or a tensor that is not a ``{weight}.delta``.
        """
        other = [k for k in edit.tensors if not k.endswith(SUFFIX)]
        if other or not edit.tensors:
            raise EditError(f"a weight_delta edit stores {{weight}}{SUFFIX} tensors only, got {other or 'none'}")
        return [(k[: -len(SUFFIX)], WeightDelta(edit.tensors[k])) for k in sorted(edit.tensors)]
