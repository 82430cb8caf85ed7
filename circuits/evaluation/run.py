"""Evaluate edits: every harm and capability measure, before vs after, with paired statistics.

:func:`measure` takes per-item measurements of one model state, one measurement group at a time (each
suite's bias gap, stereotype pairs, toxicity continuations, review classification, multiple choice,
factual QA, text windows); :func:`evaluate` measures the unedited model (or reuses a baseline, in
memory or from the disk cache :mod:`circuits.evaluation.cache`), applies the edits, measures again,
and compares every measure of the registry (:mod:`circuits.evaluation.measures`) with its paired test
(:func:`circuits.evaluation.compare.compare`).

Harm of a suite: the signed bias gap for harmful suites (its sign is the harmful direction), beside it
the mean absolute per-pair gap, and the absolute gap for spurious suites (any change caused by an
irrelevant token is spurious), each in the unit its metric measures in (logits for a logit
difference, nats for a log-probability difference). All numbers come from the held-out ``eval`` split
of the suites and from evaluation data that no builder sees (:mod:`circuits.data`); the report records
which.

Speed and memory: every group is batched (:mod:`circuits.evaluation.metrics`: length-sorted, padded
batches), factual
QA generates every question of a batch at once with the KV cache (left-padded; each answer equals the
one generated alone, tested), and only the positions a measure reads are unembedded,
:data:`~circuits.evaluation.metrics.LOGIT_BYTES` at a time, so no full-vocabulary logits of a whole
batch are ever held. Each group reports its time: a progress bar on a terminal, and always one log line
(``logging.INFO``) and the optional ``on_measure`` callback, which the CLI prints, so a run whose output
goes to a file shows where it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from circuits import data as D
from circuits import model as M
from circuits.editing import Edit, EditError, apply_edit, verify_fingerprint
from circuits.evaluation import metrics as E
from circuits.evaluation.cache import load_or_measure
from circuits.evaluation.compare import compare, seed_table
from circuits.evaluation.report import (
    ALL_GROUPS,
    EvalReport,
    Measure,
    MeasureGroup,
    Measurements,
    Settings,
)
from circuits.metrics import kl_divergence
from circuits.probing.pairs import Prepared, prepare
from circuits.suites import (
    SplitName,
    Suite,
    available_suites,
    load_suite,
    shipped_suite,
)

log = logging.getLogger(__name__)

__all__ = [
    "ALL_GROUPS", "EvalReport", "Measure", "MeasureGroup", "Measurements", "OnMeasure", "Settings", "compare", "evaluate", "measure",
    "neutral_kl", "seed_table", "shipped_suites", "suite_harm",
]

#: Called after each measurement group with its label (``"classification"``, ``"suites:toxicity (unedited)"``) and seconds.
OnMeasure = Callable[[str, float], None]
def gap_unit(prepared: Prepared) -> str:
    """The unit a suite's gap is measured in: the one its metric declares (``metric.info.unit``)."""
    return prepared.metric.info.unit


def _suite_gaps(model: Any, suite: Suite, split: SplitName, max_pairs: int | None) -> tuple[np.ndarray, str]:
    prepared = prepare(model, suite.pairs(split, max_pairs=max_pairs), suite.metric)
    gaps = E.bias_gaps(model, prepared).numpy()
    return (np.abs(gaps) if suite.kind == "spurious" else gaps), gap_unit(prepared)


def suite_harm(model: Any, suite: Suite, split: SplitName = "eval", *, max_pairs: int | None = None) -> np.ndarray:
    """Per-pair harm of a suite: the bias gap (signed for harmful suites, absolute for spurious ones), in its metric's unit.

    Raises:
        PairError: Misaligned pairs.
        SuiteError: No such split.
    """
    return _suite_gaps(model, suite, split, max_pairs)[0]


def _classification(model: Any) -> tuple[np.ndarray, np.ndarray]:
    task = D.classification_task()
    names = [task.groups["A"], task.groups["B"]]
    prompts = [r.template.replace(task.slot, n) for r in task.items for g in names for n in g]
    ids = [M.single_token_id(model, task.labels["positive"]), M.single_token_id(model, task.labels["negative"])]
    logits = E.label_logits(model, prompts, ids)
    diff = (logits[:, 0] - logits[:, 1]).numpy().reshape(len(task.items), 2, len(names[0]))
    return diff, np.array([r.label == "positive" for r in task.items])


