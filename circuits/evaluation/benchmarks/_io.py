"""Defensive reading of user-supplied benchmark files: every failure becomes a :class:`BenchmarkError`.

The reading, decoding and JSON parsing are the project's one implementation, :mod:`circuits.io`; this
module adds what benchmark files need on top and turns each failure into a :class:`BenchmarkError`
located at the file (and line):

* :func:`read_text` reads with :func:`circuits.io.read_bounded` (regular files only, at most
  :data:`~circuits.evaluation.benchmarks.base.MAX_FILE_BYTES`, refused before reading) and
  :func:`circuits.io.decode_utf8` (strict UTF-8, an optional BOM dropped, the line of the first invalid
  byte named), and refuses empty files.
* :func:`split_lines` splits on ``\\n`` only (``\\r\\n`` tolerated), so line numbers match an editor's.
* :func:`parse_json` is :func:`circuits.io.parse_json`: syntax errors, ``NaN``/``Infinity``, overflowing
  numbers, over-long integers and over-deep nesting are refused.
* :class:`Fields` reads typed fields of a JSON object, naming the dotted field path on failure.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from circuits import io
from circuits.evaluation.benchmarks import base
from circuits.evaluation.benchmarks.base import BenchmarkError


def _fail(path: Path | str, message: str, **where: Any) -> NoReturn:
    raise BenchmarkError(message, path=path, **where)


class _IOFailure(ValueError):
    """The ``error=`` given to :mod:`circuits.io`; :func:`_located` turns it into a :class:`BenchmarkError`."""


@contextlib.contextmanager
def _located(path: Path | str, *, line: int | None = None) -> Iterator[None]:
    """Turn a :mod:`circuits.io` failure about ``path`` into a :class:`BenchmarkError` located there.

    :mod:`circuits.io` names the file inside its messages (``"cannot read file PATH: ..."``,
    ``"PATH: line 2: ..."``); :class:`BenchmarkError` puts the path (and line) first, so they are taken
    out of the message and kept as attributes instead.
    """
    try:
        yield
    except _IOFailure as e:
        message = str(e).removeprefix(f"{path}: ").replace(f"file {path}", "file", 1)
        if line is None and (m := re.match(r"line (\d+): ", message)):
            line, message = int(m.group(1)), message[m.end() :]
        _fail(path, message, line=line)


def check_text(value: str, path: Path | str, **where: Any) -> str:
    """Return ``value`` if it is encodable UTF-8 (JSON ``\\ud800`` escapes give lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _fail(path, "invalid Unicode (unpaired surrogate)", **where)
    return value


def read_text(path: Path | str) -> str:
    """The text of a regular, non-blank UTF-8 file of at most ``MAX_FILE_BYTES`` (a leading BOM is dropped).

    Raises:
        BenchmarkError: Missing, unreadable, not a regular file or too large (:func:`circuits.io.read_bounded`),
            invalid UTF-8 (with its line and byte offset), or empty or only whitespace.
    """
    with _located(path):
        data = io.read_bounded(path, error=_IOFailure, max_bytes=base.MAX_FILE_BYTES)
        text = io.decode_utf8(data, error=_IOFailure, source=str(path), strip_bom=True)
    if not text.strip():
        _fail(path, "empty file")
    return text


def split_lines(text: str) -> list[str]:
    """Lines of ``text`` split on ``\\n`` (a trailing ``\\r`` is removed), numbered from 1 by position."""
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]


def parse_json(text: str, path: Path | str, *, line: int | None = None) -> Any:
    """:func:`circuits.io.parse_json` with every failure turned into :class:`BenchmarkError`.

    Args:
        text: The JSON text (a whole document, or one JSONL line).
        path: The file, for messages.
        line: For a JSONL line, its line number.

    Raises:
        BenchmarkError: Invalid JSON, NaN/Infinity or overflowing numbers, too-long integers or too-deep nesting.
    """
    with _located(path, line=line):
        value = io.parse_json(text, error=_IOFailure, source=str(path))
    return value


