"""Hypothesis strategies that mutate valid files: byte flips, truncation, invalid UTF-8, field deletions,
type changes, NaN/Infinity, huge integers and deep nesting (shared by the fuzz tests)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Examples run per fuzz test (printed by each test, stated in README).
COUNTS: Counter[str] = Counter()

FUZZ = settings(
    deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

_BIG, _DEEP, _NAN = "\x00BIG\x00", "\x00DEEP\x00", "\x00NAN\x00"

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from([_BIG, _DEEP, _NAN, "L03H2", "L99H99", "L3H2\n", "L\u0663H2", "", "0.1", "../../x.jsonl", "<script>"]),
)
values = st.recursive(scalars, lambda v: st.one_of(st.lists(v, max_size=3), st.dictionaries(st.text(max_size=6), v, max_size=3)), max_leaves=6)


def _paths(raw: Any) -> list[tuple[Any, ...]]:
    out, stack = [], [((), raw)]
    while stack:
        where, v = stack.pop()
        out.append(where)
        if isinstance(v, dict):
            stack.extend(((*where, k), x) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend(((*where, i), x) for i, x in enumerate(v))
    return out


def _dumps(raw: Any) -> bytes:
    text = json.dumps(raw, allow_nan=True)
    text = text.replace(json.dumps(_BIG), "9" * 5000).replace(json.dumps(_DEEP), "[" * 5000 + "]" * 5000)
    return text.replace(json.dumps(_NAN), "NaN").encode("utf-8")


@st.composite
def mutated_json(draw: Any, raw: Any) -> bytes:
    """A valid JSON document with 1-3 structural mutations, then (sometimes) byte-level damage."""
    raw = json.loads(json.dumps(raw))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(raw) if p]
        if not paths:
            break
        where = draw(st.sampled_from(paths))
        parent = raw
        for k in where[:-1]:
            parent = parent[k]
        op = draw(st.sampled_from(["delete", "replace", "stringify", "nan", "wrap"]))
        key = where[-1]
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(values)
        elif op == "stringify":
            parent[key] = str(parent[key])
        elif op == "nan":
            parent[key] = draw(st.sampled_from([float("nan"), float("inf"), -float("inf"), _NAN, _BIG, 1e308, -0.0]))
        else:
            parent[key] = [parent[key]] if draw(st.booleans()) else {"x": parent[key]}
    data = _dumps(raw)
    return draw(damaged(data)) if draw(st.booleans()) else data


@st.composite
def damaged(draw: Any, data: bytes) -> bytes:
    """Byte-level damage: flips, truncation, invalid UTF-8, a deleted range, or nothing."""
    op = draw(st.sampled_from(["flip", "truncate", "utf8", "cut", "none"]))
    if not data or op == "none":
        return data
    i = draw(st.integers(0, len(data) - 1))
    if op == "flip":
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            j = draw(st.integers(0, len(b) - 1))
            b[j] ^= draw(st.integers(1, 255))
        return bytes(b)
    if op == "truncate":
        return data[:i]
    if op == "utf8":
        return data[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00"])) + data[i:]
    return data[:i] + data[i + draw(st.integers(1, 64)) :]