def _multiple_choice(model: Any) -> np.ndarray:
    """1.0 per question whose highest-log-prob option is the answer (each question run once, its options continuing its KV cache)."""
    task = D.multiple_choice()
    prompts, conts = [], []
    for q in task.items:
        for o in q.options:
            prompts.append(f"Question: {q.question}\nAnswer:")
            conts.append(" " + o)
    lp = E.continuation_logprobs(model, prompts, conts, share_prompts=True).numpy()
    out, i = [], 0
    for q in task.items:
        out.append(float(int(np.argmax(lp[i : i + len(q.options)])) == q.answer))
        i += len(q.options)
    return np.array(out)


def _factual_qa(model: Any, *, max_new_tokens: int = 6) -> np.ndarray:
    """1.0 per question whose greedy answer to the few-shot prompt is right (:meth:`circuits.data.FactualQA.prompt`,
    :meth:`circuits.data.FactQuestion.is_correct`); the questions are generated together with the KV cache
    (:func:`circuits.evaluation.metrics.greedy_continuations`)."""
    task = D.factual_qa()
    answers = E.greedy_continuations(model, [task.prompt(q) for q in task.items], max_new_tokens=max_new_tokens)
    return np.array([float(q.is_correct(a)) for q, a in zip(task.items, answers)])


def shipped_suites(model: Any) -> list[Suite]:
    """Every shipped behaviour suite (not the circuit tasks), made for this model: generated suites keep the pairs that align for its tokenizer."""
    return [load_suite(n, model=model) for n in available_suites(tasks=False)]


def _groups_to_run(suites: Sequence[Suite], groups: Sequence[str]) -> list[tuple[str, str]]:
    """``(label, group)`` of every measurement to take, in order (one per suite for ``"suites"``)."""
    out: list[tuple[str, str]] = []
    for g in ALL_GROUPS:
        if g not in groups or g == "kl":
            continue
        out += [(f"suites:{s.name}", g) for s in suites] if g == "suites" else [(g, g)]
    return out


