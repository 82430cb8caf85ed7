"""Tokenization through the model's tokenizer, numbered as the hooked model sees tokens (BOS first)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from circuits.model.hooked import HookedLM


def tokenizer_of(lm: HookedLM) -> Any:
    """The model's tokenizer, or ``None`` for a tokenizer-less tiny model."""
    return lm.tokenizer


def _need_tokenizer(lm: HookedLM) -> Any:
    if lm.tokenizer is None:
        raise ValueError(f"model {lm.name!r} has no tokenizer; pass token ids instead of text")
    return lm.tokenizer


def tokens_of(lm: HookedLM, prompt: str) -> Int[Tensor, " pos"]:
    """One prompt's token ids as the hooked model numbers them (BOS prepended when the model has one).

    Raises:
        ValueError: The model has no tokenizer.
    """
    _need_tokenizer(lm)
    return lm.bridge.to_tokens(prompt)[0].to(lm.device)


def to_tokens(lm: HookedLM, prompts: Sequence[str]) -> Int[Tensor, "batch pos"]:
    """Tokenize prompts of equal token length (with the model's BOS prepended).

    Args:
        lm: A model with a tokenizer.
        prompts: Non-empty list of prompts that tokenize to the same length.

    Returns:
        Token ids, on the model's device.

    Raises:
        ValueError: ``prompts`` is empty, the prompts tokenize to different lengths, or no tokenizer.
    """
    if not prompts:
        raise ValueError("no prompts to tokenize")
    rows = [tokens_of(lm, p) for p in prompts]
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"prompts tokenize to different lengths {sorted(lengths)}: {list(prompts)[:4]}")
    return torch.stack(rows)


def token_lengths(lm: HookedLM, prompts: Sequence[str]) -> list[int]:
    """Token length (with BOS) of each prompt."""
    return [int(tokens_of(lm, p).shape[-1]) for p in prompts]


def encode_text(lm: HookedLM, text: str) -> Int[Tensor, " pos"]:
    """Tokenize free text without special tokens (for perplexity on a text sample)."""
    ids = _need_tokenizer(lm).encode(text, add_special_tokens=False)
    return torch.tensor(ids, dtype=torch.long, device=lm.device)


def single_token_id(lm: HookedLM, text: str) -> int:
    """The id of a string that must be exactly one token (no BOS).

    Raises:
        ValueError: ``text`` is not exactly one token.
    """
    ids = _need_tokenizer(lm).encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens for this tokenizer, expected exactly 1")
    return int(ids[0])


def subject_positions(lm: HookedLM, prompt: str, subject: str) -> list[int]:
    """Token positions (with BOS, as :func:`to_tokens` numbers them) covering a subject substring.

    Args:
        lm: A model with a fast tokenizer.
        prompt: The prompt.
        subject: A substring of ``prompt`` (first occurrence is used).

    Returns:
        Sorted positions of every token that overlaps the subject's characters.

    Raises:
        ValueError: ``subject`` is not in ``prompt``.
    """
    start = prompt.find(subject)
    if start < 0 or not subject:
        raise ValueError(f"subject {subject!r} is not in prompt {prompt!r}")
    end = start + len(subject)
    enc = _need_tokenizer(lm)(prompt, add_special_tokens=False, return_offsets_mapping=True)
    offset = int(tokens_of(lm, prompt).shape[-1]) - len(enc["input_ids"])  # BOS, if prepended
    return [i + offset for i, (a, b) in enumerate(enc["offset_mapping"]) if a < end and b > start]


def bos_token_id(lm: HookedLM) -> int | None:
    """The BOS token the model prepends, or ``None``."""
    tok = lm.tokenizer
    return None if tok is None or tok.bos_token_id is None else int(tok.bos_token_id)


def decode(lm: HookedLM, ids: Sequence[int] | Tensor) -> str:
    """Token ids → text (special tokens kept, as the model saw them)."""
    values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    return str(_need_tokenizer(lm).decode(values))


def text_windows(lm: HookedLM, text: str, *, window: int = 256, max_tokens: int | None = None) -> Int[Tensor, "window pos"]:
    """Cut a text into equal, non-overlapping windows of ``window`` tokens, each prefixed with BOS.

    The one text-windowing helper: perplexity, next-token accuracy, the KL to an unedited model and the
    preservation term of trained edits all read text through it.

    Args:
        lm: A model with a tokenizer.
        text: The text.
        window: Tokens per window (a last, shorter remainder is dropped so windows weigh equally).
        max_tokens: Use only the first ``max_tokens`` tokens (``None``: all).

    Returns:
        ``[n_windows, window + 1]`` token ids (``window`` if the model has no BOS token).

    Raises:
        ValueError: ``window < 2`` or fewer than ``window`` tokens.
    """
    ids = encode_text(lm, text)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if window < 2 or ids.numel() < window:
        raise ValueError(f"need window >= 2 and at least one full window (got {ids.numel()} tokens, window {window})")
    rows = ids[: ids.numel() // window * window].reshape(-1, window)
    bos = bos_token_id(lm)
    return torch.cat([torch.full((rows.shape[0], 1), bos, device=rows.device), rows], dim=1) if bos is not None else rows
