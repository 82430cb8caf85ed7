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


# --- issue 30: strategies for the second round (cases written for the project) -----------------------

import contextlib  # noqa: E402
import signal  # noqa: E402
import struct  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

_SURR = "\x00SURR\x00"


class Hang(Exception):
    """A case ran past its time limit (a hang, for the counts)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread after ``seconds`` (SIGALRM; a no-op where there is none)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def dumps_special(raw: Any) -> bytes:
    """JSON of ``raw`` with the sentinels of :func:`_dumps`, and ``_SURR`` as a lone-surrogate escape."""
    return _dumps(raw).replace(json.dumps(_SURR).encode(), b'"x\\ud800y"')


#: Component ids around a 1-layer, 2-head, d_mlp-16 model (the test atlas's): inside, outside, other kinds.
_IDS = ["L0H0", "L0H1", "L0MLP", "L0H2", "L1H0", "L5H0", "L0N3", "L0N99", "L0ATTN", "L0RESID@2", "L0H1.q", "L0H1@3", "INPUT", "LOGITS"]
_KINDS = ["head", "mlp", "neuron", "attn", "resid", "head_input", "input", "logits", "bogus"]
_SIZES = [0, 1, 2, 512, 513, 1e12, 10**12, 1e20, 2**63 - 1, -1, "2", None, True, 1.5]
_NUMBERS = [None, 0.0, 1.0, -1.0, 1e308, 1e-320, 2**63 - 1, True, "0.5", _NAN, _BIG]


@st.composite
def _circuit(draw: Any) -> dict[str, Any]:
    ids = draw(st.lists(st.sampled_from(_IDS), min_size=1, max_size=4, unique=True))
    nodes = [{"id": i, "layer": draw(st.sampled_from([-1, 0, 1, 3, 99])), "kind": draw(st.sampled_from(_KINDS))} for i in ids]
    edges = [{"sender": draw(st.sampled_from(ids)), "receiver": draw(st.sampled_from(ids)), "score": draw(st.sampled_from([0.5, -1.0, 1e308]))}
             for _ in range(draw(st.integers(0, 3)))]
    out = {"method": "eap_ig", "selection": "fuzz", "ablation": "corrupted", "n_edges_total": draw(st.sampled_from([0, 1, 5, 10**6])),
           "nodes": nodes, "edges": edges}
    for key in ("faithfulness", "completeness", "ratio"):
        if draw(st.booleans()):
            out[key] = draw(st.sampled_from(_NUMBERS))
    return out


@st.composite
def _trace(draw: Any) -> dict[str, Any]:
    n_tok = draw(st.integers(0, 4))
    return {"prompt": draw(st.sampled_from(["p", _SURR, "<script>"])), "subject": "s", "target": " t", "kind": draw(st.sampled_from(["resid", "mlp", "x"])),
            "window": draw(st.sampled_from([1, 0, 10**12])), "severed": False, "n_samples": draw(st.sampled_from([1, 2, 1e12])), "seed": draw(st.sampled_from([0, -1, 2**63 - 1, 1e30])),
            "noise_std": draw(st.sampled_from([0.3, 0.0, None])), "clean_prob": 0.3, "corrupted_prob": draw(st.sampled_from([0.01, None])),
            "tokens": [f"t{i}" for i in range(n_tok)], "subject_positions": draw(st.lists(st.integers(-2, 5), max_size=3)),
            "probs": [[0.1] * draw(st.sampled_from([n_tok, n_tok + 1])) for _ in range(draw(st.integers(0, 3)))]}


@st.composite
def atlas_semantic(draw: Any, raw: dict[str, Any]) -> bytes:
    """An atlas with 1-3 mutations aimed at what issue 30 found accepted: ids of another kind, circuits and
    traces outside the model, sizes as floats or beyond 64 bits, ``null`` numbers, lone surrogates, keys twice."""
    raw = json.loads(json.dumps(raw))
    b = raw["behaviours"][0]
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["kind", "id", "circuit", "trace", "size", "null", "surrogate", "count"]))
        c = b["components"][draw(st.integers(0, len(b["components"]) - 1))]
        if op == "kind":
            c["kind"] = draw(st.sampled_from(_KINDS))
        elif op == "id":
            c["id"] = draw(st.sampled_from(_IDS))
        elif op == "circuit":
            b["circuit"] = draw(_circuit())
        elif op == "trace":
            raw["traces"] = [draw(_trace())]
        elif op == "size":
            raw["model"][draw(st.sampled_from(["n_layers", "n_heads", "d_model", "d_mlp"]))] = draw(st.sampled_from(_SIZES))
        elif op == "null":
            target = draw(st.sampled_from([c["effect"], b, c["scores"] or c["effect"]]))
            target[draw(st.sampled_from(sorted(k for k in target if not isinstance(target[k], (dict, list)))))] = draw(st.sampled_from(_NUMBERS))
        elif op == "surrogate":
            target = draw(st.sampled_from([b, raw["provenance"], raw["model"]]))
            target[draw(st.sampled_from(["name", "command", "metric", "flag_rule"]) if target is not raw["model"] else st.just("name"))] = _SURR
        else:
            c["effect"]["n"] = draw(st.sampled_from(_SIZES))
    data = dumps_special(raw)
    if draw(st.booleans()):  # a key twice, somewhere
        key = draw(st.sampled_from([b'"mean": ', b'"id": ', b'"schema_version": ', b'"n_layers": ', b'"kind": ']))
        at = data.find(key)
        if at >= 0:
            data = data[:at] + key + b"0, " + data[at:]
    return data


#: Weight and tensor names of edits: the model's own, and the ones issue 30's fuzzing found applied without a check.
EDIT_TENSOR_NAMES = [
    "L0H0", "L0H1", "L1H2", "vector", "direction", "blocks.0.attn.o.weight.lora_A", "blocks.0.attn.o.weight.lora_B",
    "blocks.0.mlp.out.weight.delta", "../../etc/passwd.lora_A", "../../etc/passwd.lora_B", "blocks.99.attn.o.weight.delta",
    "blocks.\u00b2.attn.o.weight.delta", "blocks.\u0663.attn.o.weight.delta", "blocks.0.evil.o.weight.delta", "embed.bias.delta", ".delta",
]
EDIT_DTYPES = ["float32", "float16", "bfloat16", "float64", "float8_e4m3fn", "int64", "bool"]


@st.composite
def edit_tensors(draw: Any) -> dict[str, Any]:
    """``{name: tensor}`` drawn from :data:`EDIT_TENSOR_NAMES` with shapes of the tiny model and around it,
    dtypes of :data:`EDIT_DTYPES`, and values up to float32's largest (finite, yet overflowing logits)."""
    import torch

    out = {}
    for name in draw(st.lists(st.sampled_from(EDIT_TENSOR_NAMES), min_size=1, max_size=3, unique=True)):
        shape = draw(st.sampled_from([(8,), (32,), (2, 32), (32, 2), (32, 32), (64, 32), (3, 8), (0,), ()]))
        fill = draw(st.sampled_from([0.0, 1.0, -2.0, 1e30, 3e38, float("nan"), float("inf")]))
        dtype = getattr(torch, draw(st.sampled_from(EDIT_DTYPES)))
        base = torch.full(shape, fill) if dtype.is_floating_point else torch.zeros(shape)
        out[name] = base.to(dtype)
    return out


