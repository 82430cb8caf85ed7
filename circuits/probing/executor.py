"""Where the work units of an activation-patching sweep run: in this process, or on a Ray cluster.

A sweep (:func:`circuits.probing.patching.patch_groups`) is a set of independent **work units**, one
per layer: patch that layer's components on every prompt group, return ``[component, prompt]``
metric values. Units share the sweep's inputs (:class:`PatchJob`: token groups, metric, components,
intervention, seed) and nothing else, so they can run anywhere and in any order; the driver places
each unit's rows by component index, so the merged result does not depend on which worker ran what
or when (deterministic merge), and checkpoints each finished unit (resume).

* :class:`InProcess` (default) runs units one after another on the caller's model.
* :class:`RayExecutor` runs them on Ray actors (Moritz et al. 2018, "Ray: A distributed framework
  for emerging AI applications"). Each actor builds the model once from its recipe
  (:func:`circuits.model.model_recipe`) and keeps it, checks the weight fingerprint against the
  driver's, and caches the job's clean/corrupted activations; only the job and the unit's layer travel
  per task, never weights. A killed worker is restarted by Ray and its unfinished units are retried
  (``max_restarts`` / ``max_task_retries``).

Ray moves tasks and results between processes with its own serializer; nothing is written to disk
that way (checkpoints are safetensors, written by the driver).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from circuits import model as M
from circuits.metrics import Metric, call_metric
from circuits.model import HookedLM
from circuits.probing.sweep import patch_from_source, sweep_cache_names
from circuits.sites import Component

RAY_HINT = "Ray is not installed: pip install 'circuit-atlas[ray]' (or pip install ray)"


@dataclass(frozen=True)
class PatchJob:
    """The shared inputs of one patching sweep (everything a worker needs besides the model).

    Attributes:
        groups: Tokenised prompt groups (:class:`circuits.probing.patching.TokenGroup`).
        metric: The behaviour metric.
        components: All components of the sweep; units refer to them by index.
        direction: ``"denoising"`` or ``"noising"``.
        intervention: The intervention.
        max_rows: Batch rows per packed forward.
        seed: Seed of stochastic interventions (per component).
    """

    groups: tuple[Any, ...]
    metric: Metric
    components: tuple[Component, ...]
    direction: str
    intervention: Any
    max_rows: int
    seed: int
    key: str = field(default="", compare=False)


@dataclass(frozen=True)
class PatchUnit:
    """One work unit: one layer's components (indices into :attr:`PatchJob.components`)."""

    layer: int
    indices: tuple[int, ...]


@dataclass
class JobCaches:
    """A job's cached base/source activations per group and the clean/corrupted metrics per prompt."""

    bases: list[dict[str, Tensor]]
    sources: list[dict[str, Tensor]]
    clean_metric: Float[Tensor, " prompt"]
    corrupted_metric: Float[Tensor, " prompt"]


def job_caches(model: HookedLM, job: PatchJob) -> JobCaches:
    """Two cached forwards per group (clean and corrupted), shared by every unit of the job."""
    n = sum(len(g.indices) for g in job.groups)
    clean_m, corr_m = torch.zeros(n), torch.zeros(n)
    names = sweep_cache_names(job.components)
    bases, sources = [], []
    for group in job.groups:
        idx = torch.tensor(group.indices)
        clean_logits, clean_cache = M.run_with_cache(model, group.clean, names)
        corr_logits, corr_cache = M.run_with_cache(model, group.corrupted, names)
        clean_m[idx] = call_metric(job.metric, clean_logits, idx).float().cpu()
        corr_m[idx] = call_metric(job.metric, corr_logits, idx).float().cpu()
        bases.append(corr_cache if job.direction == "denoising" else clean_cache)
        sources.append(clean_cache if job.direction == "denoising" else corr_cache)
    return JobCaches(bases, sources, clean_m, corr_m)


def run_unit(model: HookedLM, job: PatchJob, caches: JobCaches, unit: PatchUnit, bar: Any = None) -> Float[Tensor, "component prompt"]:
    """Patch one unit's components on every group: the metric per component and prompt."""
    n = sum(len(g.indices) for g in job.groups)
    comps = [job.components[i] for i in unit.indices]
    rows = torch.zeros(len(comps), n)
    for gi, group in enumerate(job.groups):
        idx = torch.tensor(group.indices)
        rows[:, idx] = patch_from_source(
            model, caches.bases[gi], caches.sources[gi], job.metric, comps, job.intervention, job.max_rows, job.seed, gi, bar, idx
        )
    return rows


