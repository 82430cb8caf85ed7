"""Prompt pairs as tokens: grouped by length, checked aligned; reference means over them.

Activation patching is defined position by position, so a clean prompt and its corrupted prompt must
have the same token length; pairs are grouped by length so that no padding is needed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from circuits import model as M
from circuits.suites import PromptPair


class PairError(ValueError):
    """Prompt pairs are empty or a clean prompt and its corrupted prompt differ in token length."""


@dataclass(frozen=True)
class TokenGroup:
    """Prompt pairs of one token length, tokenised.

    Attributes:
        indices: Each row's position in the original list of pairs.
        clean: Clean token ids.
        corrupted: Corrupted token ids.
    """

    indices: list[int]
    clean: Int[Tensor, "batch pos"]
    corrupted: Int[Tensor, "batch pos"]


def tokenize_pairs(model: Any, pairs: Sequence[PromptPair]) -> list[TokenGroup]:
    """Tokenise prompt pairs, grouped by length, checking each pair is aligned token for token.

    Args:
        model: A model with a tokenizer.
        pairs: The prompt pairs.

    Returns:
        Groups of equal-length pairs, shortest first.

    Raises:
        PairError: ``pairs`` is empty, or a clean prompt and its corrupted prompt differ in length.
    """
    if not pairs:
        raise PairError("no prompt pairs given")
    clean_len = M.token_lengths(model, [p.clean for p in pairs])
    corr_len = M.token_lengths(model, [p.corrupted for p in pairs])
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, (a, b) in enumerate(zip(clean_len, corr_len)):
        if a != b:
            p = pairs[i]
            raise PairError(
                f"pair {i} is not aligned: {p.clean!r} is {a} tokens but {p.corrupted!r} is {b}; "
                "clean and corrupted prompts must have the same token length"
            )
        by_len[a].append(i)
    return [
        TokenGroup(
            indices=idx,
            clean=M.to_tokens(model, [pairs[i].clean for i in idx]),
            corrupted=M.to_tokens(model, [pairs[i].corrupted for i in idx]),
        )
        for _, idx in sorted(by_len.items())
    ]


@torch.no_grad()
def mean_activations(model: Any, tokens: Int[Tensor, "batch pos"], names: Sequence[str]) -> dict[str, Tensor]:
    """Reference means for :class:`~circuits.probing.interventions.Mean`: the batch mean per position.

    Args:
        model: A ``TransformerBridge``.
        tokens: Reference prompts (one length).
        names: Hook names.

    Returns:
        ``{hook_name: activation.mean(0)}`` (shape of the activation without the batch axis).
    """
    _, cache = M.run_with_cache(model, tokens, names)
    return {n: cache[n].mean(0) for n in names}


@torch.no_grad()
def position_mean_activations(model: Any, groups: Sequence[TokenGroup], names: Sequence[str]) -> dict[str, Tensor]:
    """Means over every position of every clean and corrupted prompt of ``groups`` (any lengths).

    For :class:`~circuits.probing.interventions.Mean` with ``over_positions=True``. Not for
    ``hook_pattern`` (whose axes are not positions first).

    Returns:
        ``{hook_name: mean}`` with the batch and position axes averaged out.
    """
    sums: dict[str, Tensor] = {}
    count = 0
    for g in groups:
        _, cache = M.run_with_cache(model, torch.cat([g.clean, g.corrupted]), names)
        for n in names:
            sums[n] = sums.get(n, 0) + cache[n].sum(dim=(0, 1))
        count += 2 * g.clean.shape[0] * g.clean.shape[1]
    return {n: v / count for n, v in sums.items()}