HYPERPARAMETER_VALUES = [0.5, -1.0, 0.0, 1e6, 1e6 + 1, 1e308, -1e308, 2**62, 2**63 - 1, -1, "mean", "zero", "resample", "bogus", True, "\x00SURR\x00"]


@st.composite
def text_damaged(draw: Any, data: bytes) -> bytes:
    """Text-level damage issue 30 found mishandled: lone-surrogate escapes, U+2028/U+2029 inside strings,
    bare carriage returns, a BOM, NUL, a key or column twice."""
    text = data.decode("utf-8")
    op = draw(st.sampled_from(["surrogate", "u2028", "u2029", "cr", "crlf", "bom", "nul", "dupkey", "dupcol", "quote"]))
    i = draw(st.integers(0, len(text)))
    insert = {"surrogate": "\\ud800", "u2028": "\u2028", "u2029": "\u2029", "cr": "\r", "crlf": "\r\n", "bom": "\ufeff", "nul": "\x00",
              "quote": '"'}.get(op)
    if insert is not None:
        text = text[:i] + insert + text[i:]
    elif op == "dupkey":
        text = text.replace('"clean": ', '"clean": "x", "clean": ', 1)
    else:
        first, _, rest = text.partition("\n")
        text = first + ",clean\n" + rest if "," in first else text
    return text.encode("utf-8")


@st.composite
def gguf_damaged(draw: Any, data: bytes) -> bytes:
    """A GGUF file with its header fields rewritten (version, counts, a metadata length) or byte damage."""
    op = draw(st.sampled_from(["version", "tensors", "kvs", "keylen", "bytes", "truncate"]))
    b = bytearray(data)
    big = st.sampled_from([0, 1, 2, 3, 99, 2**31, 2**32 - 1, 2**40, 2**63, 2**64 - 1])
    if op == "version":
        b[4:8] = struct.pack("<I", draw(big) % 2**32)
    elif op == "tensors":
        b[8:16] = struct.pack("<Q", draw(big) % 2**64)
    elif op == "kvs":
        b[16:24] = struct.pack("<Q", draw(big) % 2**64)
    elif op == "keylen":
        b[24:32] = struct.pack("<Q", draw(big) % 2**64)
    elif op == "truncate":
        return bytes(b[: draw(st.integers(0, len(b) - 1))])
    else:
        return draw(damaged(bytes(b)))
    return bytes(b)


def tiny_model_dir(directory: Path) -> Path:
    """A saved tiny Llama (2 layers, d_model 32, vocabulary 64, word-level tokenizer): loads in a fraction of a second."""
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from circuits.model.tiny import tiny_hf_config

    words = Tokenizer(WordLevel({f"w{i}": i for i in range(64)}, unk_token="w0"))
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="w0", pad_token="w1", eos_token="w2", bos_token="w3").save_pretrained(str(directory))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(tiny_hf_config("llama", vocab_size=64)).save_pretrained(str(directory), safe_serialization=True)
    return directory
