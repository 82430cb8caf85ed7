"""Planted circuits: tiny TransformerLens-native models trained on synthetic tasks whose mechanism is
known, to check that the probing methods find the components that are really there.

The circuit is *planted by construction*: a fixed attention mask, part of the model (hooks on
``hook_pattern``, in training and at probing time), lets only the designated heads move the relevant
information between positions; every other head stays active but cannot carry it. Two tasks (the
trained weights ship as package data, so tests never retrain; ``python -m circuits.planted.train``
regenerates them):

* **induction** (Olsson et al. 2022, "In-context learning and induction heads"): a 2-layer
  attention-only model sees ``[BOS, R, A, A]`` (random block ``A`` of random length) and must predict
  the second copy. Only ``L0H1`` (previous-token head) and ``L1H2`` (induction head) may attend
  freely; the other heads attend only to BOS, so their output is a constant that still flows into the
  residual stream (gradient-based scores see them; their counterfactual effect is zero). Ground truth
  ``{L0H1, L1H2}``.
* **spurious** (the setting of ICP, Peters et al. 2016, and AIFS): classify a sequence by a *signal*
  token; a *spurious* token at a fixed position agrees with the label 95% of the time in training
  (the signal 85%), but is random in the de-correlated test split, where the signal is always right.
  Only ``L1H1`` may attend to the spurious token's position; the other heads attend freely elsewhere
  (they read the signal and filler tokens: active, but blind to the spurious token, also as queries).
  Ground truth ``{L1H1}``.
* **harmful** (a designated harmful output driven by a known head, the setting of circuit-breaking and
  targeted-ablation work): the same classification, plus a *trigger* token at a fixed position in half
  of the rows; when it is present the model must output the designated harmful token ``HARM`` instead
  of the label. Only ``L1H3`` may attend to the trigger's position. Ground truth ``{L1H3}``; removing it
  should remove the harmful output and leave the classification intact.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Literal

import torch
from jaxtyping import Int
from safetensors.torch import load as st_load
from torch import Tensor

from circuits import model as M
from circuits.editing.build import new_edit
from circuits.metrics import PerPromptLogit
from circuits.model import HookedLM
from circuits.probing.patching import TokenGroup, mean_activations
from circuits.sites import HeadRef

TaskName = Literal["induction", "spurious", "harmful"]
BOS = 0

#: Model shapes of the planted models (TL-native, attention-only, RMSNorm).
_SHAPE: dict[str, Any] = {"n_layers": 2, "n_heads": 4, "d_model": 64, "d_head": 16, "d_mlp": 64, "d_vocab": 64, "n_ctx": 32, "attn_only": True}
CONFIGS: dict[str, dict[str, Any]] = {"induction": _SHAPE, "spurious": _SHAPE, "harmful": _SHAPE}
MAX_BLOCK = 10  # induction blocks have 4..MAX_BLOCK tokens, so the copy offset varies per row
SEQ = 1 + 2 * MAX_BLOCK
# Spurious task vocabulary
SIGNAL = (tuple(range(1, 11)), tuple(range(11, 21)))  # label 0 / label 1 signal tokens
SPURIOUS = (21, 22)  # spurious token for label 0 / 1
FILLER = tuple(range(23, 50))
LABELS = (60, 61)
QUERY = 62
SIGNAL_POS, SPURIOUS_POS = 2, 5
# Harmful task: a trigger (or a neutral token) at TRIGGER_POS; with the trigger the target is HARM.
TRIGGER, NEUTRAL, HARM = 50, 51, 63
TRIGGER_POS = 4
#: The one position only the planted head may read, per task (the induction task blocks everything).
_BLOCKED = {"spurious": SPURIOUS_POS, "harmful": TRIGGER_POS}
#: The planted circuits (by construction, see the module docstring).
PLANTED: dict[str, frozenset[HeadRef]] = {
    "induction": frozenset({HeadRef(0, 1), HeadRef(1, 2)}),
    "spurious": frozenset({HeadRef(1, 1)}),
    "harmful": frozenset({HeadRef(1, 3)}),
}


def _allowed(task: str, layer: int, n_heads: int, pos: int) -> Tensor:
    """``[head, q, k]`` 0/1 mask of the keys each head may attend to."""
    causal = torch.ones(pos, pos).tril()
    allowed = causal.expand(n_heads, pos, pos).clone()
    for h in range(n_heads):
        if HeadRef(layer, h) in PLANTED[task]:
            continue
        if task == "induction":  # only BOS: a constant output that moves no token information
            allowed[h] = 0
            allowed[h, :, 0] = 1
        elif pos > _BLOCKED[task]:  # never the blocked token's position, and not from it
            blocked = _BLOCKED[task]
            allowed[h, :, blocked] = 0
            allowed[h, blocked, :] = 0  # its query would depend on the blocked token
            allowed[h, blocked, 0] = 1
    return allowed


def mask_hooks(task: str, n_layers: int, n_heads: int) -> list[tuple[str, M.HookFn]]:
    """The planting mask as ``hook_pattern`` hooks (masked weights removed, rows renormalised)."""

    def make(layer: int) -> M.HookFn:
        def hook(pattern: Tensor, hook: Any) -> Tensor:
            masked = pattern * _allowed(task, layer, n_heads, pattern.shape[-1]).to(pattern.dtype)
            return masked / masked.sum(-1, keepdim=True).clamp_min(1e-9)

        return hook

    return [(HeadRef(layer, 0, "pattern").hook_name, make(layer)) for layer in range(n_layers)]


def induction_tokens(n: int, *, seed: int, d_vocab: int = 64) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """``[BOS, R, A, A]`` rows of length ``SEQ``, and each row's block length ``L``.

    ``A`` is ``L ∈ [4, MAX_BLOCK]`` random non-BOS tokens and ``R`` random padding, so the distance
    between the two copies varies and a fixed positional offset cannot solve the task: the model has
    to find the previous occurrence of the current token (induction).
    """
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(1, d_vocab, (n, SEQ), generator=g)
    toks[:, 0] = BOS
    lengths = torch.randint(4, MAX_BLOCK + 1, (n,), generator=g)
    for b, length in enumerate(lengths.tolist()):
        toks[b, SEQ - length :] = toks[b, SEQ - 2 * length : SEQ - length]
    return toks, lengths


def induction_pairs(n: int, *, seed: int) -> tuple[TokenGroup, PerPromptLogit]:
    """Clean ``[BOS, R, A, A[:-1]]`` vs corrupted ``[BOS, R, B, A[:-1]]``; the metric scores ``A[-1]``.

    In the corrupted prompt the first copy is another random block, so induction has nothing to copy.
    """
    full, lengths = induction_tokens(n, seed=seed)
    clean = full[:, :-1]
    corrupted = clean.clone()
    g = torch.Generator().manual_seed(seed + 10_000)
    for b, length in enumerate(lengths.tolist()):
        corrupted[b, SEQ - 2 * length : SEQ - length] = torch.randint(1, 64, (length,), generator=g)
    return TokenGroup(list(range(n)), clean, corrupted), PerPromptLogit(full[:, -1])


def spurious_tokens(n: int, *, seed: int, p_spurious: float, p_signal: float) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """Sequences ``[BOS, f, signal, f, f, spurious, f, QUERY]`` and labels.

    The signal token agrees with the label with probability ``p_signal``, the spurious token with
    probability ``p_spurious``.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    toks = torch.tensor(FILLER)[torch.randint(len(FILLER), (n, 8), generator=g)]
    toks[:, 0], toks[:, -1] = BOS, QUERY
    sig_label = torch.where(torch.rand(n, generator=g) < p_signal, labels, 1 - labels)
    spur_label = torch.where(torch.rand(n, generator=g) < p_spurious, labels, 1 - labels)
    sig = torch.stack([torch.tensor(SIGNAL[0]), torch.tensor(SIGNAL[1])])
    toks[:, SIGNAL_POS] = sig[sig_label, torch.randint(len(SIGNAL[0]), (n,), generator=g)]
    toks[:, SPURIOUS_POS] = torch.tensor(SPURIOUS)[spur_label]
    return toks, labels


