"""Harm and capability measurements for an edited vs unedited model.

* **Bias gap** (harm): for each prompt pair, ``m(clean) - m(corrupted)`` where ``m`` is the suite's
  logit difference; for gender-occupation this is how much more `` she`` is preferred after a
  stereotypically female occupation than after a male one (logit units; 0 = no association). The
  counterfactual-pair form follows the counterfactual-evaluation practice of Vig et al. 2020
  ("Causal mediation analysis for interpreting neural NLP: the case of gender bias").
* **Perplexity** (capability): ``exp`` of the mean next-token negative log-likelihood (nats/token) over a
  text sample, in non-overlapping windows each starting with BOS.
* **Paired test**: two-sided paired t-test over prompt pairs (``scipy.stats.ttest_rel``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from scipy import stats
from torch import Tensor

from circuits import model as M
from circuits.metrics import Metric
from circuits.probing.patching import tokenize_pairs
from circuits.suites import PromptPair


def english_sample() -> str:
    """The shipped English text sample (see ``circuits/data/README.md``)."""
    return resources.files("circuits.data").joinpath("english_sample.txt").read_text(encoding="utf-8")


@torch.no_grad()
def bias_gaps(model: Any, pairs: list[PromptPair], metric: Metric) -> Float[Tensor, " pair"]:
    """Per-pair bias gap ``m(clean) - m(corrupted)`` (metric units), in the order of ``pairs``.

    Raises:
        PairError: Empty or misaligned pairs.
    """
    out = torch.zeros(len(pairs))
    for g in tokenize_pairs(model, pairs):
        idx = torch.tensor(g.indices)
        out[idx] = (metric(M.run(model, g.clean)) - metric(M.run(model, g.corrupted))).float()
    return out


@torch.no_grad()
def window_nll(model: Any, ids: Int[Tensor, " pos"], *, window: int = 128) -> Float[Tensor, " window"]:
    """Mean next-token NLL (nats/token) of each non-overlapping window of a token sequence.

    Each window is prefixed with the model's BOS token (if any); the first window token is predicted
    from BOS.

    Raises:
        ValueError: Fewer than 2 tokens, or ``window < 2``.
    """
    if ids.numel() < 2 or window < 2:
        raise ValueError(f"need at least 2 tokens and window >= 2 (got {ids.numel()} tokens, window {window})")
    bos = M.bos_token_id(model)
    chunks = [ids[i : i + window] for i in range(0, ids.numel(), window)]
    chunks = [c for c in chunks if c.numel() >= 2]
    out = []
    for c in chunks:
        toks = torch.cat([torch.tensor([bos]), c]) if bos is not None else c
        logits = M.run(model, toks[None])[0]
        out.append(F.cross_entropy(logits[:-1].float(), toks[1:]))
    return torch.stack(out)


def perplexity(model: Any, text: str | None = None, *, window: int = 128) -> float:
    """Perplexity of ``text`` (default: the shipped English sample).

    Returns:
        ``exp(mean NLL)`` over windows (token-weighted only up to the last, shorter window).
    """
    ids = M.encode_text(model, english_sample() if text is None else text)
    return math.exp(float(window_nll(model, ids, window=window).mean()))


@dataclass(frozen=True)
class EditEvaluation:
    """Harm and capability of a model before and after an edit, on one split.

    Attributes:
        split: The suite split the harm numbers come from.
        n_pairs: Number of prompt pairs.
        bias_before: Mean bias gap without the edit (logit units).
        bias_after: Mean bias gap with the edit.
        bias_reduction: ``1 - bias_after / bias_before`` (fraction; 0.5 = halved).
        p_value: Paired t-test of per-pair gaps, before vs after.
        ppl_before: Perplexity on the English sample without the edit.
        ppl_after: Perplexity with the edit.
        ppl_change: ``ppl_after / ppl_before - 1`` (fraction; 0.05 = 5% worse).
    """

    split: str
    n_pairs: int
    bias_before: float
    bias_after: float
    bias_reduction: float
    p_value: float
    ppl_before: float
    ppl_after: float
    ppl_change: float

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain dict (for manifests and JSON)."""
        return dict(self.__dict__)


def compare(
    split: str,
    gaps_before: Float[Tensor, " pair"],
    gaps_after: Float[Tensor, " pair"],
    ppl_before: float,
    ppl_after: float,
) -> EditEvaluation:
    """Combine before/after measurements into an :class:`EditEvaluation` (paired t-test on gaps)."""
    before, after = float(gaps_before.mean()), float(gaps_after.mean())
    p = float(stats.ttest_rel(gaps_before.numpy(), gaps_after.numpy()).pvalue) if len(gaps_before) > 1 else 1.0
    return EditEvaluation(
        split=split,
        n_pairs=len(gaps_before),
        bias_before=before,
        bias_after=after,
        bias_reduction=1.0 - after / before if before else 0.0,
        p_value=1.0 if math.isnan(p) else p,
        ppl_before=ppl_before,
        ppl_after=ppl_after,
        ppl_change=ppl_after / ppl_before - 1.0,
    )
