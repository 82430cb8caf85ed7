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

from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from circuits import model as M
from circuits.interventions import GaussianNoise, Swap, apply_at, rome_noise_std
from circuits.metrics import MetricLike, TokenProb, as_metric, call_metric
from circuits.model import HookedLM
from circuits.probing.effects import Effects, Method
from circuits.sites import EMBED_HOOK, AttnRef, Component, MlpRef, ResidRef, hook_name

TraceKind = Literal["resid", "mlp", "attn"]
_HOOK_KIND = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}


def trace_cell(kind: TraceKind, layer: int, pos: int) -> Component:
    """The component a grid cell restores: ``L3RESID_POST@4``, ``L3MLP@4`` (window centred at 3) or ``L3ATTN@4``."""
    if kind == "resid":
        return ResidRef(layer, pos, site="resid_post")
    return MlpRef(layer, pos) if kind == "mlp" else AttnRef(layer, pos)


def trace_grid(effects: Effects, *, restored: bool = True) -> Float[Tensor, "layer pos"]:
    """A causal trace as ROME's ``[layer, token]`` grid.

    Args:
        effects: From :func:`trace_tokens`, :func:`causal_trace` or :func:`trace_facts`.
        restored: The metric after each restoration (``patched``, ROME's Figure 1); ``False``: the
            indirect effect (restored − corrupted).

    Returns:
        The grid (cells not traced, before the first subject token, hold the corrupted run's value,
        or 0 for the indirect effect).

    Raises:
        ValueError: Effects that are not a causal trace of one prompt (or one average).
    """
    if effects.method.name != "causal_tracing" or effects.n_prompts != 1 or effects.patched is None:
        raise ValueError("trace_grid needs the effects of one causal trace (trace_tokens / causal_trace / trace_facts)")
    values = effects.patched[:, 0] if restored else effects.effects[:, 0]
    layers = [c.layer for c in effects.components]  # type: ignore[attr-defined]
    positions = [c.pos for c in effects.components]  # type: ignore[attr-defined]
    out = torch.zeros(max(layers) + 1, max(positions) + 1)
    out[torch.tensor(layers), torch.tensor(positions)] = values
    return out


def trace_kind(effects: Effects) -> TraceKind:
    """What a trace restored: ``resid``, ``mlp`` or ``attn`` (from its cells).

    Raises:
        ValueError: Not a causal trace.
    """
    first = effects.components[0] if effects.components else None
    for kind, cls in (("resid", ResidRef), ("mlp", MlpRef), ("attn", AttnRef)):
        if isinstance(first, cls) and effects.method.name == "causal_tracing":
            return kind  # type: ignore[return-value]
    raise ValueError("not a causal trace")


