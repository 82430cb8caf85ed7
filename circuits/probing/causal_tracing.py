"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", ROME).

1. **Clean run** on a prompt (e.g. "The Eiffel Tower is located in the city of" → " Paris").
2. **Corrupted run**: Gaussian noise ``N(0, ν²)``, ``ν = 3σ`` (σ: std of the token embeddings), is
   added to the embeddings of the subject tokens; ``n_samples`` seeded noise draws.
3. **Restoration**: in the corrupted run, one hidden state at (layer, token) is set back to its clean
   value: the residual stream after the layer (``resid``), or the MLP / attention output of a window of
   ``window`` layers centred on it (``mlp`` / ``attn``).

The probability of the target token after restoring, averaged over noise draws, minus the corrupted
probability, is the *indirect effect* of that state; the grid over layers × tokens is ROME's Figure 1.
Any metric can replace the target probability (:mod:`circuits.metrics`: a teacher-forced answer
log-probability, a logit difference, ...); its unit is then the grid's. :func:`trace_facts` averages
the indirect effect over many facts in ROME's six token categories (first / middle / last subject
token, first subsequent token, further tokens, last token), as ROME's Figure 1 averages over 1000
known facts.
**Severed paths** (ROME Figure 3): restore the residual state while freezing the MLP outputs at that
token, in all later layers, at their corrupted values, to see how much of the effect goes through
MLPs.

Batching as in ROME's ``trace_with_patch`` (noised copies packed along the batch), with one more
step: the restorations are grouped by the first layer they touch, and each group runs only the
blocks from that layer on, starting from the cached noised residual. The noise draws are shared by
every cell (common random numbers), so cells differ only by what is restored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from circuits import model as M
from circuits.interventions import rome_noise_std
from circuits.metrics import Metric, TokenProb, call_metric, positions_read, vocab_read
from circuits.sites import EMBED_HOOK, hook_name

TraceKind = Literal["resid", "mlp", "attn"]
_HOOK_KIND = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}


@dataclass(frozen=True)
class TraceResult:
    """A causal-tracing grid.

    Attributes:
        kind: What was restored: ``resid`` (block output), ``mlp`` or ``attn`` outputs.
        window: Number of consecutive layers restored per cell (1 for ``resid``).
        severed: Whether MLP paths were severed (frozen at corrupted values).
        probs: The metric (by default the target probability) after each restoration, ``[layer, pos]``
            (mean over noise draws).
        clean_prob: The metric on the clean run.
        corrupted_prob: The metric on the corrupted run (mean over draws).
        tokens: The prompt's tokens as strings.
        subject: Subject token positions that were noised.
        noise_std: The noise standard deviation used.
    """

    kind: TraceKind
    window: int
    severed: bool
    probs: Float[Tensor, "layer pos"]
    clean_prob: float
    corrupted_prob: float
    tokens: list[str]
    subject: list[int]
    noise_std: float
    metric: str = "p(target)"

    @property
    def indirect_effect(self) -> Float[Tensor, "layer pos"]:
        """``probs - corrupted_prob`` (the metric's units)."""
        return self.probs - self.corrupted_prob


