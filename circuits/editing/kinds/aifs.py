"""AIFS: a per-feature gate on one latent site, trained under mask-gated synthetic interventions (seed 002).

"Adaptive Invariant Feature Extraction using Synthetic Interventions" (seed 002_d2b7d83ccf566e3c)
trains a classifier on latent features ``z`` while a mask ``m ∈ [0, 1]^d`` chooses which features
receive Gaussian noise ``z + λ (m ⊗ ε)``; :mod:`circuits.editing.aifs` implements that training. The
edit is the trainable part of the classifier at the site: a per-feature affine gate ``g ⊙ z + b``
(:class:`~circuits.interventions.Gate`).

**At inference** the edit applies the learned gate only — no noise (the noise has mean zero; it is
the training-time intervention). Features whose gate training drove towards 0 are suppressed; the
mask is stored for provenance and to resume training.

Site: either one whole residual stream (``L12RESID``, ``d = d_model``) or heads' outputs ``z`` of
one layer (``L1H0 … L1H3``, ``d = k · d_head``, the heads' slices concatenated in component order).
Tensors: ``gate`` ``[d]``, ``shift`` ``[d]``, ``mask`` ``[d]``; hyperparameters: the seed's ``lam``
(λ), ``alpha`` (α), ``beta`` (β) and the mask-update ``gamma`` (γ) and ``eps`` (ε).
Hooks everywhere; weight form on heads (their ``W_O`` columns and output bias).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from circuits.editing.kinds.base import BakeRules, EditError, Kind, Site
from circuits.interventions import Gate, Intervention
from circuits.model import HookedLM
from circuits.sites import Component, HeadRef, ResidRef

TENSORS = ("gate", "shift", "mask")
#: Mask-update rules (:func:`circuits.editing.aifs.mask_update`): the seed's ``exp(γ / (|IG| + ε))``
#: ("inverse"), or ``exp(γ |IG|)`` ("direct", noise on the features the classifier relies on most).
MASK_RULES = ("inverse", "direct")
#: Sign of the sensitivity term: as the seed's formula is printed, ``−Σ m_j |∂ log p / ∂z_j|``
#: ("as_written", the default), or as its text says, a penalty ``+Σ …`` ("penalty").
SENSITIVITY_SIGNS = ("as_written", "penalty")


def site_width(components: tuple[Component, ...], model: HookedLM) -> int:
    """``d`` of an AIFS site: ``d_model`` for a residual stream, ``k · d_head`` for ``k`` heads of one layer.

    Raises:
        EditError: Not one whole ``resid_pre`` site nor whole heads' ``z`` of a single layer, or out of range.
    """
    shape = model.shape
    if not components:
        raise EditError("an aifs edit needs a site")
    if all(isinstance(c, ResidRef) for c in components):
        (c,) = components if len(components) == 1 else (None,)
        if c is None or c.site != "resid_pre" or c.pos is not None or not 0 <= c.layer < shape.n_layers:
            raise EditError(f"an aifs edit on the residual stream names one whole resid_pre site (e.g. L12RESID), got {components}")
        return shape.d_model
    if not all(isinstance(c, HeadRef) and c.act == "z" and c.pos is None for c in components):
        raise EditError(f"an aifs edit acts on one residual stream or on heads' outputs z, got {components}")
    layers = {c.layer for c in components}  # type: ignore[union-attr]
    if len(layers) != 1 or len(set(components)) != len(components):
        raise EditError(f"an aifs edit's heads are distinct heads of one layer, got {components}")
    if any(c.layer >= shape.n_layers or c.head >= shape.n_heads for c in components):  # type: ignore[union-attr]
        raise EditError(f"{components} do not all exist in a model with {shape.n_layers} layers × {shape.n_heads} heads")
    return len(components) * shape.d_head


def split_site(edit: Any, model: HookedLM, key: str) -> list[Tensor]:
    """A stored ``[d]`` tensor cut into each component's slice (``[d_model]``, or ``[d_head]`` per head).

    Raises:
        EditError: Wrong width.
    """
    d = site_width(edit.components, model)
    t = edit.tensors[key]
    if tuple(t.shape) != (d,):
        raise EditError(f"aifs tensor {key!r} has shape {tuple(t.shape)}, expected ({d},)")
    return list(t.reshape(len(edit.components), -1).unbind(0))


class AIFS(Kind):
    name: ClassVar[str] = "aifs"
    tensors: ClassVar[str] = "``gate``, ``shift``, ``mask`` ``[d]`` (``d_model``, or ``k·d_head`` for heads)"
    summary: ClassVar[str] = "a per-feature gate g ⊙ z + b on one residual stream or one layer's heads, trained under mask-gated synthetic interventions"
    source: ClassVar[str] = "seed 002 (Adaptive Invariant Feature Extraction using Synthetic Interventions); integrated gradients, Sundararajan et al. 2017"
    #: On heads the weight form scales their W_O columns and folds b into the output bias.
    bake: ClassVar[BakeRules] = BakeRules(owns_columns=True)
    accepts: ClassVar[tuple[type, ...]] = (ResidRef, HeadRef)
    hyperparameters: ClassVar[dict[str, tuple[type, Any]]] = {
        "lam": (float, 0.5), "alpha": (float, 1.0), "beta": (float, 0.5), "gamma": (float, 1.0), "eps": (float, 0.1),
        "mask_rule": (str, "inverse"), "sensitivity": (str, "as_written"),
    }

    def check_hyperparameters(self, hyperparameters: dict[str, Any]) -> None:
        for key, allowed in (("mask_rule", MASK_RULES), ("sensitivity", SENSITIVITY_SIGNS)):
            if key in hyperparameters and hyperparameters[key] not in allowed:
                raise EditError(f"aifs {key} must be one of {', '.join(allowed)}, got {hyperparameters[key]!r}")

    def required_tensors(self, edit: Any) -> list[str]:
        return list(TENSORS)

    def sites(self, edit: Any, model: HookedLM) -> list[tuple[Site, Intervention]]:
        gates, shifts = split_site(edit, model, "gate"), split_site(edit, model, "shift")
        return [(c, Gate(g, b)) for c, g, b in zip(edit.components, gates, shifts)]
