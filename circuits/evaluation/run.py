"""Evaluate edits: every harm and capability measure, before vs after, with paired statistics.

:func:`measure` takes per-item measurements of one model state; :func:`evaluate` measures the
unedited model (or reuses a baseline), applies the edits, measures again, and compares:

* per-item measures (bias gaps, log-probability differences, correctness, window NLL) get a two-sided
  paired t-test (``scipy.stats.ttest_rel``) and a 95% percentile bootstrap CI of the mean change
  (``scipy.stats.bootstrap``; Efron & Tibshirani 1993);
* aggregate classification measures (demographic parity, equalized odds, ECE, worst-group accuracy)
  get a paired permutation test (``scipy.stats.permutation_test``, before/after swapped per review)
  and a bootstrap CI over reviews;
* KL to the unedited model has no "before": a one-sample t-test against 0.

Harm of a suite: the signed bias gap for harmful suites (its sign is the harmful direction) and the
absolute gap for spurious suites (any change caused by an irrelevant token is spurious). All numbers
come from the held-out ``eval`` split of the suites and from evaluation data that no builder sees
(:mod:`circuits.data`); the report records which.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from circuits import data as D
from circuits import model as M
from circuits.editing import Edit, EditError, apply_edit, verify_fingerprint
from circuits.evaluation import metrics as E
from circuits.evaluation.compare import compare
from circuits.evaluation.report import ALL_GROUPS, EvalReport, Measure, MeasureGroup, Measurements, Settings, seed_table
from circuits.metrics import kl_divergence
from circuits.probing.pairs import prepare
from circuits.suites import SplitName, Suite, available_suites, load_suite, shipped_suite

__all__ = ["ALL_GROUPS", "EvalReport", "Measure", "MeasureGroup", "Measurements", "Settings", "compare", "evaluate", "measure", "neutral_kl", "seed_table", "shipped_suites", "suite_harm"]


def suite_harm(model: Any, suite: Suite, split: SplitName = "eval", *, max_pairs: int | None = None) -> np.ndarray:
    """Per-pair harm of a suite: the bias gap (signed for harmful suites, absolute for spurious ones).

    Raises:
        PairError: Misaligned pairs.
        SuiteError: No such split.
    """
    gaps = E.bias_gaps(model, prepare(model, suite.pairs(split, max_pairs=max_pairs), suite.metric)).numpy()
    return np.abs(gaps) if suite.kind == "spurious" else gaps


def _classification(model: Any) -> tuple[np.ndarray, np.ndarray]:
    task = D.classification_task()
    names = [task.groups["A"], task.groups["B"]]
    prompts = [r.template.replace(task.slot, n) for r in task.items for g in names for n in g]
    ids = [M.single_token_id(model, task.labels["positive"]), M.single_token_id(model, task.labels["negative"])]
    logits = E.label_logits(model, prompts, ids)
    diff = (logits[:, 0] - logits[:, 1]).numpy().reshape(len(task.items), 2, len(names[0]))
    return diff, np.array([r.label == "positive" for r in task.items])


def _multiple_choice(model: Any) -> np.ndarray:
    task = D.multiple_choice()
    prompts, conts = [], []
    for q in task.items:
        for o in q.options:
            prompts.append(f"Question: {q.question}\nAnswer:")
            conts.append(" " + o)
    lp = E.continuation_logprobs(model, prompts, conts).numpy()
    out, i = [], 0
    for q in task.items:
        out.append(float(int(np.argmax(lp[i : i + len(q.options)])) == q.answer))
        i += len(q.options)
    return np.array(out)


def _factual_qa(model: Any, *, max_new_tokens: int = 6) -> np.ndarray:
    """1.0 per question whose greedy answer to the few-shot prompt is right (:meth:`circuits.data.FactualQA.prompt`, :meth:`circuits.data.FactQuestion.is_correct`)."""
    task, tok = D.factual_qa(), M.tokenizer_of(model)
    ids = [M.tokens_of(model, task.prompt(q)) for q in task.items]
    out = np.zeros(len(ids))
    by_len: dict[int, list[int]] = {}
    for i, t in enumerate(ids):
        by_len.setdefault(len(t), []).append(i)
    for n, rows in by_len.items():
        full = M.generate_ids(model, torch.stack([ids[i] for i in rows]), max_new_tokens=max_new_tokens)
        for r, i in enumerate(rows):
            text = tok.decode(full[r, n:].tolist(), skip_special_tokens=True)
            out[i] = float(task.items[i].is_correct(text))
    return out


def shipped_suites(model: Any) -> list[Suite]:
    """Every shipped behaviour suite (not the circuit tasks), made for this model: generated suites keep the pairs that align for its tokenizer."""
    return [load_suite(n, model=model) for n in available_suites(tasks=False)]


def measure(
    model: Any,
    *,
    suites: Sequence[Suite] | None = None,
    split: SplitName = "eval",
    groups: Sequence[MeasureGroup] = ALL_GROUPS,
    max_pairs: int | None = None,
    window: int = 256,
    max_tokens: int | None = None,
) -> Measurements:
    """Per-item measurements of the model as it is now (apply edits first to measure an edited model).

    Args:
        model: A ``TransformerBridge``.
        suites: Suites whose harm to measure (default: every shipped suite).
        split: Suite split (default ``"eval"``).
        groups: Which measure groups to take (default: all; ``"kl"`` needs an edit, see :func:`evaluate`).
        max_pairs: Word pairs per template (``None``: all).
        window: Tokens per text window.
        max_tokens: Use only the first ``max_tokens`` tokens of the evaluation text (``None``: all
            20k+).

    Returns:
        The measurements.

    Raises:
        ValueError: An unknown measure group.
        PairError, SuiteError: Bad suite data.
    """
    suites = list(suites) if suites is not None else shipped_suites(model)
    settings = Settings.of([s.name for s in suites], split, groups, max_pairs, window, max_tokens, prepend_bos=model.tokenization.prepend_bos)
    kw: dict[str, Any] = {}
    if "suites" in groups:
        kw["gaps"] = {s.name: suite_harm(model, s, split, max_pairs=max_pairs) for s in suites}
    if "stereotype" in groups:
        pairs = D.stereotype_pairs().pairs
        lp = E.continuation_logprobs(model, [""] * 2 * len(pairs), [p.stereotype for p in pairs] + [p.anti_stereotype for p in pairs]).numpy()
        kw["stereotype"] = lp[: len(pairs)] - lp[len(pairs) :]
    if "toxicity" in groups:
        items = D.toxicity_continuations().items
        lp = E.continuation_logprobs(model, [i.prompt for i in items] * 2, [i.toxic for i in items] + [i.benign for i in items]).numpy()
        kw["toxicity"] = lp[: len(items)] - lp[len(items) :]
    if "classification" in groups:
        kw["classification"], kw["labels"] = _classification(model)
    if "multiple_choice" in groups:
        kw["mc_correct"] = _multiple_choice(model)
    if "factual_qa" in groups:
        kw["qa_correct"] = _factual_qa(model)
    if "text" in groups:
        nll, acc = E.window_scores(model, M.text_windows(model, D.english_eval(), window=window, max_tokens=max_tokens))
        kw["nll"], kw["accuracy"] = nll.numpy(), acc.numpy()
    return Measurements(settings=settings, **kw)


@torch.no_grad()
def neutral_kl(model: Any, edits: Sequence[Edit], windows: torch.Tensor, *, batch_size: int = 8, check_fingerprint: bool = True) -> np.ndarray:
    """Per-window mean ``KL(p_unedited ‖ p_edited)`` over next-token distributions (nats/token).

    The capability-preservation measure of edit papers (e.g. Meng et al. 2022's "neighbourhood"
    checks, and the KL term of our trained edits), on neutral text the edits were not built from.

    Args:
        model: The unedited model.
        edits: Edits (applied per batch, removed after each).
        windows: ``[window, pos]`` token ids (:func:`circuits.model.text_windows`).
        batch_size: Windows per forward.
        check_fingerprint: Refuse edits made for another model (skip when the caller has checked).

    Returns:
        ``Float[ndarray, "window"]``, ≥ 0.

    Raises:
        EditError: The edits were made for another model.
    """
    if check_fingerprint:
        verify_fingerprint(model, *edits)
    out = []
    for s in range(0, windows.shape[0], batch_size):
        toks = windows[s : s + batch_size]
        ref = M.run(model, toks).float().log_softmax(-1)
        with apply_edit(model, *edits, check_fingerprint=False):
            logq = M.run(model, toks).float().log_softmax(-1)
        out.append(kl_divergence(ref, logq).mean(-1).cpu())
    return torch.cat(out).numpy()


def evaluate(
    model: Any,
    *edits: Edit,
    suite: Suite | None = None,
    baseline: Measurements | None = None,
    baseline_cache: Path | str | None = None,
    split: SplitName = "eval",
    groups: Sequence[MeasureGroup] = ALL_GROUPS,
    max_pairs: int | None = None,
    window: int = 256,
    max_tokens: int | None = None,
    kl_windows: int = 16,
    seed: int = 0,
) -> EvalReport:
    """Measure harm reduced vs capability kept for edits (applied together, in order).

    Args:
        model: The unedited model the edits were made for.
        *edits: One or more edits.
        suite: The target behaviour (default: the suite recorded in the first edit). Every shipped suite
            is measured as well, so side effects on other behaviours show.
        baseline: Measurements of the unedited model with the same settings (from :func:`measure`), to
            skip measuring it again when evaluating many edits.
        baseline_cache: Without ``baseline``, read the unedited model's measurements from this
            directory, or take and store them there (:func:`circuits.evaluation.cache.cached_measure`;
            keyed by weights, settings, data and measuring code). ``None``: measure every time.
        split: Suite split for harm (default ``"eval"``, held out from building).
        groups: Measure groups (default: all).
        max_pairs: Word pairs per template (``None``: all).
        window: Tokens per text window.
        max_tokens: Evaluation-text tokens to use (``None``: all).
        kl_windows: Text windows for the KL measure.
        seed: Seed of the bootstrap and permutation resampling (same seed → same report).

    Returns:
        The report.

    Raises:
        EditError: No edits, or edits made for another model.
        ValueError: A baseline taken with other settings, or an unknown group.
        SuiteError: The target suite is unknown.
    """
    if not edits:
        raise EditError("no edits to evaluate")
    t0 = time.perf_counter()
    verify_fingerprint(model, *edits)
    target = suite or shipped_suite(str(edits[0].suite.get("name", "")), recorded_in="the edit manifest", model=model)
    suites = shipped_suites(model)
    if target.name not in {s.name for s in suites}:
        suites.append(target)
    kw: dict[str, Any] = dict(suites=suites, split=split, groups=groups, max_pairs=max_pairs, window=window, max_tokens=max_tokens)
    if baseline is not None:
        want = Settings.of([s.name for s in suites], split, groups, max_pairs, window, max_tokens, prepend_bos=model.tokenization.prepend_bos)
        if baseline.settings != want:
            raise ValueError(f"the baseline was measured with other settings: {baseline.settings} vs {want}")
        before = baseline
    elif baseline_cache is not None:
        from circuits.evaluation.cache import cached_measure

        before = cached_measure(model, baseline_cache, **kw)
    else:
        before = measure(model, **kw)
    with apply_edit(model, *edits, check_fingerprint=False):
        after = measure(model, **kw)
    kl = None
    if "kl" in groups:
        kl = neutral_kl(model, edits, M.text_windows(model, D.english_eval(), window=window, max_tokens=max_tokens)[:kl_windows], check_fingerprint=False)
    return EvalReport(
        edits=tuple(str(e) for e in edits),
        suite=target.name,
        split=split,
        measures=tuple(compare(before, after, kl, seed=seed)),
        seconds=time.perf_counter() - t0,
        tokenization=model.tokenization.as_dict(),
    )


