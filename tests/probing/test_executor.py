"""Ray executor: same numbers as in-process, retried units after a killed worker, driver-side resume.

Runs on a local Ray cluster started by the test (two worker processes, one model copy each).
"""

import os
import signal

import pytest
import torch

from circuits.metrics import LogitDiff
from circuits.model import tiny_model
from circuits.probing.executor import InProcess, PatchUnit
from circuits.interventions import MeanOf, Swap
from circuits.probing.patching import TokenGroup, patch_groups, position_mean_activations
from circuits.sites import all_heads, all_mlps

ray = pytest.importorskip("ray")
METRIC = LogitDiff(positive=3, negative=7)


@pytest.fixture(scope="module")
def executor():
    from circuits.probing.executor import RayExecutor

    ex = RayExecutor(workers=2)
    yield ex
    ex.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def model():
    # Big enough that a unit takes a noticeable time, so a worker can be killed mid-sweep.
    return tiny_model(n_layers=8, n_heads=4, n_kv_heads=2, d_model=128, d_head=32, d_mlp=256, d_vocab=64, seed=3)


def _groups(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for gi, length in enumerate((7, 9)):
        clean = torch.randint(0, 64, (n, length), generator=g)
        corrupted = clean.clone()
        corrupted[:, 2] = (clean[:, 2] + 5) % 64
        out.append(TokenGroup(list(range(gi * n, (gi + 1) * n)), clean, corrupted))
    return out


def _components():
    return [*all_heads(8, 4), *all_mlps(8)]


@pytest.mark.slow  # a local Ray cluster: minutes on 2 cores (make test runs it)
def test_ray_sweep_equals_the_in_process_sweep(model, executor):
    groups, comps = _groups(), _components()
    mean = MeanOf(position_mean_activations(model, groups, sorted({c.hook_name for c in comps})), over_positions=True)
    for kw in ({}, {"direction": "noising", "intervention": mean}):
        local = patch_groups(model, groups, METRIC, comps, progress=False, **kw)
        remote = patch_groups(model, groups, METRIC, comps, progress=False, executor=executor, **kw)
        assert torch.allclose(remote.patched, local.patched, atol=1e-5, rtol=1e-5)
        assert torch.equal(remote.clean_metric, local.clean_metric)
        flagged = lambda r: {str(c) for c, e in zip(r.components, r.effects.mean(-1)) if e > 0.05}  # noqa: E731
        assert flagged(remote) == flagged(local)
        assert torch.equal(remote.effects.mean(-1).argsort(), local.effects.mean(-1).argsort())


@pytest.mark.slow  # a local Ray cluster: minutes on 2 cores (make test runs it)
def test_a_killed_worker_is_restarted_and_its_units_retried(model, executor):
    groups, comps = _groups(seed=1), _components()
    local = patch_groups(model, groups, METRIC, comps, progress=False)
    pids: list[int] = []

    class KillAfterFirst:
        """Kill the first actor's process as soon as the first unit comes back (the actors exist by then,
        whichever test of this module ran first on this worker)."""

        def run(self, *args, **kwargs):
            for i, item in enumerate(executor.run(*args, **kwargs)):
                if i == 0:
                    pids.extend(executor.pids())
                    os.kill(pids[0], signal.SIGKILL)
                yield item

    remote = patch_groups(model, groups, METRIC, comps, progress=False, executor=KillAfterFirst())
    assert torch.allclose(remote.patched, local.patched, atol=1e-5, rtol=1e-5)
    assert executor.pids()[0] != pids[0]  # Ray restarted the killed actor


@pytest.mark.slow  # a local Ray cluster: minutes on 2 cores (make test runs it)
def test_an_interrupted_driver_resumes_from_checkpoints_without_recomputing(model, executor, tmp_path):
    groups, comps = _groups(seed=2), _components()
    full = patch_groups(model, groups, METRIC, comps, progress=False)

    class InterruptAfter:
        def __init__(self, n):
            self.n = n

        def run(self, *args, **kwargs):
            for i, item in enumerate(executor.run(*args, **kwargs)):
                if i == self.n:
                    raise KeyboardInterrupt("simulated driver interruption")
                yield item

    with pytest.raises(KeyboardInterrupt):
        patch_groups(model, groups, METRIC, comps, progress=False, executor=InterruptAfter(3), checkpoint_dir=tmp_path)
    assert len(list(tmp_path.rglob("layer_*.safetensors"))) == 3
    before = executor.units_run
    resumed = patch_groups(model, groups, METRIC, comps, progress=False, executor=executor, checkpoint_dir=tmp_path)
    assert executor.units_run - before == 8 - 3  # only the unfinished layers ran
    assert torch.allclose(resumed.patched, full.patched, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # a local Ray cluster: minutes on 2 cores (make test runs it)
def test_a_worker_that_builds_other_weights_is_refused(executor):
    m = tiny_model(n_layers=2, d_vocab=64, seed=5)
    with torch.no_grad():
        next(m.core.parameters()).add_(1.0)  # the recipe no longer rebuilds these weights
    with pytest.raises(Exception, match="fingerprint"):
        patch_groups(m, _groups(n=2), METRIC, [*all_heads(2, 4)], progress=False, executor=executor)


def test_in_process_executor_yields_units_in_order(model):
    from circuits.probing.executor import PatchJob, job_caches

    groups, comps = _groups(n=2), _components()
    job = PatchJob(tuple(groups), METRIC, tuple(comps), "denoising", Swap(), 192, 0)
    units = [PatchUnit(1, (4, 5)), PatchUnit(0, (0,))]
    assert [u for u, _ in InProcess().run(model, job, units, job_caches(model, job))] == units