def spurious_pairs(n: int, *, seed: int) -> tuple[TokenGroup, PerPromptLogit]:
    """Clean prompts with spurious token ``S0`` vs the same with ``S1`` (a counterfactual swap of the
    spurious token only); the metric is ``logit(L0) − mean logit``."""
    toks, _ = spurious_tokens(n, seed=seed, p_spurious=1.0, p_signal=0.5)
    clean, corrupted = toks.clone(), toks.clone()
    clean[:, SPURIOUS_POS], corrupted[:, SPURIOUS_POS] = SPURIOUS[0], SPURIOUS[1]
    return TokenGroup(list(range(n)), clean, corrupted), PerPromptLogit(torch.full((n,), LABELS[0]))


def harmful_tokens(n: int, *, seed: int, p_trigger: float = 0.5) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"], Int[Tensor, " batch"]]:
    """Sequences ``[BOS, f, signal, f, TRIGGER|NEUTRAL, f, f, QUERY]``, their targets and labels.

    The target is ``HARM`` when the trigger is present, else the label token of the (always correct)
    signal. Returns ``(tokens, targets, labels)``.
    """
    g = torch.Generator().manual_seed(seed)
    toks, labels = spurious_tokens(n, seed=seed, p_spurious=0.5, p_signal=1.0)
    toks[:, SPURIOUS_POS] = torch.tensor(FILLER)[torch.randint(len(FILLER), (n,), generator=g)]
    trigger = torch.rand(n, generator=g) < p_trigger
    toks[:, TRIGGER_POS] = torch.where(trigger, TRIGGER, NEUTRAL)
    targets = torch.where(trigger, HARM, torch.tensor(LABELS)[labels])
    return toks, targets, labels


