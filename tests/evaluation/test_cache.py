"""The disk cache of unedited-model measurements: equal to a fresh measurement, keyed by all it depends on, bad files recomputed."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import circuits.evaluation.run as run
from circuits.evaluation.cache import cache_key
from circuits.evaluation.report import Measurements, Settings
from circuits.suites import Suite, load_suite


def _planted(settings: Settings) -> Measurements:
    rng = np.random.default_rng(0)
    return Measurements(
        settings=settings,
        gaps={"a": rng.normal(size=5), "b": rng.normal(size=3).astype(np.float32)},
        gap_units={"a": "logits", "b": "nats"},
        gap_kinds={"a": "harmful", "b": "spurious"},
        classification=rng.normal(size=(4, 2, 3)),
        labels=np.array([True, False, True, True]),
        mc_correct=np.array([1.0, 0.0, 1.0]),
        nll=rng.normal(size=6).astype(np.float32),
    )


def _Suite(name: str, content_hash: str = "sha256:x") -> Suite:
    return replace(load_suite("gender-occupation"), name=name, content_hash=content_hash)


@pytest.fixture
def fake_measure(monkeypatch):
    calls = []

    def measure(model, settings, suites, on_measure, label):  # run._measure: taking the measurements themselves
        calls.append(1)
        return _planted(settings)

    monkeypatch.setattr(run, "_measure", measure)
    return calls


GROUPS = ("suites", "classification", "multiple_choice", "text")


def _assert_equal(a: Measurements, b: Measurements) -> None:
    assert a.settings == b.settings and sorted(a.gaps) == sorted(b.gaps)
    assert a.gap_units == b.gap_units and a.gap_kinds == b.gap_kinds
    for k in a.gaps:
        assert a.gaps[k].dtype == b.gaps[k].dtype and np.array_equal(a.gaps[k], b.gaps[k])
    for name in ("stereotype", "toxicity", "classification", "labels", "mc_correct", "qa_correct", "nll", "accuracy"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_a_second_call_reads_the_file_and_returns_equal_arrays(tiny, tmp_path, fake_measure):
    suites = [_Suite("a"), _Suite("b")]
    first = run.measure(tiny, cache_dir=tmp_path, suites=suites, groups=GROUPS)
    second = run.measure(tiny, cache_dir=tmp_path, suites=suites, groups=GROUPS)
    assert len(fake_measure) == 1  # measured once
    _assert_equal(first, second)
    assert len(list(tmp_path.glob("measurements-*.safetensors"))) == 1


def test_other_settings_suites_or_weights_are_never_reused(tiny, tmp_path, fake_measure):
    suites = [_Suite("a"), _Suite("b")]
    run.measure(tiny, cache_dir=tmp_path, suites=suites, groups=GROUPS)
    run.measure(tiny, cache_dir=tmp_path, suites=suites, groups=GROUPS, max_pairs=2)
    run.measure(tiny, cache_dir=tmp_path, suites=[_Suite("a"), _Suite("b", "sha256:changed")], groups=GROUPS)
    settings = Settings(("a", "b"), "eval", GROUPS, None, 256, None, False)
    key = cache_key(tiny, settings, suites)
    with torch.no_grad():
        p = next(tiny.core.parameters())
        original = p.clone()
        p.add_(1.0)
        try:
            assert cache_key(tiny, settings, suites) != key
        finally:
            p.copy_(original)
    assert cache_key(tiny, settings, suites) == key
    assert len(fake_measure) == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage", "nan"])
def test_a_damaged_file_is_discarded_with_a_warning_and_measured_again(tiny, tmp_path, fake_measure, damage):
    suites = [_Suite("a"), _Suite("b")]
    fresh = run.measure(tiny, cache_dir=tmp_path, suites=suites, groups=GROUPS)
    (path,) = tmp_path.glob("measurements-*.safetensors")
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 64)
    else:
        from safetensors.torch import load, save

        tensors = load(blob)
        tensors["nll"] = torch.full_like(tensors["nll"], float("nan"))
        path.write_bytes(save(tensors))
    with pytest.warns(RuntimeWarning, match="discarding cached measurements"):
        again = run.measure(tiny, cache_dir=tmp_path, suites=suites, groups=GROUPS)
    assert len(fake_measure) == 2
    _assert_equal(fresh, again)
    _assert_equal(fresh, run.measure(tiny, cache_dir=tmp_path, suites=suites, groups=GROUPS))  # the rewritten file is good


@pytest.mark.real_model
def test_cached_measurements_equal_a_fresh_measure(real_model, tmp_path):
    kw = dict(suites=[], groups=("stereotype", "classification", "text"), window=64, max_tokens=256)
    fresh = run.measure(real_model, **kw)
    run.measure(real_model, cache_dir=tmp_path, **kw)
    _assert_equal(fresh, run.measure(real_model, cache_dir=tmp_path, **kw))


def test_the_key_changes_with_the_measuring_code(tiny, monkeypatch):
    """A changed measure (code, not only data) never reuses a baseline measured by the old code."""
    import circuits.evaluation.cache as cache

    suites = [_Suite("a")]
    settings = Settings(("a",), "eval", GROUPS, None, 256, None, False)
    before = cache_key(tiny, settings, suites)
    real = cache.inspect.getsource
    monkeypatch.setattr(cache.inspect, "getsource", lambda m: real(m) + ("\n# changed" if m.__name__ == "circuits.evaluation.metrics" else ""))
    assert cache_key(tiny, settings, suites) != before


@pytest.mark.slow  # an end-to-end pipeline (> 10 s): make test runs it, make test-fast does not
def test_evaluate_with_a_baseline_cache_equals_measuring_the_baseline(tmp_path, monkeypatch):
    """`evaluate(baseline_cache=...)` (what `circuits eval` uses) measures the unedited model once and reports as without it."""
    from circuits.editing import Edit
    from circuits.model import fingerprint, load_model
    from circuits.model.tiny import save_tiny_hf
    from circuits.sites import HeadRef

    lm = load_model(str(save_tiny_hf("llama", tmp_path / "tiny-llama", seed=5)))
    edit = Edit("scaling", (HeadRef(0, 1),), {}, lm.name, fingerprint(lm), hyperparameters={"alpha": 0.0}, suite={"name": "gender-occupation"})
    monkeypatch.setattr(run, "available_suites", lambda tasks=False: ["gender-occupation"])
    kw = dict(groups=("suites", "multiple_choice"), max_pairs=1, seed=3)
    fresh = run.evaluate(lm, edit, **kw)
    calls = []
    real = run._measure
    monkeypatch.setattr(run, "_measure", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = run.evaluate(lm, edit, baseline_cache=tmp_path / "cache", **kw)
    second = run.evaluate(lm, edit, baseline_cache=tmp_path / "cache", **kw)
    assert len(calls) == 3  # the baseline once, the edited model twice
    assert len(list((tmp_path / "cache").glob("measurements-*.safetensors"))) == 1
    assert [m.name for m in fresh.measures] == [m.name for m in first.measures] == [m.name for m in second.measures]
    for a, b, c in zip(fresh.measures, first.measures, second.measures, strict=True):
        assert a.before == b.before == c.before and a.after == b.after == c.after and a.p_value == b.p_value == c.p_value
    assert fresh.tokenization == {"prepend_bos": False, "source": "tokenizer"} == fresh.as_dict()["tokenization"]
    # The same weights under another tokenization policy are another measurement: never a cache hit.
    bos = load_model(str(tmp_path / "tiny-llama"), prepend_bos=True)
    third = run.evaluate(bos, Edit(**{**edit.__dict__}), baseline_cache=tmp_path / "cache", **kw)
    assert len(calls) == 5 and len(list((tmp_path / "cache").glob("measurements-*.safetensors"))) == 2
    assert third.tokenization == {"prepend_bos": True, "source": "override"} and third.flat()["tokenization.prepend_bos"] == 1
