"""ToxiGen prompts: parsing the literal-\\n format, group/label from names, toxic continuation rate."""

from __future__ import annotations

import pytest

from circuits.evaluation.benchmarks import BenchmarkError, toxigen
from tests.evaluation.benchmarks.fakes import FIXTURES, FakeScorer, table_toxicity

DIR = FIXTURES / "toxigen"


def test_parse_line_splits_on_literal_backslash_n():
    assert toxigen.parse_line(r"- one\n- two, with a comma\n-") == ("one", "two, with a comma")
    assert toxigen.parse_line(r"- only\n- ") == ("only",)
    with pytest.raises(ValueError):
        toxigen.parse_line(r"\n-")


def test_load_directory_reads_prompt_files_only():
    items = toxigen.load(DIR)  # notes.txt is ignored
    assert [(it.label, it.group, it.source, it.line) for it in items] == [
        ("hate", "asian", "hate_asian_1k.txt", 1),
        ("hate", "asian", "hate_asian_1k.txt", 2),
        ("hate", "women", "hate_women_1k.txt", 1),
        ("neutral", "asian", "neutral_asian_1k.txt", 1),
    ]
    assert len(items[0].statements) == 3
    assert items[1].prompt == (
        "- placeholder hateful statement four about asian people\n"
        "- placeholder hateful statement five about asian people\n-"
    )


def test_group_with_underscores_and_no_size(tmp_path):
    p = tmp_path / "neutral_mental_disability.txt"
    p.write_text(r"- a\n- b\n-" + "\n")
    assert toxigen.load(p)[0].group == "mental_disability"


def test_bad_file_name_is_reported(tmp_path):
    p = tmp_path / "asian_prompts.txt"
    p.write_text(r"- a\n-" + "\n")
    with pytest.raises(BenchmarkError, match="field 'file name'"):
        toxigen.load(p)


def test_line_without_statements_is_reported(tmp_path):
    p = tmp_path / "hate_asian_1k.txt"
    p.write_text(r"- a\n-" + "\n" + "no dash here\n")
    with pytest.raises(BenchmarkError, match=r"hate_asian_1k.txt: line 2: field 'prompt'"):
        toxigen.load(p)


def test_empty_directory_is_reported(tmp_path):
    with pytest.raises(BenchmarkError, match="no hate_"):
        toxigen.load(tmp_path)


def test_toxic_continuation_rate_per_label_and_group():
    items = toxigen.load(DIR)
    # Two continuations per prompt; each is cut at its first newline before classification.
    samples, probs = {}, {}
    per_prompt = [(0.9, 0.2), (0.6, 0.7), (0.0, 0.3), (0.1, 0.5)]  # rates 0.5, 1, 0, 0.5 (0.5 is toxic)
    for i, (it, ps) in enumerate(zip(items, per_prompt, strict=True)):
        texts = [f" continuation {i}-{j}" for j in range(2)]
        samples[it.prompt] = [texts[0] + "\n- another statement", "\n" + texts[1]]
        probs[texts[0].strip()], probs[texts[1].strip()] = ps
    scorer = FakeScorer(samples=samples)
    res = toxigen.score(items, scorer, toxicity=table_toxicity(probs), n=2, max_new_tokens=7, seed=5)
    assert scorer.sample_calls == [{"prompts": [it.prompt for it in items], "n": 2, "max_new_tokens": 7, "seed": 5}]
    m = {x.group: x for x in res}
    assert m[None].value == pytest.approx(0.5)
    assert m["label=hate"].value == pytest.approx(0.5)  # (0.5 + 1 + 0) / 3
    assert m["label=neutral"].value == pytest.approx(0.5)
    assert m["group=asian"].value == pytest.approx(2 / 3)
    assert m["group=women"].value == pytest.approx(0.0)
    assert m["group=asian,label=hate"].value == pytest.approx(0.75)
    assert m[None].unit == "fraction" and m[None].ideal == 0.0
    assert m[None].ci_low <= m[None].value <= m[None].ci_high
    assert m["group=women"].ci_low is None  # one prompt


def test_classifier_output_is_checked():
    items = toxigen.load(DIR)[:1]
    scorer = FakeScorer(samples={items[0].prompt: [" a", " b"]})
    with pytest.raises(BenchmarkError, match="not a probability"):
        toxigen.score(items, scorer, toxicity=lambda texts: [1.5] * len(texts), n=2)
    with pytest.raises(BenchmarkError, match="returned 1 values for 2"):
        toxigen.score(items, scorer, toxicity=lambda texts: [0.5], n=2)


def test_sampler_output_is_checked():
    items = toxigen.load(DIR)[:1]
    scorer = FakeScorer(samples={items[0].prompt: [" a"]})
    with pytest.raises(BenchmarkError, match="expected 2 strings"):
        toxigen.score(items, scorer, toxicity=lambda texts: [0.0] * len(texts), n=2)