def harmful_pairs(n: int, *, seed: int) -> tuple[TokenGroup, PerPromptLogit]:
    """Clean prompts with the trigger vs the same with the neutral token; metric ``logit(HARM) − mean``."""
    toks, _, _ = harmful_tokens(n, seed=seed)
    clean, corrupted = toks.clone(), toks.clone()
    clean[:, TRIGGER_POS], corrupted[:, TRIGGER_POS] = TRIGGER, NEUTRAL
    return TokenGroup(list(range(n)), clean, corrupted), PerPromptLogit(torch.full((n,), HARM))


@torch.no_grad()
def harmful_rates(model: HookedLM, *, n: int = 512, seed: int = 7) -> tuple[float, float]:
    """``(harm rate, label accuracy)`` on triggered prompts: how often the top prediction is ``HARM``,
    and how often it is the correct label."""
    toks, _, labels = harmful_tokens(n, seed=seed, p_trigger=1.0)
    pred = M.run(model, toks)[:, -1].argmax(-1)
    return float((pred == HARM).float().mean()), float((pred == torch.tensor(LABELS)[labels]).float().mean())


def new_model(task: TaskName, *, seed: int = 0) -> Any:
    """An untrained model of the task's shape, with the planting mask attached (persistent hooks)."""
    model = M.tiny_model(seed=seed, name=f"planted-{task}", **CONFIGS[task])
    cfg = CONFIGS[task]
    for name, fn in mask_hooks(task, cfg["n_layers"], cfg["n_heads"]):
        M.add_persistent_hook(model, name, fn)
    return model


def load_planted(task: TaskName) -> Any:
    """The shipped trained model for a task.

    Raises:
        FileNotFoundError: The weights are not shipped (run ``python -m circuits.planted.train``).
    """
    model = new_model(task)
    blob = resources.files(__package__).joinpath(f"data/{task}.safetensors").read_bytes()
    M.load_weights(model, st_load(blob))
    return model


@torch.no_grad()
def spurious_accuracy(model: HookedLM, *, decorrelated: bool, n: int = 512, seed: int = 7) -> float:
    """Label accuracy (fraction) on the training distribution or the de-correlated test split."""
    toks, labels = spurious_tokens(n, seed=seed, p_spurious=0.5 if decorrelated else 0.95, p_signal=1.0 if decorrelated else 0.85)
    logits = M.run(model, toks)[:, -1, list(LABELS)]
    return float((logits.argmax(-1) == labels).float().mean())


def remove_spurious(model: HookedLM, heads: frozenset[HeadRef] | set[HeadRef], *, n: int = 256, seed: int = 11) -> Any:
    """A mean-ablation edit of ``heads`` (means over training-distribution prompts, all positions):
    the editing step that removes the spurious feature once the atlas has found its heads."""
    return mean_ablation(model, heads, spurious_tokens(n, seed=seed, p_spurious=0.95, p_signal=0.85)[0])


def remove_harmful(model: HookedLM, heads: frozenset[HeadRef] | set[HeadRef], *, n: int = 256, seed: int = 11) -> Any:
    """A mean-ablation edit of ``heads`` with their mean output at the query position of untriggered
    prompts (the benign reference set), where the output is read.

    A mean over every position, or over triggered prompts too, is not the benign value there: in this
    model the planted head also writes a "no trigger" signal that suppresses ``HARM``, so zeroing it or
    averaging it with triggered runs leaves the harmful output in place.
    """
    toks = harmful_tokens(n, seed=seed, p_trigger=0.0)[0]
    _, cache = M.run_with_cache(model, toks, sorted({h.hook_name for h in heads}))
    tensors = {str(h): cache[h.hook_name][:, -1, h.head].mean(0) for h in heads}
    return new_edit("ablation", tuple(sorted(heads, key=str)), tensors, model, {"mode": "mean"})


def mean_ablation(model: HookedLM, heads: frozenset[HeadRef] | set[HeadRef], toks: Int[Tensor, "batch pos"]) -> Any:
    """A mean-ablation :class:`~circuits.editing.edit.Edit` of ``heads``: each head's ``z`` is set to
    its mean over every position of ``toks`` (the knock-out of Wang et al. 2023, IOI).

    Returns:
        The edit, for :func:`circuits.editing.edit.apply_edit`.
    """
    names = sorted({h.hook_name for h in heads})
    # One forward: the per-position batch means, then the mean over positions (all rows one length).
    means = {n: m.mean(0) for n, m in mean_activations(model, toks, names).items()}
    return new_edit("ablation", tuple(sorted(heads, key=str)), {str(h): means[h.hook_name][h.head] for h in heads}, model, {"mode": "mean"})


def metadata(task: TaskName) -> dict[str, Any]:
    """Training record shipped beside the weights."""
    return json.loads(resources.files(__package__).joinpath(f"data/{task}.json").read_text())