@runtime_checkable
class Executor(Protocol):
    """Runs the units of a job and yields each unit's rows as it finishes (in any order)."""

    def run(self, model: HookedLM, job: PatchJob, units: Sequence[PatchUnit], caches: JobCaches, bar: Any = None) -> Iterator[tuple[PatchUnit, Tensor]]:
        """Run ``units``; ``caches`` are the driver's (an in-process executor reuses them)."""
        ...


class InProcess:
    """Run units one after another on the caller's model (the default executor)."""

    def run(self, model: HookedLM, job: PatchJob, units: Sequence[PatchUnit], caches: JobCaches, bar: Any = None) -> Iterator[tuple[PatchUnit, Tensor]]:
        """Yield ``(unit, rows)`` in order."""
        for unit in units:
            yield unit, run_unit(model, job, caches, unit, bar)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_HINT) from None
    return ray


class _Worker:
    """A Ray actor body: one model, built once; the current job's caches."""

    def __init__(self, recipe: dict[str, Any], fingerprint: str, threads: int) -> None:
        torch.set_num_threads(threads)
        self.model = M.build_model(recipe)
        got = M.fingerprint(self.model)
        if got != fingerprint:
            raise RuntimeError(f"worker built a model with fingerprint {got}, the driver has {fingerprint}")
        self.key: str | None = None
        self.caches: JobCaches | None = None

    def pid(self) -> int:
        return os.getpid()

    def patch(self, job: PatchJob, unit: PatchUnit) -> Tensor:
        if self.key != job.key or self.caches is None:
            self.key, self.caches = job.key, job_caches(self.model, job)
        return run_unit(self.model, job, self.caches, unit)


class RayExecutor:
    """Run units on Ray actors that each hold one copy of the model.

    Args:
        address: A Ray cluster address (``"auto"``, ``"ray://host:10001"``); ``None`` starts a local
            cluster with ``ray.init()`` if none is running.
        workers: Number of actors (model copies).
        threads: Torch threads per actor.
        max_retries: Restarts of a dead actor and retries of its unfinished units.

    Raises:
        ImportError: Ray is not installed (the message says how to install it).
    """

    def __init__(self, *, address: str | None = None, workers: int = 2, threads: int = 1, max_retries: int = 3) -> None:
        ray = _ray()
        if not ray.is_initialized():
            kw: dict[str, Any] = dict(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            if address is None:
                kw["num_cpus"] = max(workers * threads, os.cpu_count() or 1)
            ray.init(**kw)
        self.workers, self.threads, self.max_retries = workers, threads, max_retries
        self._actors: list[Any] = []
        self._model_key: tuple[str, str] | None = None
        self.units_run = 0

    def _ensure_actors(self, model: HookedLM) -> list[Any]:
        ray = _ray()
        recipe, fp = M.model_recipe(model), M.fingerprint(model)
        key = (repr(sorted(recipe.items())), fp)
        if self._model_key != key:
            self.shutdown()
            cls = ray.remote(num_cpus=self.threads, max_restarts=self.max_retries, max_task_retries=self.max_retries)(_Worker)
            self._actors = [cls.remote(recipe, fp, self.threads) for _ in range(self.workers)]
            self._model_key = key
        return self._actors

    def pids(self) -> list[int]:
        """Process ids of the actors (for monitoring, and for the fault-tolerance test)."""
        ray = _ray()
        return [ray.get(a.pid.remote()) for a in self._actors]

    def run(self, model: HookedLM, job: PatchJob, units: Sequence[PatchUnit], caches: JobCaches, bar: Any = None) -> Iterator[tuple[PatchUnit, Tensor]]:
        """Submit every unit (round robin over the actors) and yield results as they finish."""
        ray = _ray()
        if not units:
            return
        actors = self._ensure_actors(model)
        job_ref = ray.put(job)
        pending = {actors[i % len(actors)].patch.remote(job_ref, u): u for i, u in enumerate(units)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(done[0])
            rows = ray.get(done[0])
            self.units_run += 1
            if bar is not None:
                bar.update(sum(-(-len(unit.indices) // max(1, job.max_rows // len(g.indices))) for g in job.groups))
            yield unit, rows

    def shutdown(self) -> None:
        """Kill the actors (the Ray cluster stays up)."""
        if self._actors:
            ray = _ray()
            for a in self._actors:
                ray.kill(a)
        self._actors, self._model_key = [], None