def _restored_layers(layer: int, window: int, n_layers: int) -> range:
    lo = max(0, layer - window // 2)
    return range(lo, min(n_layers, lo + window))


@torch.no_grad()
def trace_tokens(
    model: HookedLM,
    tokens: Int[Tensor, "1 pos"],
    target: int | None,
    subject: list[int],
    *,
    metric: MetricLike | None = None,
    kind: TraceKind = "resid",
    window: int = 1,
    n_samples: int = 10,
    noise_std: float | None = None,
    seed: int = 0,
    sever_mlp: bool = False,
    batched: bool = True,
    progress: bool = True,
) -> Effects:
    """Causal tracing on one tokenised prompt (see module docstring).

    The corruption is :class:`~circuits.interventions.GaussianNoise` on the subject tokens' embeddings
    (``n_samples`` draws from one seeded generator, shared by every cell); a restoration is a
    :class:`~circuits.interventions.Swap` of the clean activation into the noised run at one (layer,
    token), and severing swaps the noised run's own MLP outputs back in at later layers.

    Args:
        model: A ``TransformerBridge``.
        tokens: One prompt.
        target: Target token id (its probability at the last position is the metric).
        subject: Positions whose embeddings are noised.
        metric: Any metric instead of the target probability (:mod:`circuits.metrics`).
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
        :class:`Effects` over the grid's cells (:func:`trace_cell`, layer-major), one prompt:
        ``patched`` the metric after each restoration (mean over draws), ``effects`` the indirect
        effect (restored − corrupted), ``clean_metric`` / ``corrupted_metric`` the two runs; unit the
        metric's. :func:`trace_grid` gives ROME's ``[layer, token]`` grid.

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
    metric = as_metric(metric)
    last, vocab = metric.info.positions, metric.info.vocab

    def score(logits: Tensor) -> Tensor:
        return call_metric(metric, logits, torch.zeros(logits.shape[0], dtype=torch.long)).float().cpu()

    std = rome_noise_std(M.embedding_matrix(model)) if noise_std is None else noise_std
    subj = torch.tensor(subject)
    names = [hook_name(_HOOK_KIND[kind], layer) for layer in range(n_layers)]
    mlp_names = [hook_name("mlp_out", layer) for layer in range(n_layers)]
    clean_logits, clean_cache = M.run_with_cache(model, tokens, names)
    clean_prob = float(score(clean_logits)[0])

    # The corrupted run: n_samples noised copies of the subject embeddings, drawn once.
    noised_subject: list[Tensor] = []

    def noise_hook(e: Tensor, hook: Any) -> Tensor:
        out = apply_at(GaussianNoise(std), e, (subj,), None, torch.Generator().manual_seed(seed))
        noised_subject.append(out[:, subj])
        return out

    resid_names = [hook_name("resid_pre", layer) for layer in range(n_layers)]
    corr_logits, corr_cache = M.run_with_cache(
        model, tokens.repeat(n_samples, 1), [*(mlp_names if sever_mlp else []), *resid_names], [(EMBED_HOOK, noise_hook)]
    )
    corrupted_prob = float(score(corr_logits).mean())

    def same_noise(reps: int) -> M.HookFn:
        """Every copy of the unbatched baseline gets the corrupted run's noised subject embeddings."""
        def hook(e: Tensor, hook: Any) -> Tensor:
            return apply_at(Swap(), e, (subj,), noised_subject[0].repeat(reps, 1, 1).to(e.dtype), None)

        return hook

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

        def swap_in(source: dict[str, Tensor], name: str, targets: list[tuple[int, int]]) -> M.HookFn:
            def hook(act: Tensor, hook: Any) -> Tensor:
                act = act.clone()
                for k, pos in targets:
                    rows = slice(k * n_samples, (k + 1) * n_samples)
                    act[rows, pos] = Swap()(act[rows, pos], source[name][:, pos].expand_as(act[rows, pos]), None)
                return act

            return hook

        hooks = [] if batched else [(EMBED_HOOK, same_noise(len(cells)))]
        hooks += [(n, swap_in(clean_cache, n, t)) for n, t in per_hook.items()]  # restore: the clean run's value
        hooks += [(n, swap_in(corr_cache, n, t)) for n, t in sever.items()]  # sever: the noised run's own value
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
    cells = tuple(trace_cell(kind, layer, pos) for layer in range(n_layers) for pos in range(n_pos))
    restored = probs.reshape(-1, 1)
    method = Method(
        "causal_tracing", intervention="noise", direction="denoising", metric=metric.info.describe(), seeds=(seed,), noise_std=std,
        window=window, severed=sever_mlp, positions="subject",
    )
    return Effects(
        cells, restored - corrupted_prob, metric.info.unit, method, clean_metric=torch.tensor([clean_prob]),
        corrupted_metric=torch.tensor([corrupted_prob]), patched=restored,
    )


def causal_trace(
    model: HookedLM,
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
) -> Effects:
    """Causal tracing on a text prompt with a named subject (ROME).

    Args:
        model: A ``TransformerBridge`` with a tokenizer.
        prompt: e.g. ``"The Eiffel Tower is located in the city of"``.
        target: The expected continuation; its first token is scored (e.g. ``" Paris"``).
        subject: Substring of the prompt whose tokens are noised (e.g. ``"The Eiffel Tower"``;
            :func:`circuits.model.subject_positions` gives its positions).
        kind: ``"resid"``, ``"mlp"`` or ``"attn"`` (as in :func:`trace_tokens`).
        window: Layers restored per cell for ``mlp``/``attn`` (ROME uses 10); must be 1 for ``resid``.
        n_samples: Noise draws.
        noise_std: Noise std; default ROME's 3σ of the embedding matrix.
        seed: Noise seed.
        sever_mlp: Freeze later-layer MLP outputs at the restored token to their corrupted values.
        progress: Progress bar.

    Returns:
        The trace (:func:`trace_tokens`); :func:`trace_grid` gives the grid.

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
    model: HookedLM, facts: list[dict[str, str]], *, kind: TraceKind = "resid", window: int = 1, n_samples: int = 10, seed: int = 0,
    noise_std: float | None = None, progress: bool = True,
) -> Effects:
    """Causal tracing averaged over facts in ROME's six token categories (Meng et al. 2022, Figure 1).

    Each fact (``prompt``, ``subject``, ``answer``) is traced on its own (:func:`causal_trace`); the
    indirect effect of each (layer, token) is averaged within the token's category, then over facts.
    The noise level is fixed once from the embeddings, as ROME does.

    Returns:
        :class:`Effects` over ``[layer, category]`` cells (a cell's position is the index into
        :data:`CATEGORIES`), one column: ``effects`` the average indirect effect, ``patched`` the mean
        corrupted metric plus it, ``clean_metric`` / ``corrupted_metric`` averaged over facts.

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
    last: Effects | None = None
    for f in tqdm(facts, desc=f"tracing {len(facts)} facts ({kind})", disable=not progress, leave=False):
        r = causal_trace(model, f["prompt"], f["answer"], f["subject"], kind=kind, window=window, n_samples=n_samples, noise_std=std, seed=seed, progress=False)
        ie = trace_grid(r, restored=False)
        n_pos = ie.shape[1]
        subject = M.subject_positions(model, f["prompt"], f["subject"])
        sums = torch.zeros(n_layers, len(CATEGORIES))
        seen = torch.zeros(len(CATEGORIES))
        for pos in range(n_pos):
            c = _category(pos, subject, n_pos)
            if c is not None:
                sums[:, c] += ie[:, pos]
                seen[c] += 1
        present = seen > 0
        total[:, present] += sums[:, present] / seen[present]
        count += present.float()
        clean += float(r.clean_metric[0])  # type: ignore[index]
        corrupted += float(r.corrupted_metric[0])  # type: ignore[index]
        last = r
    n = len(facts)
    mean_ie = (total / count.clamp_min(1)).reshape(-1, 1)
    cells = tuple(trace_cell(kind, layer, c) for layer in range(n_layers) for c in range(len(CATEGORIES)))
    assert last is not None
    return Effects(
        cells, mean_ie, last.unit, last.method,
        clean_metric=torch.tensor([clean / n]), corrupted_metric=torch.tensor([corrupted / n]), patched=mean_ie + corrupted / n,
    )
