"""The :class:`~circuits.evaluation.benchmarks.base.Scorer` of a real model, through the model adapter.

Log-probabilities come from :func:`circuits.evaluation.metrics.continuation_logprobs` (teacher-forced,
summed over the continuation's tokens, nats; a sentence is scored after BOS alone, as in the
project's stereotype measure), and samples from :func:`circuits.model.sample_continuations` (Hugging
Face's cached ``generate`` with every applied edit; prompt ``i`` seeded with ``seed + i``, so a
prompt's samples do not depend on the others, and the global random state is left as it was). Edits
applied with :func:`circuits.editing.apply_edit` are active in both, so the same scorer measures a
model before and after an edit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from circuits import model as M
from circuits.evaluation.metrics import continuation_logprobs

log = logging.getLogger(__name__)


class ModelScorer:
    """Scores and samples text with a :class:`circuits.model.HookedLM` (implements ``Scorer``).

    Args:
        model: A model with a tokenizer (and a BOS token, for sentence log-probabilities).
        batch_size: Sequences per forward when scoring.
        temperature: Sampling temperature (1.0: the model's distribution, as RealToxicityPrompts).
        top_p: Nucleus mass (Gehman et al. 2020 use 0.9 for their main table; 1.0 samples the full
            distribution).
        progress: Show a progress bar while sampling.
    """

    def __init__(self, model: Any, *, batch_size: int = 32, temperature: float = 1.0, top_p: float = 1.0, progress: bool = True) -> None:
        self.model = model
        self.batch_size = batch_size
        self.temperature = temperature
        self.top_p = top_p
        self.progress = progress

    def sequence_logprob(self, texts: Sequence[str]) -> list[float]:
        """Total log-probability of each text after BOS (nats)."""
        if not texts:
            return []
        return continuation_logprobs(self.model, [""] * len(texts), list(texts), batch_size=self.batch_size).tolist()

    def continuation_logprob(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Summed log-probability of each continuation given its prompt (nats)."""
        if not prompts:
            return []
        return continuation_logprobs(self.model, list(prompts), list(continuations), batch_size=self.batch_size).tolist()

    def sample(self, prompts: Sequence[str], *, n: int, max_new_tokens: int, seed: int) -> list[list[str]]:
        """``n`` sampled continuations of each prompt; prompt ``i`` uses seed ``seed + i``."""
        out: list[list[str]] = []
        bar = tqdm(list(prompts), desc="sampling continuations", unit="prompt", disable=not self.progress, leave=False)
        for i, p in enumerate(bar):
            out += M.sample_continuations(
                self.model, [p], n=n, max_new_tokens=max_new_tokens, seed=seed + i, temperature=self.temperature, top_p=self.top_p
            )
        return out
