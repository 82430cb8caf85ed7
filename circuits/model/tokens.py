"""Tokenization through the model's tokenizer, under one explicit policy (:class:`~circuits.model.hooked.Tokenization`).

Text becomes token ids here and nowhere else, for scans, metrics, evaluation and generation alike. By
default a text is encoded exactly as the model's own Hugging Face tokenizer encodes it
(``tokenizer(text).input_ids``): a BOS token comes first only when that tokenizer adds one. For
SmolLM2-Instruct it does not (its BOS ``<|im_start|>`` is the chat-turn marker), so the hooked model
sees what ``AutoTokenizer`` + ``AutoModelForCausalLM.generate`` see on the same text; TransformerLens'
``to_tokens`` would prepend it. ``load_model(prepend_bos=True/False)`` overrides the default.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from circuits.model.hooked import HookedLM, Tokenization

logger = logging.getLogger(__name__)


def tokenizer_of(lm: HookedLM) -> Any:
    """The model's tokenizer, or ``None`` for a tokenizer-less tiny model."""
    return lm.tokenizer


def _need_tokenizer(lm: HookedLM) -> Any:
    if lm.tokenizer is None:
        raise ValueError(f"model {lm.name!r} has no tokenizer; pass token ids instead of text")
    return lm.tokenizer


_PROBE = "The capital of France is"


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether ``tokenizer(text)`` starts with the tokenizer's BOS token (its ``add_bos_token`` / post-processor).

    Args:
        tokenizer: A Hugging Face tokenizer.

    Returns:
        ``True`` when encoding a text with special tokens adds the BOS token in front of the text's tokens.
    """
    bos = tokenizer.bos_token_id
    with_special = list(tokenizer(_PROBE)["input_ids"])
    plain = list(tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
    adds = bos is not None and with_special[:1] == [bos] and with_special[1 : 1 + len(plain)] == plain
    if len(with_special) != len(plain) + int(adds):
        logger.warning("the tokenizer adds special tokens other than BOS to every text (%s vs %s); circuit-atlas leaves them out", with_special, plain)
    return adds


def tokenization_policy(tokenizer: Any, prepend_bos: bool | None = None) -> Tokenization:
    """The tokenization policy of a model: its tokenizer's own unless ``prepend_bos`` overrides it.

    Args:
        tokenizer: The model's Hugging Face tokenizer, or ``None`` (token ids only).
        prepend_bos: ``None``: encode as the tokenizer does (:func:`tokenizer_adds_bos`); ``True`` /
            ``False``: always / never put the BOS token first.

    Returns:
        The policy.

    Raises:
        ValueError: ``prepend_bos=True`` for a tokenizer without a BOS token, or ``prepend_bos`` given
            for a model without a tokenizer.
    """
    if tokenizer is None:
        if prepend_bos is not None:
            raise ValueError("prepend_bos applies to text, and this model has no tokenizer (pass token ids)")
        return Tokenization(prepend_bos=False, source="no tokenizer")
    if prepend_bos is None:
        return Tokenization(prepend_bos=tokenizer_adds_bos(tokenizer), source="tokenizer")
    if prepend_bos and tokenizer.bos_token_id is None:
        raise ValueError("prepend_bos=True, but the tokenizer has no BOS token")
    return Tokenization(prepend_bos=bool(prepend_bos), source="override")


def tokens_of(lm: HookedLM, prompt: str) -> Int[Tensor, " pos"]:
    """One text's token ids under the model's tokenization policy (:attr:`HookedLM.tokenization`).

    The text's own tokens (``tokenizer(prompt, add_special_tokens=False)``), preceded by the BOS token
    when the policy prepends it; with the default policy this equals ``tokenizer(prompt).input_ids``.

    Raises:
        ValueError: The model has no tokenizer, or the text has no tokens and no BOS is prepended.
    """
    tok = _need_tokenizer(lm)
    ids = list(tok(prompt, add_special_tokens=False)["input_ids"])
    if lm.tokenization.prepend_bos:
        ids = [int(tok.bos_token_id), *ids]
    if not ids:
        raise ValueError(f"{prompt!r} has no tokens (and the policy prepends no BOS): {lm.tokenization.describe()}")
    return torch.tensor(ids, dtype=torch.long, device=lm.device)


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
    """Token length of each prompt under the model's tokenization policy (BOS counted when prepended)."""
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
    """Token positions (as :func:`tokens_of` numbers them: after the BOS when one is prepended) covering a subject substring.

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
    """The tokenizer's BOS token id, or ``None`` (whether it is prepended is :attr:`HookedLM.tokenization`)."""
    tok = lm.tokenizer
    return None if tok is None or tok.bos_token_id is None else int(tok.bos_token_id)


def token_strings(lm: HookedLM, text_or_ids: str | Sequence[int] | Tensor) -> list[str]:
    """Each token of a text (encoded under the policy, :func:`tokens_of`) or of token ids, decoded on its own.

    For labelling positions (causal-tracing grids, attention patterns); a model without a tokenizer
    gets the ids as strings.
    """
    ids = tokens_of(lm, text_or_ids).tolist() if isinstance(text_or_ids, str) else (
        text_or_ids.reshape(-1).tolist() if isinstance(text_or_ids, Tensor) else list(text_or_ids)
    )
    if lm.tokenizer is None:
        return [str(int(t)) for t in ids]
    return [str(lm.tokenizer.decode([int(t)])) for t in ids]


def decode(lm: HookedLM, ids: Sequence[int] | Tensor) -> str:
    """Token ids → text (special tokens kept, as the model saw them)."""
    values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    return str(_need_tokenizer(lm).decode(values))


def text_windows(lm: HookedLM, text: str, *, window: int = 256, max_tokens: int | None = None) -> Int[Tensor, "window pos"]:
    """Cut a text into equal, non-overlapping windows of ``window`` tokens, each prefixed with BOS when the policy prepends it.

    The one text-windowing helper: perplexity, next-token accuracy, the KL to an unedited model and the
    preservation term of trained edits all read text through it.

    Args:
        lm: A model with a tokenizer.
        text: The text.
        window: Tokens per window (a last, shorter remainder is dropped so windows weigh equally).
        max_tokens: Use only the first ``max_tokens`` tokens (``None``: all).

    Returns:
        ``[n_windows, window + 1]`` token ids with a BOS first (``[n_windows, window]`` when the
        tokenization policy prepends none).

    Raises:
        ValueError: ``window < 2`` or fewer than ``window`` tokens.
    """
    ids = encode_text(lm, text)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if window < 2 or ids.numel() < window:
        raise ValueError(f"need window >= 2 and at least one full window (got {ids.numel()} tokens, window {window})")
    rows = ids[: ids.numel() // window * window].reshape(-1, window)
    if not lm.tokenization.prepend_bos:
        return rows
    return torch.cat([torch.full((rows.shape[0], 1), int(lm.tokenizer.bos_token_id), device=rows.device), rows], dim=1)