def measure(
    model: Any,
    *,
    suites: Sequence[Suite] | None = None,
    split: SplitName = "eval",
    groups: Sequence[MeasureGroup] = ALL_GROUPS,
    max_pairs: int | None = None,
    window: int = 256,
    max_tokens: int | None = None,
    kl_windows: int = 16,
    on_measure: OnMeasure | None = None,
    label: str = "",
    cache_dir: Path | str | None = None,
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
        kl_windows: With ``"text"`` and ``"kl"``: keep the final residual streams of this many text
            windows (``kl_states``; the KL of :func:`evaluate` unembeds them instead of running the
            model again).
        on_measure: Called after each group with its label and seconds (also logged at INFO).
        label: Appended to each group's label (e.g. ``" (unedited)"``).
        cache_dir: Read the measurements from this directory when the same model and data were
            measured with these settings before, else measure and store them there (created if
            missing; keyed by weights, settings, data and measuring code:
            :func:`circuits.evaluation.cache.load_or_measure`). For the unedited model's baseline: an
            edited model has another fingerprint only if its edit is baked into the weights, so do not
            cache measurements taken under :func:`~circuits.editing.apply_edit`. ``on_measure`` is
            called only when measuring.

    Returns:
        The measurements (from the cache: equal to a fresh measurement with these arguments).

    Raises:
        ValueError: An unknown measure group.
        PairError, SuiteError: Bad suite data.
    """
    suites = list(suites) if suites is not None else shipped_suites(model)
    settings = Settings.of([s.name for s in suites], split, groups, max_pairs, window, max_tokens, prepend_bos=model.tokenization.prepend_bos,
                           kl_windows=kl_windows)
    if cache_dir is not None:
        return load_or_measure(model, cache_dir, settings, suites, lambda: _measure(model, settings, suites, on_measure, label))
    return _measure(model, settings, suites, on_measure, label)


def _measure(model: Any, settings: Settings, suites: list[Suite], on_measure: OnMeasure | None, label: str) -> Measurements:
    """:func:`measure` itself: take every group of ``settings`` now."""
    split, groups, max_pairs, window, max_tokens, kl_windows = (
        settings.split, settings.groups, settings.max_pairs, settings.window, settings.max_tokens, settings.kl_windows)
    by_name = {s.name: s for s in suites}
    kw: dict[str, Any] = {"gaps": {}, "gap_units": {}, "gap_kinds": {}} if "suites" in groups else {}
    todo = _groups_to_run(suites, groups)
    bar = tqdm(todo, desc="measuring" + label, unit="measure", leave=False, disable=None)
    for name, group in bar:
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        if group == "suites":
            s = by_name[name.removeprefix("suites:")]
            kw["gaps"][s.name], kw["gap_units"][s.name] = _suite_gaps(model, s, split, max_pairs)
            kw["gap_kinds"][s.name] = s.kind
        elif group == "stereotype":
            pairs = D.stereotype_pairs().pairs
            lp = E.continuation_logprobs(model, [""] * 2 * len(pairs), [p.stereotype for p in pairs] + [p.anti_stereotype for p in pairs]).numpy()
            kw["stereotype"] = lp[: len(pairs)] - lp[len(pairs) :]
        elif group == "toxicity":
            items = D.toxicity_continuations().items
            lp = E.continuation_logprobs(model, [i.prompt for i in items] * 2, [i.toxic for i in items] + [i.benign for i in items]).numpy()
            kw["toxicity"] = lp[: len(items)] - lp[len(items) :]
        elif group == "classification":
            kw["classification"], kw["labels"] = _classification(model)
        elif group == "multiple_choice":
            kw["mc_correct"] = _multiple_choice(model)
        elif group == "factual_qa":
            kw["qa_correct"] = _factual_qa(model)
        elif group == "text":
            keep = kl_windows if "kl" in groups else 0
            nll, acc, states = E.window_scores_and_states(model, M.text_windows(model, D.english_eval(), window=window, max_tokens=max_tokens), keep=keep)
            kw["nll"], kw["accuracy"] = nll.numpy(), acc.numpy()
            if keep:
                kw["kl_states"] = states.numpy()
        _report(name + label, time.perf_counter() - t0, on_measure)
    return Measurements(settings=settings, **kw)


def _report(name: str, seconds: float, on_measure: OnMeasure | None) -> None:
    log.info("measured %s in %.1f s", name, seconds)
    if on_measure is not None:
        on_measure(name, seconds)


@torch.no_grad()
def kl_from_states(model: Any, edits: Sequence[Edit], reference: torch.Tensor, edited: torch.Tensor) -> np.ndarray:
    """Per-window mean ``KL(p_unedited ‖ p_edited)`` (nats/token) from the two models' final residual streams.

    The distributions are made :data:`~circuits.evaluation.metrics.LOGIT_BYTES` at a time, so memory does
    not grow with the vocabulary times the batch; the edits are applied once, and only if one of them
    acts on the unembedding itself is each distribution made with its own unembedding.

    Args:
        model: The unedited model.
        edits: The edits (applied around each edited chunk, removed after).
        reference: ``[window, pos, d_model]`` :func:`circuits.model.final_residual` of the unedited model.
        edited: The same windows with the edits applied.

    Returns:
        ``Float[ndarray, "window"]``, ≥ 0 (up to rounding).
    """
    step = E.positions_per_chunk(model)
    n, pos, d = reference.shape
    ref, edit = reference.reshape(-1, d), edited.reshape(-1, d)
    w = M.read_weight(model, "unembed.weight")
    kl = []
    with apply_edit(model, *edits, check_fingerprint=False):
        # The usual case: the edits leave the unembedding alone, so both distributions are made under them.
        same = _unembedding_untouched(model, w)
        if same:
            for c in range(0, ref.shape[0], step):
                logp = M.unembed(model, ref[c : c + step].to(model.device)).float().log_softmax(-1)
                logq = M.unembed(model, edit[c : c + step].to(model.device)).float().log_softmax(-1)
                kl.append(kl_divergence(logp, logq).cpu())
    if not same:  # an edit acts on the unembedding: each distribution with its own
        for c in range(0, ref.shape[0], step):
            logp = M.unembed(model, ref[c : c + step].to(model.device)).float().log_softmax(-1)
            with apply_edit(model, *edits, check_fingerprint=False):
                logq = M.unembed(model, edit[c : c + step].to(model.device)).float().log_softmax(-1)
            kl.append(kl_divergence(logp, logq).cpu())
    return torch.cat(kl).reshape(n, pos).mean(-1).numpy() if kl else np.zeros(0)


def _unembedding_untouched(model: Any, unedited: torch.Tensor | None) -> bool:
    """Whether the applied edits leave the unembedding as it was: its weight unchanged and no hook on it."""
    hooked = any(name.startswith(("unembed", "ln_final")) for o in model.overlays for name, _ in o.hooks)
    now = M.read_weight(model, "unembed.weight")
    return not hooked and unedited is not None and now is not None and (now is unedited or torch.equal(now, unedited))


@torch.no_grad()
def neutral_kl(model: Any, edits: Sequence[Edit], windows: torch.Tensor, *, batch_size: int = 8, check_fingerprint: bool = True) -> np.ndarray:
    """Per-window mean ``KL(p_unedited ‖ p_edited)`` over next-token distributions (nats/token).

    The capability-preservation measure of edit papers (e.g. Meng et al. 2022's "neighbourhood"
    checks, and the KL term of our trained edits), on neutral text the edits were not built from: both
    models are run on each batch and compared with :func:`kl_from_states` (:func:`evaluate` reuses the
    residual streams of its text measure instead).

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
        ref = M.final_residual(model, toks)
        with apply_edit(model, *edits, check_fingerprint=False):
            edited = M.final_residual(model, toks)
        out.append(kl_from_states(model, edits, ref, edited))
    return np.concatenate(out) if out else np.zeros(0)


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
    on_measure: OnMeasure | None = None,
    other_suites: bool = True,
) -> EvalReport:
    """Measure harm reduced vs capability kept for edits (applied together, in order).

    Args:
        model: The unedited model the edits were made for.
        *edits: One or more edits.
        suite: The target behaviour (default: the suite recorded in the first edit). Every shipped suite
            is measured as well, so side effects on other behaviours show (see ``other_suites``).
        baseline: Measurements of the unedited model with the same settings (from :func:`measure`), to
            skip measuring it again when evaluating many edits.
        baseline_cache: Without ``baseline``, read the unedited model's measurements from this
            directory, or take and store them there (:func:`measure` with ``cache_dir``;
            keyed by weights, settings, data and measuring code). ``None``: measure every time.
        split: Suite split for harm (default ``"eval"``, held out from building).
        groups: Measure groups (default: all).
        max_pairs: Word pairs per template (``None``: all).
        window: Tokens per text window.
        max_tokens: Evaluation-text tokens to use (``None``: all).
        kl_windows: Text windows for the KL measure (their unedited residual streams are part of the
            baseline, so the KL runs neither model again).
        seed: Seed of the bootstrap and permutation resampling (same seed → same report).
        on_measure: Called after each measurement group with its label and seconds (see :func:`measure`).
        other_suites: Also measure every other shipped suite (default). ``False`` measures only the
            target's suite, for a quick look while trying edits; a ``baseline`` must then be measured with
            ``suites=[suite]``.

    Returns:
        The report (with the seconds of every group in ``timings``).

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
    suites = shipped_suites(model) if other_suites else [target]
    if target.name not in {s.name for s in suites}:
        suites.append(target)
    timings: dict[str, float] = {}

    def record(name: str, seconds: float) -> None:
        timings[name] = round(seconds, 2)
        if on_measure is not None:
            on_measure(name, seconds)

    kw: dict[str, Any] = dict(suites=suites, split=split, groups=groups, max_pairs=max_pairs, window=window, max_tokens=max_tokens, kl_windows=kl_windows)
    if baseline is not None:
        want = Settings.of([s.name for s in suites], split, groups, max_pairs, window, max_tokens, prepend_bos=model.tokenization.prepend_bos,
                           kl_windows=kl_windows)
        if baseline.settings != want:
            raise ValueError(f"the baseline was measured with other settings: {baseline.settings} vs {want}")
        before = baseline
    elif baseline_cache is not None:
        before = measure(model, on_measure=record, label=" (unedited)", cache_dir=baseline_cache, **kw)
    else:
        before = measure(model, on_measure=record, label=" (unedited)", **kw)
    with apply_edit(model, *edits, check_fingerprint=False):
        after = measure(model, on_measure=record, **kw)
    if "kl" in groups:
        t = time.perf_counter()
        if before.kl_states is not None and after.kl_states is not None:  # the text measure kept both models' streams
            kl = kl_from_states(model, edits, torch.from_numpy(before.kl_states), torch.from_numpy(after.kl_states))
        else:
            windows = M.text_windows(model, D.english_eval(), window=window, max_tokens=max_tokens)[:kl_windows]
            kl = neutral_kl(model, edits, windows, check_fingerprint=False)
        after = _with_kl(after, kl)
        _report("kl", time.perf_counter() - t, record)
    return EvalReport(
        edits=tuple(str(e) for e in edits),
        suite=target.name,
        split=split,
        measures=tuple(compare(before, after, seed=seed)),
        seconds=time.perf_counter() - t0,
        tokenization=model.tokenization.as_dict(),
        timings=timings,
    )


def _with_kl(m: Measurements, kl: np.ndarray) -> Measurements:
    return replace(m, kl=kl)
