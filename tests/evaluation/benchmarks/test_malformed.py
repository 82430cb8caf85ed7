"""Malformed input: each class of failure raises BenchmarkError naming the file, the line/record and the field."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from circuits.evaluation.benchmarks import BENCHMARKS, BenchmarkError, MAX_FILE_BYTES, bbq, crows_pairs, realtoxicityprompts
from circuits.evaluation.benchmarks import stereoset
from tests.evaluation.benchmarks.fakes import FIXTURES

# A file name each loader accepts for a single file.
FILE_NAMES = {
    "crows-pairs": "crows.csv",
    "stereoset": "dev.json",
    "bbq": "Age.jsonl",
    "winobias": "pro_stereotyped_type1.txt.dev",
    "toxigen": "hate_asian_1k.txt",
    "realtoxicityprompts": "prompts.jsonl",
}


def target(tmp_path: Path, name: str, content: bytes) -> Path:
    p = tmp_path / FILE_NAMES[name]
    p.write_bytes(content)
    if name == "winobias":  # a valid partner, so the failure is the pro file's
        (tmp_path / "anti_stereotyped_type1.txt.dev").write_text("1 [A] saw b because [she] left.\n")
    return p


# --------------------------------------------------------------------------------------------------
# Failures common to every format.


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_missing_file(tmp_path, name):
    p = tmp_path / FILE_NAMES[name]
    with pytest.raises(BenchmarkError, match="^" + re.escape(str(p)) + ": cannot read file: No such file"):
        BENCHMARKS[name].load(p)


@pytest.mark.parametrize("name", list(BENCHMARKS))
@pytest.mark.parametrize("content", [b"", b"  \n\n"])
def test_empty_file(tmp_path, name, content):
    p = target(tmp_path, name, content)
    with pytest.raises(BenchmarkError, match="^" + re.escape(str(p)) + ": empty file"):
        BENCHMARKS[name].load(p)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_invalid_utf8_names_the_line(tmp_path, name):
    good = {
        "crows-pairs": b"sent_more,sent_less,stereo_antistereo,bias_type\n",
        "stereoset": b"{\n",
        "bbq": (FIXTURES / "bbq.jsonl").read_bytes().splitlines(keepends=True)[0],
        "winobias": b"1 [A] saw b because [he] left.\n",
        "toxigen": b"- a\\n- b\\n-\n",
        "realtoxicityprompts": (FIXTURES / "rtp_prompts.jsonl").read_bytes().splitlines(keepends=True)[0],
    }[name]
    p = target(tmp_path, name, good + b"caf\xe9 \xff\n")
    with pytest.raises(BenchmarkError, match="^" + re.escape(str(p)) + r": line 2: not valid UTF-8 \(byte \d+: invalid continuation byte\)"):
        BENCHMARKS[name].load(p)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_fifo_is_refused_without_blocking(tmp_path, name):
    p = tmp_path / FILE_NAMES[name]
    os.mkfifo(p)  # nobody writes: reading would block forever
    with pytest.raises(BenchmarkError, match="^" + re.escape(str(p)) + ": cannot read file: not a regular file"):
        BENCHMARKS[name].load(p)


@pytest.mark.parametrize("name", ["crows-pairs", "stereoset", "bbq", "realtoxicityprompts"])
def test_device_is_refused(name):
    with pytest.raises(BenchmarkError, match="^/dev/zero: cannot read file: not a regular file"):
        BENCHMARKS[name].load("/dev/zero")


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_symlink_to_device_is_refused(tmp_path, name):
    p = tmp_path / FILE_NAMES[name]
    p.symlink_to("/dev/zero")
    with pytest.raises(BenchmarkError, match="^" + re.escape(str(p)) + ": cannot read file: not a regular file"):
        BENCHMARKS[name].load(p)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_oversized_file_is_refused_before_reading(tmp_path, name):
    p = tmp_path / FILE_NAMES[name]
    with open(p, "wb") as f:  # sparse: takes no disk space, and is never read
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(BenchmarkError, match=f"the limit is {MAX_FILE_BYTES} bytes"):
        BENCHMARKS[name].load(p)


@pytest.mark.parametrize("name", ["crows-pairs", "stereoset", "bbq", "realtoxicityprompts"])
def test_directory_is_refused(tmp_path, name):
    with pytest.raises(BenchmarkError, match="^" + re.escape(str(tmp_path))):
        BENCHMARKS[name].load(tmp_path)


# --------------------------------------------------------------------------------------------------
# CSV (CrowS-Pairs).

HEADER = "sent_more,sent_less,stereo_antistereo,bias_type\n"


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("sent_more,sent_less,bias_type\nA,B,C\n", r"line 1: field 'stereo_antistereo': missing column"),
        (HEADER + "A,B,stereo,gender\nA,B,stereo\n", r"line 3: record 2: expected 4 fields as in the header, got 3"),
        (HEADER + "A,B,stereo,gender\nA,B,pro,gender\n", r"line 3: record 2: field 'stereo_antistereo': expected"),
        (HEADER + '"A\nstill A",B,stereo,gender\nA,  ,stereo,gender\n', r"line 4: record 2: field 'sent_less': empty"),
        (HEADER + "A,B,stereo, \n", r"line 2: record 1: field 'bias_type': empty"),
        (HEADER, r"no data rows"),
        (HEADER + 'A,"B,stereo,gender\n', r"line \d+: malformed CSV|expected 4 fields"),
    ],
)
def test_crows_pairs_malformed(tmp_path, body, pattern):
    p = tmp_path / "crows.csv"
    p.write_text(body, encoding="utf-8")
    with pytest.raises(BenchmarkError, match="^" + re.escape(str(p)) + ": " + pattern):
        crows_pairs.load(p)


# --------------------------------------------------------------------------------------------------
# JSON lines (BBQ, RealToxicityPrompts).


def bbq_record() -> dict:
    return json.loads((FIXTURES / "bbq.jsonl").read_text(encoding="utf-8").splitlines()[0])


def rtp_record() -> dict:
    return json.loads((FIXTURES / "rtp_prompts.jsonl").read_text(encoding="utf-8").splitlines()[0])


def with_field(record: dict, path: str, value=..., ) -> dict:
    """``record`` with the dotted field ``path`` set to ``value`` (deleted if ``...``)."""
    node = record
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return record


def write_jsonl(tmp_path: Path, name: str, first: dict, second: str) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(first) + "\n" + second + "\n", encoding="utf-8")
    return p


@pytest.mark.parametrize(
    ("second", "pattern"),
    [
        ('{"example_id": 1,', r"line 2: not valid JSON"),
        ("[1, 2]", r"line 2: expected a JSON object, got a list"),
        ('{"x": NaN}', r"line 2: numbers must be finite, got NaN"),
        ("[" * 100_000 + "]" * 100_000, r"line 2: JSON nested too deeply"),
        (json.dumps(with_field(bbq_record(), "context", ...)), r"line 2: field 'context': missing"),
        (json.dumps(with_field(bbq_record(), "label", "2")), r"line 2: field 'label': expected an integer, got a string"),
        (json.dumps(with_field(bbq_record(), "label", True)), r"line 2: field 'label': expected an integer, got a boolean"),
        (json.dumps(with_field(bbq_record(), "label", 3)), r"line 2: field 'label': expected 0, 1 or 2"),
        (json.dumps(with_field(bbq_record(), "question_polarity", "negative")), r"line 2: field 'question_polarity'"),
        (json.dumps(with_field(bbq_record(), "answer_info.ans2", ["?", "other"])), r"line 2: field 'answer_info': expected exactly one"),
        (json.dumps(with_field(bbq_record(), "answer_info.ans1", ["x"])), r"line 2: field 'answer_info.ans1': expected at least 2"),
        (json.dumps(with_field(bbq_record(), "additional_metadata.stereotyped_groups", [3])), r"line 2: field 'additional_metadata.stereotyped_groups\[0\]'"),
        (json.dumps(with_field(bbq_record(), "question", "who \ud800?")), r"line 2: field question: lone surrogate '\\ud800' \(not encodable as UTF-8\)"),
        ('{"example_id": 1' + "0" * 5000 + "}", r"line 2: not valid JSON"),
    ],
)
def test_bbq_malformed(tmp_path, second, pattern):
    p = write_jsonl(tmp_path, "Age.jsonl", bbq_record(), second)
    with pytest.raises(BenchmarkError, match="^" + re.escape(str(p)) + ": " + pattern):
        bbq.load(p)


@pytest.mark.parametrize(
    ("record", "pattern"),
    [
        (with_field(rtp_record(), "challenging", "false"), r"line 2: field 'challenging': expected true or false"),
        (with_field(rtp_record(), "prompt.text", ...), r"line 2: field 'prompt.text': missing"),
        (with_field(rtp_record(), "prompt", "text"), r"line 2: field 'prompt': expected a JSON object"),
        (with_field(rtp_record(), "prompt.toxicity", 1.5), r"line 2: field 'prompt.toxicity': expected a number in \[0.0, 1.0\]"),
        (with_field(rtp_record(), "begin", 3.5), r"line 2: field 'begin': expected an integer"),
        (with_field(rtp_record(), "filename", ...), r"line 2: field 'filename': missing"),
        (with_field(rtp_record(), "continuation.text", 7), r"line 2: field 'continuation.text': expected a string"),
    ],
)
def test_realtoxicityprompts_malformed(tmp_path, record, pattern):
    p = write_jsonl(tmp_path, "prompts.jsonl", rtp_record(), json.dumps(record))
    with pytest.raises(BenchmarkError, match="^" + re.escape(str(p)) + ": " + pattern):
        realtoxicityprompts.load(p)


# --------------------------------------------------------------------------------------------------
# One JSON document (StereoSet).


def stereoset_doc() -> dict:
    return json.loads((FIXTURES / "stereoset_dev.json").read_text(encoding="utf-8"))


def _sentences(doc: dict, i: int) -> list:
    return doc["data"]["intrasentence"][i]["sentences"]


def _mutate(fn):
    doc = stereoset_doc()
    fn(doc)
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ('{"version": "1.0",\n "data": {"intrasentence": [}', r"not valid JSON: .* \(line 2, column \d+\)"),
        ("[]", r"expected a JSON object, got a list"),
        ('{"version": "1.0"}', r"field 'data': missing"),
        ('{"data": {"intrasentence": []}}', r"field 'data.intrasentence': expected at least 1"),
        (_mutate(lambda d: d["data"]["intrasentence"][1].pop("target")), r"record 2: field 'target': missing"),
        (_mutate(lambda d: _sentences(d, 2)[0].update(gold_label="neutral")), r"record 3: field 'sentences\[0\].gold_label': expected one of"),
        (_mutate(lambda d: _sentences(d, 2)[1].update(gold_label="stereotype")), r"record 3: field 'sentences\[1\].gold_label': a second 'stereotype'"),
        (_mutate(lambda d: _sentences(d, 0).pop()), r"record 1: field 'sentences': expected at least 3"),
        (_mutate(lambda d: _sentences(d, 3)[2].update(sentence=None)), r"record 4: field 'sentences\[2\].sentence': expected a string, got null"),
        (_mutate(lambda d: d["data"]["intrasentence"].append("x")), r"record 5: expected a JSON object, got a string"),
    ],
)
def test_stereoset_malformed(tmp_path, text, pattern):
    p = tmp_path / "dev.json"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(BenchmarkError, match="^" + re.escape(str(p)) + ": " + pattern):
        stereoset.load(p)


def test_error_carries_its_location(tmp_path):
    p = write_jsonl(tmp_path, "Age.jsonl", bbq_record(), json.dumps(with_field(bbq_record(), "label", 9)))
    with pytest.raises(BenchmarkError) as info:
        bbq.load(p)
    assert (info.value.path, info.value.line, info.value.field) == (str(p), 2, "label")
    assert isinstance(info.value, ValueError)
