"""The :class:`~circuits.evaluation.benchmarks.base.Scorer` of a real model, through the model adapter.

Log-probabilities come from :func:`circuits.evaluation.metrics.continuation_logprobs` (teacher-forced,
summed over the continuation's tokens, nats; a sentence is scored after BOS alone, as in the
project's stereotype measure; the answers to one prompt continue its KV cache, since every rule that
asks for continuations chooses among them), and samples from :func:`circuits.model.sample_continuations` (Hugging
Face's cached ``generate`` with every applied edit; prompt ``i`` seeded with ``seed + i``, so a
prompt's samples do not depend on the others, and the global random state is left as it was). Edits
applied with :func:`circuits.editing.apply_edit` are active in both, so the same scorer measures a
model before and after an edit.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from circuits import __version__
from circuits import model as M
from circuits.atomic import atomic_write_text
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
        return continuation_logprobs(self.model, list(prompts), list(continuations), batch_size=self.batch_size, share_prompts=True).tolist()

    def sample(self, prompts: Sequence[str], *, n: int, max_new_tokens: int, seed: int) -> list[list[str]]:
        """``n`` sampled continuations of each prompt; prompt ``i`` uses seed ``seed + i``."""
        out: list[list[str]] = []
        bar = tqdm(list(prompts), desc="sampling continuations", unit="prompt", disable=not self.progress, leave=False)
        for i, p in enumerate(bar):
            out += M.sample_continuations(
                self.model, [p], n=n, max_new_tokens=max_new_tokens, seed=seed + i, temperature=self.temperature, top_p=self.top_p
            )
        return out


#: Layout tag of a cached scorer's answers file (another tag: the file is ignored and rewritten).
ANSWERS_FORMAT = "circuit-atlas-scorer-answers/1"
#: Modules whose code decides a scorer's answers (their source is part of the cache key).
SCORING_MODULES = ("circuits.evaluation.benchmarks.scorer", "circuits.evaluation.metrics", "circuits.model.forward", "circuits.model.generation",
                   "circuits.model.tokens")


class CachedScorer:
    """A :class:`ModelScorer` of the *unedited* model whose answers are kept on disk and reused.

    The benchmark counterpart of :func:`circuits.evaluation.run.measure` with ``cache_dir``: scoring a benchmark
    on the unedited model is the part every evaluation of an edit shares, so its answers
    (log-probabilities, sampled continuations) are stored in one JSON file per model, keyed by
    everything they depend on: the weight fingerprint, the tokenization policy, the scorer's settings,
    the circuit-atlas version and the source of the scoring modules (:data:`SCORING_MODULES`); inside
    it each call is keyed by its method, inputs and arguments. A file that cannot be used is ignored
    (and rewritten). Writes are atomic; no pickle.

    Never use it with edits applied: a hook edit leaves the weight fingerprint unchanged.

    Args:
        scorer: The model's scorer.
        cache_dir: Directory of the answers files (created if missing).
    """

    def __init__(self, scorer: ModelScorer, cache_dir: Any) -> None:
        self.scorer = scorer
        model = scorer.model
        code = hashlib.sha256(b"".join(inspect.getsource(importlib.import_module(m)).encode() for m in SCORING_MODULES)).hexdigest()
        content = {
            "format": ANSWERS_FORMAT, "version": __version__, "fingerprint": M.fingerprint(model), "tokenization": model.tokenization.as_dict(),
            "scorer": {"batch_size": scorer.batch_size, "temperature": scorer.temperature, "top_p": scorer.top_p}, "code": code,
        }
        key = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:24]
        directory = Path(cache_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"scorer-answers-{key}.json"
        self.answers: dict[str, Any] = {}
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                if raw.get("format") == ANSWERS_FORMAT and isinstance(raw.get("answers"), dict):
                    self.answers = raw["answers"]
            except (OSError, ValueError, AttributeError) as e:
                log.warning("ignoring cached scorer answers %s: %s", self.path, e)

    def _call(self, method: str, args: dict[str, Any], compute: Any) -> Any:
        key = hashlib.sha256(json.dumps([method, args], sort_keys=True).encode()).hexdigest()
        if key in self.answers:
            log.info("%s: %s answered from %s", method, f"{len(next(iter(args.values())))} inputs", self.path.name)
            value = self.answers[key]
            return [float("-inf") if v is None else v for v in value] if method != "sample" else value
        value = compute()
        self.answers[key] = [None if v == float("-inf") else v for v in value] if method != "sample" else value
        atomic_write_text(self.path, json.dumps({"format": ANSWERS_FORMAT, "answers": self.answers}, allow_nan=False))
        return value

    def sequence_logprob(self, texts: Sequence[str]) -> list[float]:
        """:meth:`ModelScorer.sequence_logprob`, from the cache when asked before."""
        return self._call("sequence_logprob", {"texts": list(texts)}, lambda: self.scorer.sequence_logprob(texts))

    def continuation_logprob(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """:meth:`ModelScorer.continuation_logprob`, from the cache when asked before."""
        return self._call("continuation_logprob", {"prompts": list(prompts), "continuations": list(continuations)},
                          lambda: self.scorer.continuation_logprob(prompts, continuations))

    def sample(self, prompts: Sequence[str], *, n: int, max_new_tokens: int, seed: int) -> list[list[str]]:
        """:meth:`ModelScorer.sample`, from the cache when asked before."""
        return self._call("sample", {"prompts": list(prompts), "n": n, "max_new_tokens": max_new_tokens, "seed": seed},
                          lambda: self.scorer.sample(prompts, n=n, max_new_tokens=max_new_tokens, seed=seed))
