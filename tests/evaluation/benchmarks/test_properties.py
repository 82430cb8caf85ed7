"""Property tests: every loader returns items or raises BenchmarkError on any input, never another error."""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from circuits.evaluation.benchmarks import BenchmarkError, bbq, crows_pairs, realtoxicityprompts, stereoset, toxigen, winobias
from tests.evaluation.benchmarks.fakes import FIXTURES

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
# Text near the formats' syntax, so that random input gets past the first checks.
format_text = st.text(alphabet=st.sampled_from(list('ab ,"\n\r\\-[]01{}:stereo')) | st.characters(), max_size=200)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("properties")


def loads_or_benchmark_error(load, *args) -> None:
    try:
        items = load(*args)
    except BenchmarkError:
        event("raised BenchmarkError")
        return
    event("loaded")
    assert isinstance(items, list) and items


def mutate(data: st.DataObject, obj):
    """``obj`` with one randomly chosen field, at a random depth, replaced by random JSON or deleted."""
    obj = copy.deepcopy(obj)
    node = obj
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return obj
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and data.draw(st.booleans()):
            node = child
            continue
        if data.draw(st.booleans()):
            node[key] = data.draw(json_values)
        elif isinstance(node, dict):
            del node[key]
        else:
            node.pop(key)
        return obj


def write(path: Path, content: bytes | str) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8", "surrogatepass")
    path.write_bytes(content)
    return path


# --------------------------------------------------------------------------------------------------

BBQ_LINE = (FIXTURES / "bbq.jsonl").read_text(encoding="utf-8").splitlines()[0]
RTP_LINE = (FIXTURES / "rtp_prompts.jsonl").read_text(encoding="utf-8").splitlines()[0]
STEREOSET = json.loads((FIXTURES / "stereoset_dev.json").read_text(encoding="utf-8"))
CROWS_HEADER = (FIXTURES / "crows_pairs.csv").read_text(encoding="utf-8").splitlines()[0]


@SETTINGS
@given(content=st.binary(max_size=300) | format_text)
def test_crows_pairs_random_bytes(workdir, content):
    loads_or_benchmark_error(crows_pairs.load, write(workdir / "crows.csv", content))


@SETTINGS
@given(body=format_text)
def test_crows_pairs_random_rows(workdir, body):
    loads_or_benchmark_error(crows_pairs.load, write(workdir / "crows.csv", CROWS_HEADER + "\n" + body))


def csv_rows(rows) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


crows_rows = st.lists(
    (st.just([]) | st.just([]) | st.just([]) | st.lists(st.text(max_size=8), min_size=1, max_size=1)).flatmap(
        lambda extra: st.tuples(
            st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20),
            st.sampled_from(["stereo", "antistereo", "stereo", "antistereo", "pro", " "]),
            st.text(min_size=1, max_size=8),
        ).map(lambda row: [*row, *extra])
    ),
    max_size=5,
)


crows_headers = st.sampled_from(
    [CROWS_HEADER.split(",")[1:5], ["sent_more", "sent_less", "bias_type", "stereo_antistereo"], ["a", "b", "c", "d"]]
)


@SETTINGS
@given(rows=crows_rows, header=crows_headers)
def test_crows_pairs_structured_rows(workdir, rows, header):
    loads_or_benchmark_error(crows_pairs.load, write(workdir / "crows.csv", csv_rows([header, *rows])))


@SETTINGS
@given(content=st.binary(max_size=300) | format_text | json_values.map(json.dumps))
def test_stereoset_random_documents(workdir, content):
    loads_or_benchmark_error(stereoset.load, write(workdir / "dev.json", content))


@SETTINGS
@given(data=st.data())
def test_stereoset_mutated_documents(workdir, data):
    doc = mutate(data, STEREOSET)
    loads_or_benchmark_error(stereoset.load, write(workdir / "dev.json", json.dumps(doc)))


@SETTINGS
@given(content=st.binary(max_size=300) | format_text | json_values.map(json.dumps))
def test_bbq_random_lines(workdir, content):
    loads_or_benchmark_error(bbq.load, write(workdir / "Age.jsonl", content))


@SETTINGS
@given(data=st.data())
def test_bbq_mutated_records(workdir, data):
    rec = mutate(data, json.loads(BBQ_LINE))
    loads_or_benchmark_error(bbq.load, write(workdir / "Age.jsonl", BBQ_LINE + "\n" + json.dumps(rec) + "\n"))


@SETTINGS
@given(content=st.binary(max_size=300) | format_text | json_values.map(json.dumps))
def test_realtoxicityprompts_random_lines(workdir, content):
    loads_or_benchmark_error(realtoxicityprompts.load, write(workdir / "prompts.jsonl", content))


@SETTINGS
@given(data=st.data())
def test_realtoxicityprompts_mutated_records(workdir, data):
    rec = mutate(data, json.loads(RTP_LINE))
    loads_or_benchmark_error(realtoxicityprompts.load, write(workdir / "prompts.jsonl", json.dumps(rec)))


@SETTINGS
@given(pro=st.binary(max_size=200) | format_text, anti=st.binary(max_size=200) | format_text)
def test_winobias_random_files(workdir, pro, anti):
    write(workdir / "pro_stereotyped_type1.txt.dev", pro)
    write(workdir / "anti_stereotyped_type1.txt.dev", anti)
    loads_or_benchmark_error(winobias.load, workdir / "pro_stereotyped_type1.txt.dev")


@SETTINGS
@given(content=st.binary(max_size=300) | format_text)
def test_toxigen_random_files(workdir, content):
    loads_or_benchmark_error(toxigen.load, write(workdir / "hate_asian_1k.txt", content))


wino_text = st.lists(st.sampled_from(["a", "b", " ", "[a b]", "[", "]", "\u00e9", "\t"]), max_size=8).map("".join)
wino_files = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 3) | st.none(), wino_text, wino_text), max_size=4
).map(  # the anti line keeps the pro line's number unless another is drawn
    lambda rows: (
        "".join(f"{n} {p}\n" for n, _, p, _ in rows),
        "".join(f"{n if m is None else m} {a}\n" for n, m, _, a in rows),
    )
)


@SETTINGS
@given(files=wino_files)
def test_winobias_structured_files(workdir, files):
    write(workdir / "pro_stereotyped_type2.txt.test", files[0])
    write(workdir / "anti_stereotyped_type2.txt.test", files[1])
    loads_or_benchmark_error(winobias.load, workdir / "anti_stereotyped_type2.txt.test")


toxigen_lines = st.lists(
    st.lists(st.text(max_size=15), max_size=4).map(lambda ss: "- " + "\\n- ".join(ss) + "\\n-"), max_size=4
).map("\n".join)


@SETTINGS
@given(content=toxigen_lines, name=st.sampled_from(["hate_asian_1k.txt", "neutral_mental_disability.txt", "hate.txt"]))
def test_toxigen_structured_files(workdir, content, name):
    loads_or_benchmark_error(toxigen.load, write(workdir / name, content))
