"""Pair files (JSONL, JSON, CSV), Python constructors, seeded splits, and one clear error per malformed input."""

from __future__ import annotations

import csv
import json
import os

import pandas as pd
import pytest

from circuits.suites import PromptPair, Suite, SuiteError, load_suite, parse_suite

PAIRS = [
    {"clean": "The nurse said that", "corrupted": "The pilot said that", "answer": " she was tired", "wrong_answer": " he was tired", "group": "t1", "split": "build"},
    {"clean": "The maid told us that", "corrupted": "The miner told us that", "answer": " she", "wrong_answer": " he", "group": "t2", "split": "build", "metadata": {"source": "hand"}},
    {"clean": "I asked the clerk whether", "corrupted": "I asked the guard whether", "answer": " she", "wrong_answer": " he", "group": "t3", "split": "eval"},
]


def _write(tmp_path, fmt, records):
    path = tmp_path / f"pairs.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    elif fmt == "json":
        path.write_text(json.dumps(records))
    else:
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["clean", "corrupted", "answer", "wrong_answer", "group", "split", "metadata"])
            w.writeheader()
            for r in records:
                w.writerow({**r, "metadata": json.dumps(r["metadata"]) if "metadata" in r else ""})
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_every_file_format_gives_the_same_suite(tmp_path, fmt):
    s = load_suite(_write(tmp_path, fmt, PAIRS))
    assert s.name == "pairs" and s.kind == "harmful" and s.metric.name == "auto" and s.split_rule == "given"
    build, ev = s.pairs("build"), s.pairs("eval")
    assert [p.clean for p in build] == [PAIRS[0]["clean"], PAIRS[1]["clean"]] and ev[0].corrupted == PAIRS[2]["corrupted"]
    assert build[0].answer == " she was tired" and build[1].metadata == {"source": "hand"} and build[0].group == "t1"
    assert s.content_hash == load_suite(_write(tmp_path / "again", fmt, PAIRS) if (tmp_path / "again").mkdir() is None else None).content_hash


def test_json_object_form_names_the_suite_and_its_metric(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "my-bias", "kind": "spurious", "metric": "logprob_diff", "pairs": PAIRS}))
    s = load_suite(path)
    assert s.name == "my-bias" and s.kind == "spurious" and s.metric.name == "logprob_diff"


def test_without_splits_a_seeded_split_by_group_or_record_is_made_and_recorded():
    rows = [{k: v for k, v in p.items() if k != "split"} for p in PAIRS] * 4
    a = Suite.from_pairs("x", rows, seed=3)
    assert a.split_rule.startswith("seeded split by group (seed 3")
    groups = {sp: {p.group for p in a.pairs(sp)} for sp in ("build", "eval")}
    assert groups["build"] and groups["eval"] and not groups["build"] & groups["eval"]
    assert a == Suite.from_pairs("x", rows, seed=3)  # seeded: the same split again
    b = Suite.from_pairs("x", rows, split_by="record", seed=3)
    assert b.split_rule.startswith("seeded split by record") and len(b.pairs("build")) + len(b.pairs("eval")) == len(rows)
    with pytest.raises(SuiteError, match="every pair or for none"):
        Suite.from_pairs("x", [PAIRS[0], {k: v for k, v in PAIRS[1].items() if k != "split"}])


def test_from_dataframe_and_from_prompt_pairs():
    s = Suite.from_dataframe(pd.DataFrame(PAIRS), "df")
    assert [p.clean for p in s.records] == [p["clean"] for p in PAIRS]
    t = Suite.from_pairs("pp", [PromptPair("a b", "a c", " d", " e", "g", "build"), PromptPair("x y", "x z", " d", " e", "h", "eval")])
    assert t.pairs("eval")[0].clean == "x y"


@pytest.mark.parametrize(
    "content, fmt, message",
    [
        ('{"clean": "a", "corrupted": "b", "answer": " c"}\n', "jsonl", r"line 1: field wrong_answer: Field required"),
        ('{"clean": "a", "corrupted": "b", "answer": " c", "wrong_answer": " d"}\n{"clean": "a"\n', "jsonl", r"line 2: not valid JSON"),
        ('[{"clean": "a", "corrupted": "b", "answer": " c", "wrong_answer": " d", "split": "test"}]', "json", r"record 1: field split"),
        ('[{"clean": "", "corrupted": "b", "answer": " c", "wrong_answer": " d"}]', "json", r"record 1: field clean"),
        ('[3]', "json", r"record 1: a record must be an object"),
        ('{"pairs": [], "name": "x"}', "json", r"no pairs"),
        ('{"pairs": [], "colour": "x"}', "json", r"unknown fields \['colour'\]"),
        ("clean,corrupted,answer,wrong_answer,colour\na,b,c,d,e\n", "csv", r"line 1: unknown columns \['colour'\]"),
        ("clean,corrupted,answer,wrong_answer\na,b,c\n", "csv", r"line 2: field wrong_answer"),
        ("", "csv", r"empty CSV"),
        ('{"x": 1}', "json", r"expected a list of pair records"),
    ],
)
def test_malformed_files_get_one_clear_error_naming_file_record_and_field(tmp_path, content, fmt, message):
    path = tmp_path / f"bad.{fmt}"
    path.write_text(content)
    with pytest.raises(SuiteError, match=message) as e:
        load_suite(path)
    assert str(path) in str(e.value)


def test_unreadable_inputs_are_refused_cleanly(tmp_path):
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes(b'{"clean": "caf\xe9"}\n')
    with pytest.raises(SuiteError, match="line 1: not valid UTF-8"):
        load_suite(bad)
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(SuiteError, match="not a regular file"):
        load_suite(fifo)
    with pytest.raises(SuiteError, match="must end in"):
        load_suite(tmp_path / "pairs.txt")
    with pytest.raises(SuiteError, match="cannot read"):
        load_suite(tmp_path / "missing.jsonl")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SuiteError, match="deeply|not valid JSON"):
        load_suite(deep)


def test_template_suites_expand_to_the_same_records_as_before():
    s = load_suite("gender-occupation")
    first = s.pairs("build")[0]
    assert (first.clean, first.corrupted, first.answer, first.wrong_answer, first.group) == (
        "The nurse said that", "The mechanic said that", " she", " he", "The {occupation} said that")
    assert parse_suite(json.dumps(json.loads(json.dumps(s.spec.model_dump())))).records == s.records
