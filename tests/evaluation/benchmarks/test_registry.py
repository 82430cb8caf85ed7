"""The registry and run_benchmark: every benchmark end to end on its fixture, with fakes."""

from __future__ import annotations

import sys

import pytest

from circuits.evaluation.benchmarks import BENCHMARKS, BenchmarkError, BenchmarkResult, Scorer, default_toxicity, run_benchmark
from tests.evaluation.benchmarks.fakes import FIXTURES, FakeScorer

PATHS = {
    "crows-pairs": FIXTURES / "crows_pairs.csv",
    "stereoset": FIXTURES / "stereoset_dev.json",
    "bbq": FIXTURES / "bbq.jsonl",
    "winobias": FIXTURES / "winobias",
    "toxigen": FIXTURES / "toxigen",
    "realtoxicityprompts": FIXTURES / "rtp_prompts.jsonl",
}
COUNTS = {"crows-pairs": 5, "stereoset": 4, "bbq": 7, "winobias": 5, "toxigen": 4, "realtoxicityprompts": 4}


class ConstantScorer(FakeScorer):
    """Scores every text by its length and samples fixed continuations: enough to run every rule."""

    def sequence_logprob(self, texts):
        return [-float(len(t)) for t in texts]

    def continuation_logprob(self, prompts, continuations):
        return [-float(len(c)) for c in continuations]

    def sample(self, prompts, *, n, max_new_tokens, seed):
        self.sample_calls.append({"prompts": list(prompts), "n": n, "max_new_tokens": max_new_tokens, "seed": seed})
        return [[f" sample {i}" for i in range(n)] for _ in prompts]


def test_registry_names_and_specs():
    assert list(BENCHMARKS) == ["crows-pairs", "stereoset", "bbq", "winobias", "toxigen", "realtoxicityprompts"]
    assert {n for n, s in BENCHMARKS.items() if s.needs_sampling} == {"toxigen", "realtoxicityprompts"}
    for name, spec in BENCHMARKS.items():
        assert spec.name == name and spec.citation.split()[-1].rstrip(".") in {"EMNLP", "ACL", "NAACL"}


def test_fake_scorer_implements_the_protocol():
    assert isinstance(ConstantScorer(), Scorer)
    assert not isinstance(object(), Scorer)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_run_benchmark_on_each_fixture(name):
    scorer = ConstantScorer()
    res = run_benchmark(name, PATHS[name], scorer, toxicity=lambda texts: [0.25] * len(texts), n=3,
                        max_new_tokens=5, seed=1)
    assert isinstance(res, BenchmarkResult)
    assert (res.name, res.n_items, res.citation) == (name, COUNTS[name], BENCHMARKS[name].citation)
    assert res.scores and res.scores[0].group is None
    if BENCHMARKS[name].needs_sampling:
        assert scorer.sample_calls[0]["n"] == 3 and scorer.sample_calls[0]["max_new_tokens"] == 5
        assert scorer.sample_calls[0]["seed"] == 1
    else:
        assert scorer.sample_calls == []


def test_limit_scores_the_first_items():
    res = run_benchmark("crows-pairs", PATHS["crows-pairs"], ConstantScorer(), limit=2)
    assert res.n_items == 2 and res.score("stereotype_preference").n == 2
    with pytest.raises(ValueError):
        run_benchmark("crows-pairs", PATHS["crows-pairs"], ConstantScorer(), limit=0)


def test_measure_lookup():
    res = run_benchmark("winobias", PATHS["winobias"], ConstantScorer())
    assert res.score("pro_preference", "type=2").n == 2
    with pytest.raises(KeyError):
        res.score("pro_preference", "type=3")


def test_unknown_name_and_bad_scorer():
    with pytest.raises(BenchmarkError, match="unknown benchmark 'winogender'"):
        run_benchmark("winogender", PATHS["bbq"], ConstantScorer())
    with pytest.raises(TypeError, match="scorer"):
        run_benchmark("bbq", PATHS["bbq"], object())  # type: ignore[arg-type]


def test_default_toxicity_names_the_package_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "profanity_check", None)  # makes the import fail
    with pytest.raises(BenchmarkError, match="pip install alt-profanity-check"):
        default_toxicity()
    with pytest.raises(BenchmarkError, match="pip install alt-profanity-check"):
        run_benchmark("toxigen", PATHS["toxigen"], ConstantScorer(), n=1)


def test_default_toxicity_with_the_package():
    pytest.importorskip("profanity_check")
    tox = default_toxicity()
    probs = tox(["what a lovely afternoon", "you are a fucking idiot"])
    assert len(probs) == 2 and all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in probs)
    assert probs[0] < 0.5 <= probs[1]
    assert tox([]) == []
