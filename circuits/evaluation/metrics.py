"""Harm and capability measurements, each with its definition and source.

Model-level measurements (one value per item, so that paired tests and bootstrap CIs can be taken over
items):

* **Bias gap** (harm; :func:`bias_gaps`): for each counterfactual prompt pair, ``m(clean) - m(corrupted)``
  where ``m`` is the suite's metric, in its unit (a logit difference in logits, a log-probability
  difference in nats: the metric's declared ``info.unit``). For gender-occupation this is how much more
  `` she`` is preferred after a stereotypically female occupation than after a male one. The
  counterfactual-pair form follows Vig et al. 2020 ("Causal mediation analysis for interpreting neural
  NLP: the case of gender bias").
* **Continuation log-probability** (:func:`continuation_logprobs`): ``log P(continuation | prompt)``
  summed over the continuation's tokens (nats), teacher-forced. Used for stereotype preference
  (sentence log-probability of the stereotypical minus the anti-stereotypical sentence: CrowS-Pairs,
  Nangia et al. 2020, scored with a causal LM as in StereoSet, Nadeem et al. 2021), toxicity propensity
  (toxic minus benign continuation; the log-prob form of the propensity measures of Gehman et al. 2020,
  RealToxicityPrompts) and multiple-choice scoring (the ``acc`` of lm-evaluation-harness, Gao et al.).
* **Last-position label logits** (:func:`label_logits`): prompt-based classification (Brown et al. 2020).
* **Window NLL and next-token accuracy** (:func:`window_scores`): perplexity is ``exp`` of the mean
  next-token negative log-likelihood (nats/token) over equal-length windows of a text sample, each
  starting with BOS (Jelinek et al. 1977); next-token accuracy is the top-1 hit rate on the same tokens.

Classification measures (pure functions of predictions; hand-checkable):

* :func:`demographic_parity_difference` (Calders & Verwer 2010; Feldman et al. 2015).
* :func:`equalized_odds_difference` (Hardt et al. 2016, in fairlearn's form: the larger of the TPR
  and FPR gaps).
* :func:`expected_calibration_error` (Naeini et al. 2015; Guo et al. 2017).
* :func:`worst_group_accuracy` (Sagawa et al. 2020, groups = name group × true label).
* :func:`roc_auc` and :func:`worst_group_roc_auc` (the lowest within-group ROC-AUC; the measure of
  seed 002, AIFS, beside worst-group accuracy). AUC is the Mann-Whitney ``U`` of the positives' scores
  against the negatives' divided by ``n₊ n₋`` (Hanley & McNeil 1982), ties counted half.
* :func:`flip_rate` (counterfactual token fairness, Garg et al. 2019).

Speed and memory: nothing here holds the logits of a whole batch. Each forward keeps the final
residual stream (:func:`circuits.model.final_residual`, ``d_model`` numbers per position) and only the
positions a measure reads are unembedded, :data:`LOGIT_BYTES` at a time; items are batched by length;
continuations that choose among answers to one prompt can run the prompt once
(``share_prompts``); greedy answers are generated a batch at a time with the KV cache
(:func:`greedy_continuations`). Batched results equal one-at-a-time results to 1e-5 and the measures of
the code before this (4d86680) to 1e-6 (``tests/evaluation/test_batching.py``, ``test_equivalence.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuits import model as M
from circuits.data import english_eval
from circuits.metrics import Metric, call_metric, flip_rate  # noqa: F401 - flip_rate is one of this module's measures
from circuits.probing.pairs import Prepared

log = logging.getLogger(__name__)

#: Bytes of float32 logits made at once (a chunk of positions × the vocabulary): 16 MB is 85 positions
#: of SmolLM2's 49k-token vocabulary and 16 of Gemma 3's 262k (a log-softmax or KL over a chunk makes a
#: few more of these). No ``[batch, pos, d_vocab]`` tensor is made: the residual stream is kept
#: (``d_model`` per position) and only the positions a measure reads are unembedded, a chunk at a time
#: (:func:`circuits.model.final_residual`, :func:`circuits.model.unembed`). Measured: the evaluation then
#: peaks below the scan of the same model (``benchmarks/evaluation.py``).
LOGIT_BYTES = 16 * 2**20


def _length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Item indices sorted by length and cut into batches (so padding stays short)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def _right_padded(rows: Sequence[list[int]]) -> Int[Tensor, "batch pos"]:
    """Right-pad token lists with their own last token.

    Causal attention means a position never sees later ones, so logits at positions before the padding
    equal those of the unpadded sequence (tested); no attention mask is needed.
    """
    n = max(len(r) for r in rows)
    return torch.tensor([r + [r[-1]] * (n - len(r)) for r in rows])


def positions_per_chunk(model: Any) -> int:
    """How many positions' full-vocabulary logits fit in :data:`LOGIT_BYTES`."""
    return max(1, LOGIT_BYTES // (4 * M.shape_of(model).d_vocab))


def _logprobs_of(model: Any, h: Float[Tensor, "k d_model"], targets: Int[Tensor, " k"]) -> Float[Tensor, " k"]:
    """``log softmax(unembed(h))[target]`` per row, unembedding a chunk of rows at a time (nats)."""
    step, out = positions_per_chunk(model), []
    for s in range(0, h.shape[0], step):
        logp = M.unembed(model, h[s : s + step]).float().log_softmax(-1)
        out.append(logp.gather(-1, targets[s : s + step, None].to(logp.device))[:, 0].cpu())
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def bias_gaps(model: Any, data: Prepared) -> Float[Tensor, " pair"]:
    """Per-pair bias gap ``m(clean) - m(corrupted)`` (metric units), in pair order.

    One forward per length group and side; only the final positions the metric reads
    (``metric.info.positions``) are unembedded.

    Args:
        model: The model.
        data: Pairs tokenised with their metric (:func:`circuits.probing.pairs.prepare`).
    """
    out = torch.zeros(data.n_rows)
    last = data.metric.info.positions

    def scores(tokens: Tensor, idx: Tensor) -> Tensor:
        h = M.final_residual(model, tokens)
        h = h if last is None else h[:, -last:]
        rows = max(1, positions_per_chunk(model) // h.shape[1])  # unembed whole rows, LOGIT_BYTES at a time
        return torch.cat([call_metric(data.metric, M.unembed(model, h[s : s + rows]), idx[s : s + rows]).float().cpu()
                          for s in range(0, h.shape[0], rows)])

    for g in data.groups:
        idx = torch.tensor(g.indices)
        out[idx] = scores(g.clean, idx) - scores(g.corrupted, idx)
    return data.metric.to_pairs(out)


@torch.no_grad()
def continuation_logprobs(
    model: Any, prompts: Sequence[str], continuations: Sequence[str], *, batch_size: int = 32, share_prompts: bool = False
) -> Float[Tensor, " item"]:
    """``log P(continuation | prompt)`` in nats, summed over the continuation's tokens.

    The prompt is tokenized under the model's tokenization policy (:func:`circuits.model.tokens_of`),
    the continuation without special tokens, and the two id lists are concatenated (so the boundary
    never merges tokens); an empty prompt scores the continuation after the BOS token alone (a
    sentence's log-probability: the first token needs a context, whatever the policy). Items are batched
    by length, right-padded; only the positions that predict continuation tokens are unembedded,
    :data:`LOGIT_BYTES` at a time.

    With ``share_prompts``, continuations that share a prompt of at least :data:`MIN_SHARED_PREFIX`
    tokens (the options of a multiple-choice question, BBQ's three answers) are scored after one forward
    of the prompt, whose KV cache they continue (Hugging Face-backed models; :func:`circuits.model.final_residual_with_prefix`).
    That differs from the concatenated forward only by float32 rounding (about 1e-5 nats on a 50-nat
    log-probability), which matters only for exact ties: use it where the scores choose an answer, not
    where the log-probability itself is the measure.

    Args:
        model: A ``TransformerBridge``.
        prompts: Prompts (``""`` allowed).
        continuations: Non-empty continuations, aligned with ``prompts``.
        batch_size: Sequences (or shared prompts) per forward.
        share_prompts: Run each shared prompt once (see above).

    Returns:
        One log-probability per item (≤ 0).

    Raises:
        ValueError: Empty or misaligned inputs, an empty continuation, or an empty prompt for a model
            without BOS.
    """
    if not prompts or len(prompts) != len(continuations):
        raise ValueError(f"need aligned, non-empty prompts and continuations (got {len(prompts)} and {len(continuations)})")
    tok, bos = M.tokenizer_of(model), M.bos_token_id(model)
    seqs: list[tuple[list[int], list[int]]] = []
    prompt_ids: dict[str, list[int]] = {}
    for p, c in zip(prompts, continuations):
        if p:
            if p not in prompt_ids:
                prompt_ids[p] = M.tokens_of(model, p).tolist()
            pi = prompt_ids[p]
        elif bos is not None:
            pi = [bos]
        else:
            raise ValueError("an empty prompt needs a model with a BOS token")
        ci = tok.encode(c, add_special_tokens=False)
        if not ci:
            raise ValueError(f"continuation {c!r} has no tokens")
        seqs.append((pi, ci))
    out = torch.zeros(len(seqs))
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, (pi, _) in enumerate(seqs):
        by_prompt.setdefault(tuple(pi), []).append(i)
    shared = [items for p, items in by_prompt.items() if len(items) > 1 and len(p) >= MIN_SHARED_PREFIX] if share_prompts and model.is_hf else []
    alone = sorted(set(range(len(seqs))) - {i for items in shared for i in items})
    for chunk in _length_batches([len(seqs[i][0]) + len(seqs[i][1]) for i in alone], batch_size):
        chunk = [alone[i] for i in chunk]
        toks = _right_padded([seqs[i][0] + seqs[i][1] for i in chunk])
        h = M.final_residual(model, toks)
        rows, pos, spans = [], [], []
        for row, i in enumerate(chunk):
            start, end = len(seqs[i][0]), len(seqs[i][0]) + len(seqs[i][1])
            spans.append((len(pos), len(pos) + end - start))
            rows += [row] * (end - start)
            pos += range(start - 1, end - 1)
        r, q = torch.tensor(rows), torch.tensor(pos)
        lp = _logprobs_of(model, h[r, q], toks[r, q + 1])
        for i, (a, b) in zip(chunk, spans):
            out[i] = lp[a:b].sum()
    by_length: dict[int, list[list[int]]] = {}
    for items in shared:
        by_length.setdefault(len(seqs[items[0]][0]), []).append(items)
    for length in sorted(by_length):
        same = by_length[length]
        for s in range(0, len(same), batch_size):
            _shared_prefix_logprobs(model, same[s : s + batch_size], seqs, out)
    return out


#: Prompts at least this long that several continuations share are run once (their KV cache reused).
MIN_SHARED_PREFIX = 4


def _shared_prefix_logprobs(model: Any, groups: Sequence[list[int]], seqs: Sequence[tuple[list[int], list[int]]], out: Tensor) -> None:
    """Summed continuation log-probabilities of items sharing a prompt, each prompt run once (:func:`circuits.model.final_residual_with_prefix`).

    ``groups`` lists, per prompt (prompts of one token length), the items that continue it; the
    results are written into ``out``. The first continuation token is predicted by the prompt's last
    state, the others by the continuation's own states.
    """
    length = len(seqs[groups[0][0]][0])
    prefix = torch.tensor([seqs[g[0]][0] for g in groups])
    items = [i for g in groups for i in g]
    owner = torch.tensor([k for k, g in enumerate(groups) for _ in g])
    inputs = [seqs[i][1][:-1] or seqs[i][1][:1] for i in items]  # the tokens whose states predict the rest
    h_prefix, h_cont = M.final_residual_with_prefix(model, prefix, _right_padded(inputs), owner)
    states, targets, spans = [], [], []
    for row, i in enumerate(items):
        cont = seqs[i][1]
        spans.append((len(targets), len(targets) + len(cont)))
        states.append(h_prefix[owner[row], length - 1][None])
        if len(cont) > 1:
            states.append(h_cont[row, : len(cont) - 1])
        targets += cont
    lp = _logprobs_of(model, torch.cat(states), torch.tensor(targets))
    for i, (a, b) in zip(items, spans):
        out[i] = lp[a:b].sum()


@torch.no_grad()
def label_logits(model: Any, prompts: Sequence[str], token_ids: Sequence[int], *, batch_size: int = 64) -> Float[Tensor, "item label"]:
    """Last-position logits of the given label tokens for each prompt (prompt-based classification).

    Raises:
        ValueError: No prompts or no label tokens.
    """
    if not prompts or not token_ids:
        raise ValueError("need prompts and label tokens")
    rows = [M.tokens_of(model, p).tolist() for p in prompts]
    out = torch.zeros(len(prompts), len(token_ids))
    step = positions_per_chunk(model)
    for chunk in _length_batches([len(r) for r in rows], batch_size):
        h = M.final_residual(model, _right_padded([rows[i] for i in chunk]))
        last = h[torch.arange(len(chunk)), torch.tensor([len(rows[i]) - 1 for i in chunk])]
        for s in range(0, len(chunk), step):
            out[torch.tensor(chunk[s : s + step])] = M.unembed(model, last[s : s + step])[:, list(token_ids)].float().cpu()
    return out


@torch.no_grad()
def window_scores_and_states(
    model: Any, windows: Int[Tensor, "window pos"], *, keep: int = 0, batch_size: int = 8
) -> tuple[Float[Tensor, " window"], Float[Tensor, " window"], Float[Tensor, "kept pos d_model"]]:
    """:func:`window_scores`, also returning the final residual streams of the first ``keep`` windows.

    The kept states are what :func:`circuits.evaluation.run.kl_from_states` unembeds to compare two
    model states without running either again (the KL to the unedited model on the same text).

    Returns:
        ``(nll, accuracy, states)``; ``states`` is ``[min(keep, windows), pos, d_model]`` (float32, CPU).
    """
    step, d = positions_per_chunk(model), M.shape_of(model).d_model
    nll, acc, states = [], [], []
    for s in range(0, windows.shape[0], batch_size):
        toks = windows[s : s + batch_size]
        full = M.final_residual(model, toks)
        if s < keep:
            states.append(full[: keep - s].float().cpu())
        h = full[:, :-1].reshape(-1, d)
        target = toks[:, 1:].reshape(-1).to(h.device)
        ce, hit = [], []
        for c in range(0, h.shape[0], step):
            logits = M.unembed(model, h[c : c + step]).float()
            ce.append(F.cross_entropy(logits, target[c : c + step], reduction="none").cpu())
            hit.append((logits.argmax(-1) == target[c : c + step]).float().cpu())
        nll.append(torch.cat(ce).reshape(toks.shape[0], -1).mean(-1))
        acc.append(torch.cat(hit).reshape(toks.shape[0], -1).mean(-1))
    kept = torch.cat(states) if states else torch.zeros(0, windows.shape[1], d)
    return torch.cat(nll), torch.cat(acc), kept


def window_scores(model: Any, windows: Int[Tensor, "window pos"], *, batch_size: int = 8) -> tuple[Float[Tensor, " window"], Float[Tensor, " window"]]:
    """Mean next-token NLL (nats/token) and top-1 next-token accuracy of each window.

    Every token after the first is predicted from its prefix (the first is BOS when windows come from
    :func:`circuits.model.text_windows`). The logits are made :data:`LOGIT_BYTES` at a time.

    Returns:
        ``(nll, accuracy)``, one value per window.
    """
    nll, acc, _ = window_scores_and_states(model, windows, batch_size=batch_size)
    return nll, acc


@torch.no_grad()
def greedy_continuations(model: Any, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 32) -> list[str]:
    """The greedy continuation (text after the prompt, special tokens dropped) of each prompt, with every applied edit.

    Prompts are sorted by length and generated ``batch_size`` at a time, left-padded with an attention mask, through Hugging Face's KV-cached
    ``generate`` (:func:`circuits.model.generate_ids`); each continuation equals the one generated for
    its prompt alone (tested). Where generation cannot use the KV cache (a TransformerLens-native model,
    or an edit without a Hugging Face placement), prompts of one length are batched together instead.

    Args:
        model: A model with a tokenizer.
        prompts: The prompts.
        max_new_tokens: Tokens to generate per prompt (greedy; stops at the end-of-text token).
        batch_size: Prompts per batch.

    Returns:
        One continuation per prompt, in order.
    """
    tok = M.tokenizer_of(model)
    ids = [M.tokens_of(model, p).tolist() for p in prompts]
    out: list[str] = [""] * len(ids)
    pad = tok.eos_token_id if tok.eos_token_id is not None else 0
    try:
        for chunk in _length_batches([len(t) for t in ids], batch_size):
            n = max(len(ids[i]) for i in chunk)
            toks = torch.tensor([[pad] * (n - len(ids[i])) + ids[i] for i in chunk])
            mask = torch.tensor([[0] * (n - len(ids[i])) + [1] * len(ids[i]) for i in chunk])
            full = M.generate_ids(model, toks, max_new_tokens=max_new_tokens, attention_mask=mask)
            for r, i in enumerate(chunk):
                out[i] = tok.decode(full[r, n:].tolist(), skip_special_tokens=True)
        return out
    except M.PaddingUnsupported as why:
        log.info("generating prompts of one length at a time: %s", why)
    by_len: dict[int, list[int]] = {}
    for i, t in enumerate(ids):
        by_len.setdefault(len(t), []).append(i)
    for n, rows in by_len.items():
        full = M.generate_ids(model, torch.tensor([ids[i] for i in rows]), max_new_tokens=max_new_tokens)
        for r, i in enumerate(rows):
            out[i] = tok.decode(full[r, n:].tolist(), skip_special_tokens=True)
    return out


def perplexity(model: Any, text: str | None = None, *, window: int = 256) -> float:
    """Perplexity (``exp`` mean NLL over equal windows) of ``text`` (default: the shipped evaluation text)."""
    windows = M.text_windows(model, english_eval() if text is None else text, window=window)
    return math.exp(float(window_scores(model, windows)[0].mean()))


def _rate(pred: np.ndarray, mask: np.ndarray) -> float:
    return float(pred[mask].mean()) if mask.any() else float("nan")


def demographic_parity_difference(pred: Bool[np.ndarray, " item"], group: Bool[np.ndarray, " item"]) -> float:
    """``|P(ŷ=1 | group) - P(ŷ=1 | not group)|`` (0 = parity; Calders & Verwer 2010).

    Args:
        pred: Positive predictions.
        group: Membership of group A (the rest is group B).
    """
    pred, group = np.asarray(pred, bool), np.asarray(group, bool)
    return abs(_rate(pred, group) - _rate(pred, ~group))


def equalized_odds_difference(pred: Bool[np.ndarray, " item"], label: Bool[np.ndarray, " item"], group: Bool[np.ndarray, " item"]) -> float:
    """``max(|TPR_A - TPR_B|, |FPR_A - FPR_B|)`` (0 = equalized odds; Hardt et al. 2016, fairlearn's form)."""
    pred, label, group = (np.asarray(x, bool) for x in (pred, label, group))
    tpr = abs(_rate(pred, group & label) - _rate(pred, ~group & label))
    fpr = abs(_rate(pred, group & ~label) - _rate(pred, ~group & ~label))
    return float(max(tpr, fpr))


def expected_calibration_error(prob: Float[np.ndarray, " item"], label: Bool[np.ndarray, " item"], *, bins: int = 10) -> float:
    """Expected calibration error of binary probabilities (Naeini et al. 2015; Guo et al. 2017).

    Confidence is ``max(p, 1 - p)`` for the predicted class; items fall into ``bins`` equal-width
    confidence bins on [0.5, 1]; ECE = ``Σ_b (n_b / N) |accuracy_b - mean confidence_b|``.

    Args:
        prob: ``P(label = 1)`` per item.
        label: True labels.
        bins: Number of bins.
    """
    prob, label = np.asarray(prob, np.float64), np.asarray(label, bool)
    pred = prob >= 0.5
    conf = np.where(pred, prob, 1.0 - prob)
    correct = pred == label
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def worst_group_accuracy(pred: Bool[np.ndarray, " item"], label: Bool[np.ndarray, " item"], group: Bool[np.ndarray, " item"]) -> float:
    """Lowest accuracy over the groups (name group × true label) that have items (Sagawa et al. 2020)."""
    pred, label, group = (np.asarray(x, bool) for x in (pred, label, group))
    accs = [float((pred[m] == label[m]).mean()) for g in (True, False) for y in (True, False) if (m := (group == g) & (label == y)).any()]
    return min(accs)


def roc_auc(score: Float[np.ndarray, " item"], label: Bool[np.ndarray, " item"]) -> float:
    """Area under the ROC curve of ``score`` for ``label`` (0.5 = chance; ``scipy.stats.mannwhitneyu``).

    Raises:
        ValueError: Only one class present (the AUC is undefined).
    """
    score, label = np.asarray(score, np.float64), np.asarray(label, bool)
    if label.all() or not label.any():
        raise ValueError("ROC-AUC needs both positive and negative items")
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(score[label], score[~label], alternative="two-sided").statistic
    return float(u / (label.sum() * (~label).sum()))


def worst_group_roc_auc(score: Float[np.ndarray, " item"], label: Bool[np.ndarray, " item"], group: Bool[np.ndarray, " item"]) -> float:
    """Lowest ROC-AUC over the groups (e.g. name groups) that hold both labels (seed 002's measure).

    Raises:
        ValueError: No group holds both labels.
    """
    score, label, group = np.asarray(score, np.float64), np.asarray(label, bool), np.asarray(group, bool)
    aucs = [roc_auc(score[m], label[m]) for g in (True, False) if (m := group == g).any() and label[m].any() and not label[m].all()]
    if not aucs:
        raise ValueError("no group holds both labels")
    return min(aucs)