def _restored_layers(layer: int, window: int, n_layers: int) -> range:
    lo = max(0, layer - window // 2)
    return range(lo, min(n_layers, lo + window))


@torch.no_grad()
def trace_tokens(
    model: Any,
    tokens: Int[Tensor, "1 pos"],
    target: int | None,
    subject: list[int],
    *,
    metric: Metric | None = None,
    kind: TraceKind = "resid",
    window: int = 1,
    n_samples: int = 10,
    noise_std: float | None = None,
    seed: int = 0,
    sever_mlp: bool = False,
    batched: bool = True,
    progress: bool = True,
) -> TraceResult:
    """Causal tracing on one tokenised prompt (see module docstring).

    Args:
        model: A ``TransformerBridge``.
        tokens: One prompt.
        target: Target token id (its probability at the last position is the metric).
        subject: Positions whose embeddings are noised.
        kind: ``"resid"``, ``"mlp"`` or ``"attn"``.
        window: Layers restored per cell for ``mlp``/``attn`` (ROME uses 10); must be 1 for ``resid``.
        n_samples: Noise draws.
        noise_std: Noise std; default ROME's 3σ of the embedding matrix.
        seed: Noise seed.
        sever_mlp: Freeze later-layer MLP outputs at the restored token to their corrupted values.
        batched: Pack every token's restoration of one layer in one forward that starts at that layer
            (``False``: one full forward per cell, the baseline the benchmark compares against).
        progress: Progress bar.

    Returns:
        The grid.

    Raises:
        ValueError: Empty subject, out-of-range positions, ``window < 1``, or ``window > 1`` with ``resid``.
    """
    n_layers = M.shape_of(model).n_layers
    n_pos = tokens.shape[-1]
    if tokens.ndim != 2 or tokens.shape[0] != 1:
        raise ValueError(f"trace one prompt at a time, got tokens of shape {tuple(tokens.shape)}")
    if not subject or not all(0 <= p < n_pos for p in subject):
        raise ValueError(f"subject positions {subject} must be non-empty and within 0..{n_pos - 1}")
    if window < 1 or (kind == "resid" and window != 1):
        raise ValueError(f"window must be >= 1 (and 1 for resid), got {window}")
    if metric is None:
        if target is None:
            raise ValueError("give a target token or a metric")
        metric = TokenProb(target)
    last, vocab = positions_read(metric), vocab_read(metric)

    def score(logits: Tensor) -> Tensor:
        return call_metric(metric, logits, torch.zeros(logits.shape[0], dtype=torch.long)).float().cpu()

    std = rome_noise_std(M.embedding_matrix(model)) if noise_std is None else noise_std
    g = torch.Generator().manual_seed(seed)
    d_model = M.shape_of(model).d_model
    noise = std * torch.randn(n_samples, len(subject), d_model, generator=g)
    subj = torch.tensor(subject)

    names = [hook_name(_HOOK_KIND[kind], layer) for layer in range(n_layers)]
    mlp_names = [hook_name("mlp_out", layer) for layer in range(n_layers)]
    clean_logits, clean_cache = M.run_with_cache(model, tokens, names)
    clean_prob = float(score(clean_logits)[0])

    def noise_hook(reps: int) -> M.HookFn:
        def hook(e: Tensor, hook: Any) -> Tensor:
            e = e.clone()
            e[:, subj] = e[:, subj] + noise.repeat(reps, 1, 1).to(e.dtype)
            return e

        return hook

    resid_names = [hook_name("resid_pre", layer) for layer in range(n_layers)]
    corr_logits, corr_cache = M.run_with_cache(
        model, tokens.repeat(n_samples, 1), [*(mlp_names if sever_mlp else []), *resid_names], [(EMBED_HOOK, noise_hook(1))]
    )
    corrupted_prob = float(score(corr_logits).mean())

    def cells_hooks(cells: list[tuple[int, int]]) -> list[tuple[str, M.HookFn]]:
        """Hooks restoring cell k = (layer, pos) in rows [k*n, (k+1)*n)."""
        per_hook: dict[str, list[tuple[int, int]]] = {}
        sever: dict[str, list[tuple[int, int]]] = {}
        for k, (layer, pos) in enumerate(cells):
            for restored in _restored_layers(layer, window, n_layers):
                per_hook.setdefault(names[restored], []).append((k, pos))
            if sever_mlp:
                for later in range(layer + 1, n_layers):
                    sever.setdefault(mlp_names[later], []).append((k, pos))

        def restore(name: str, targets: list[tuple[int, int]]) -> M.HookFn:
            def hook(act: Tensor, hook: Any) -> Tensor:
                act = act.clone()
                for k, pos in targets:
                    act[k * n_samples : (k + 1) * n_samples, pos] = clean_cache[name][0, pos]
                return act

            return hook

        def freeze(name: str, targets: list[tuple[int, int]]) -> M.HookFn:
            def hook(act: Tensor, hook: Any) -> Tensor:
                act = act.clone()
                for k, pos in targets:
                    act[k * n_samples : (k + 1) * n_samples, pos] = corr_cache[name][:, pos]
                return act

            return hook

        hooks = [] if batched else [(EMBED_HOOK, noise_hook(len(cells)))]
        hooks += [(n, restore(n, t)) for n, t in per_hook.items()]
        hooks += [(n, freeze(n, t)) for n, t in sever.items()]
        return hooks

    probs = torch.zeros(n_layers, n_pos)
    if batched:
        # One forward per first-restored layer s, holding every token's restoration, started from the
        # noised residual entering block s: blocks before s are never recomputed. Tokens before the
        # first subject token have identical clean and noised states (causal attention), so restoring
        # them changes nothing: those cells are the corrupted probability, without a forward.
        first = min(subject)
        probs[:, :first] = corrupted_prob
        by_start: dict[int, list[tuple[int, int]]] = {}
        for layer in range(n_layers):
            s0 = _restored_layers(layer, window, n_layers).start
            by_start.setdefault(s0, []).extend((layer, pos) for pos in range(first, n_pos))
        batches = [by_start[s0] for s0 in sorted(by_start)]
    else:
        batches = [[(layer, pos)] for pos in range(n_pos) for layer in range(n_layers)]
    for cells in tqdm(batches, desc=f"causal tracing ({kind})", disable=not progress, leave=False):
        if batched:
            s0 = _restored_layers(cells[0][0], window, n_layers).start
            resid = corr_cache[resid_names[s0]].repeat(len(cells), 1, 1)
            logits = M.run_from_layer(model, resid, s0, cells_hooks(cells), last=last, vocab=vocab)  # only what the metric reads
        else:
            logits = M.run(model, tokens.repeat(n_samples * len(cells), 1), cells_hooks(cells))
        p = score(logits).view(len(cells), n_samples).mean(1)
        for (layer, pos), value in zip(cells, p):
            probs[layer, pos] = value
    tok = M.tokenizer_of(model)
    names_str = [tok.decode([int(t)]) for t in tokens[0]] if tok is not None else [str(int(t)) for t in tokens[0]]
    what = "p(target)" if isinstance(metric, TokenProb) else type(metric).__name__
    return TraceResult(kind, window, sever_mlp, probs, clean_prob, corrupted_prob, names_str, list(subject), std, what)


def causal_trace(
    model: Any,
    prompt: str,
    target: str,
    subject: str,
    *,
    kind: TraceKind = "resid",
    window: int = 1,
    n_samples: int = 10,
    noise_std: float | None = None,
    seed: int = 0,
    sever_mlp: bool = False,
    progress: bool = True,
) -> TraceResult:
    """Causal tracing on a text prompt with a named subject (ROME).

    Args:
        model: A ``TransformerBridge`` with a tokenizer.
        prompt: e.g. ``"The Eiffel Tower is located in the city of"``.
        target: The expected continuation; its first token is scored (e.g. ``" Paris"``).
        subject: Substring of the prompt whose tokens are noised (e.g. ``"The Eiffel Tower"``).
        kind, window, n_samples, noise_std, seed, sever_mlp, progress: As in :func:`trace_tokens`.

    Returns:
        The grid.

    Raises:
        ValueError: The subject is not in the prompt, or the target is empty.
    """
    ids = M.tokenizer_of(model).encode(target, add_special_tokens=False)
    if not ids:
        raise ValueError("empty target")
    tokens = M.tokens_of(model, prompt)[None]
    return trace_tokens(
        model, tokens, int(ids[0]), M.subject_positions(model, prompt, subject), kind=kind, window=window,
        n_samples=n_samples, noise_std=noise_std, seed=seed, sever_mlp=sever_mlp, progress=progress,
    )


#: ROME's token categories for averaging over facts (Meng et al. 2022, Figure 1).
CATEGORIES = ("first subject token", "middle subject tokens", "last subject token", "first subsequent token", "further tokens", "last token")


def _category(pos: int, subject: list[int], n_pos: int) -> int | None:
    first, last = min(subject), max(subject)
    if pos == n_pos - 1:
        return 5
    if pos == first:
        return 0
    if pos == last:
        return 2
    if first < pos < last:
        return 1
    if pos == last + 1:
        return 3
    if pos > last + 1:
        return 4
    return None  # before the subject: restoring changes nothing


def trace_facts(
    model: Any, facts: list[dict[str, str]], *, kind: TraceKind = "resid", window: int = 1, n_samples: int = 10, seed: int = 0,
    noise_std: float | None = None, progress: bool = True,
) -> TraceResult:
    """Causal tracing averaged over facts in ROME's six token categories (Meng et al. 2022, Figure 1).

    Each fact (``prompt``, ``subject``, ``answer``) is traced on its own (:func:`causal_trace`); the
    indirect effect of each (layer, token) is averaged within the token's category, then over facts.
    The noise level is fixed once from the embeddings, as ROME does.

    Returns:
        A grid ``[layer, 6]``: ``probs`` = mean corrupted probability + mean indirect effect, so that
        ``indirect_effect`` is the average indirect effect; ``clean_prob``/``corrupted_prob`` averaged.

    Raises:
        ValueError: No facts.
    """
    if not facts:
        raise ValueError("no facts to trace")
    std = rome_noise_std(M.embedding_matrix(model)) if noise_std is None else noise_std
    n_layers = M.shape_of(model).n_layers
    total = torch.zeros(n_layers, len(CATEGORIES))
    count = torch.zeros(len(CATEGORIES))
    clean = corrupted = 0.0
    for f in tqdm(facts, desc=f"tracing {len(facts)} facts ({kind})", disable=not progress, leave=False):
        r = causal_trace(model, f["prompt"], f["answer"], f["subject"], kind=kind, window=window, n_samples=n_samples, noise_std=std, seed=seed, progress=False)
        ie = r.indirect_effect
        sums = torch.zeros(n_layers, len(CATEGORIES))
        seen = torch.zeros(len(CATEGORIES))
        for pos in range(len(r.tokens)):
            c = _category(pos, r.subject, len(r.tokens))
            if c is not None:
                sums[:, c] += ie[:, pos]
                seen[c] += 1
        present = seen > 0
        total[:, present] += sums[:, present] / seen[present]
        count += present.float()
        clean += r.clean_prob
        corrupted += r.corrupted_prob
    n = len(facts)
    mean_ie = total / count.clamp_min(1)
    return TraceResult(kind, window, False, mean_ie + corrupted / n, clean / n, corrupted / n, list(CATEGORIES), [0, 1, 2], std, "p(target)")