def read_jsonl(path: Path | str) -> list[tuple[int, Any]]:
    """``(line number, decoded value)`` for every non-blank line of a JSON-lines file.

    Raises:
        BenchmarkError: As :func:`read_text` and :func:`parse_json`.
    """
    out = []
    for i, ln in enumerate(split_lines(read_text(path)), start=1):
        if ln.strip():
            out.append((i, parse_json(ln, path, line=i)))
    if not out:
        _fail(path, "no records")
    return out


class Fields:
    """Typed access to the fields of one JSON object, with the location used in every error.

    Args:
        obj: The decoded value (must be a dict, checked here).
        path: The file.
        line: Line number (JSONL) or None.
        record: Record number, from 1, or None.
        prefix: Dotted path of ``obj`` inside the record (``""`` for the record itself).
    """

    def __init__(
        self, obj: Any, path: Path | str, *, line: int | None = None, record: int | None = None, prefix: str = ""
    ) -> None:
        self.path, self.line, self.record, self.prefix = path, line, record, prefix
        if not isinstance(obj, dict):
            self.fail(None, f"expected a JSON object, got {_kind(obj)}")
        self.obj: dict[str, Any] = obj

    def name(self, key: str | None) -> str | None:
        """Dotted field path of ``key``."""
        if key is None:
            return self.prefix or None
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, key: str | None, message: str) -> NoReturn:
        """Raise a :class:`BenchmarkError` located at field ``key``."""
        raise BenchmarkError(message, path=self.path, line=self.line, record=self.record, field=self.name(key))

    def get(self, key: str) -> Any:
        """The raw value of a required field."""
        if key not in self.obj:
            self.fail(key, "missing")
        return self.obj[key]

    def text(self, key: str, *, allow_empty: bool = False) -> str:
        """A string field (non-blank unless ``allow_empty``)."""
        v = self.get(key)
        if not isinstance(v, str):
            self.fail(key, f"expected a string, got {_kind(v)}")
        if not allow_empty and not v.strip():
            self.fail(key, "empty")
        return check_text(v, self.path, line=self.line, record=self.record, field=self.name(key))

    def integer(self, key: str) -> int:
        """An integer field (not a bool, not a float)."""
        v = self.get(key)
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(key, f"expected an integer, got {_kind(v)}")
        return v

    def boolean(self, key: str) -> bool:
        """A boolean field."""
        v = self.get(key)
        if not isinstance(v, bool):
            self.fail(key, f"expected true or false, got {_kind(v)}")
        return v

    def number(self, key: str, *, optional: bool = False, lo: float = -math.inf, hi: float = math.inf) -> float | None:
        """A finite number in ``[lo, hi]``; None if ``optional`` and missing or null."""
        if optional and self.obj.get(key) is None:
            return None
        v = self.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail(key, f"expected a number, got {_kind(v)}")
        try:
            f = float(v)
        except OverflowError:
            self.fail(key, "number out of range")
        if not (lo <= f <= hi):
            self.fail(key, f"expected a number in [{lo}, {hi}], got {f}")
        return f

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        """A string field that must be one of ``allowed``."""
        v = self.get(key)
        if v not in allowed or not isinstance(v, str):
            self.fail(key, f"expected one of {', '.join(map(repr, allowed))}, got {_short(v)}")
        return v

    def array(self, key: str, *, min_len: int = 0) -> list[Any]:
        """A list field with at least ``min_len`` elements."""
        v = self.get(key)
        if not isinstance(v, list):
            self.fail(key, f"expected a list, got {_kind(v)}")
        if len(v) < min_len:
            self.fail(key, f"expected at least {min_len} elements, got {len(v)}")
        return v

    def sub(self, key: str) -> Fields:
        """The object at ``key`` as :class:`Fields`."""
        return Fields(self.get(key), self.path, line=self.line, record=self.record, prefix=self.name(key) or "")

    def element(self, key: str, index: int, value: Any) -> Fields:
        """Element ``index`` (``value``, an object) of the list at ``key`` as :class:`Fields`."""
        return Fields(value, self.path, line=self.line, record=self.record, prefix=f"{self.name(key)}[{index}]")


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__
    )


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."
