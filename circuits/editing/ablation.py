"""Mean-ablation edits of the heads an atlas flags.

Mean ablation replaces a component's activation by its mean over a reference distribution, removing
the information it carries about the particular input while keeping its average contribution (Wang et
al. 2023, IOI; Chan et al. 2022, causal scrubbing; as the ablation step of intervention-based causal
pruning). Here each flagged head's output ``z`` (``blocks.{L}.attn.hook_z[:, :, h]``) is replaced at
every position by its mean over all positions of the suite's *build* split prompts, clean and
corrupted alike, so the edit never sees the evaluation split.
"""

from __future__ import annotations

from typing import Any

from circuits.atlas.schema import Atlas, AtlasError
from circuits.editing.edit import Edit
from circuits.probing.patching import position_mean_activations, tokenize_pairs
from circuits.sites import HeadRef, parse_component
from circuits.suites import SplitName, Suite


def mean_ablation_from_atlas(
    model: Any,
    atlas: Atlas,
    suite: Suite,
    *,
    k: int,
    behaviour: str | None = None,
    split: SplitName = "build",
) -> Edit:
    """Build a mean-ablation edit of the top-``k`` flagged heads of a behaviour.

    Args:
        model: The model the atlas was measured on.
        atlas: The atlas.
        suite: The suite whose ``split`` prompts define the means.
        k: Number of heads (largest mean effect first, flagged heads only).
        behaviour: Behaviour name (default: the suite's name).
        split: Split for the means (default ``"build"``).

    Returns:
        The edit.

    Raises:
        AtlasError: No such behaviour, or it flags no head.
        ValueError: ``k < 1``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    b = atlas.behaviour(behaviour or suite.name)
    flagged = [c for c in b.flagged() if c.kind == "head"][:k]
    if not flagged:
        raise AtlasError(f"behaviour {b.name!r} flags no head; nothing to ablate")
    heads = [parse_component(c.id) for c in flagged]
    assert all(isinstance(h, HeadRef) for h in heads)
    pairs = suite.pairs(split)
    means = position_mean_activations(model, tokenize_pairs(model, pairs), sorted({h.hook_name for h in heads}))
    return Edit(
        kind="mean_ablation",
        components=tuple(heads),
        tensors={str(h): means[h.hook_name][h.head].clone() for h in heads},  # type: ignore[union-attr]
        model_name=atlas.model.name,
        model_fingerprint=atlas.model.fingerprint,
        hyperparameters={"k": len(heads), "requested_k": k, "positions": "all", "mean_over": f"{split} split, clean+corrupted, all positions"},
        suite={"name": suite.name, "split": split, "content_hash": suite.content_hash, "n_pairs": len(pairs)},
    )
