"""File input and output: atomic writes, and bounded, strict reads of JSON artifacts.

Every file circuit-atlas writes goes through :mod:`circuits.atomic` (re-exported here): a temporary
sibling, fsynced, renamed into place.

Every JSON artifact circuit-atlas reads from a user's path (atlases, edit manifests, suite files) goes
through :func:`read_json_file`: only regular files (no FIFO, ``/dev/zero`` or directory), at most
:data:`MAX_JSON_BYTES`, read with a bounded read; UTF-8; strict JSON with finite numbers only (``NaN``,
``Infinity`` and overflowing literals such as ``1e999`` are refused), no key twice in one object (JSON
parsers disagree on which one wins), nesting at most :data:`MAX_JSON_DEPTH` levels, integers within 64
bits, and no lone surrogate (``"\\ud800"`` parses, but cannot be written back as UTF-8). Every failure
raises the caller's error type (``AtlasError``, ``EditError``, ``SuiteError``) naming the file and, where
there is one, the field.

Every path a command writes to is checked first by :func:`check_output_path`: not one of the command's
inputs (symlinks and hard links resolved), not an existing device, FIFO, socket or directory, in a
writable directory.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from circuits.atomic import (  # noqa: F401 - re-exported
    atomic_directory,
    atomic_write_bytes,
    atomic_write_text,
    not_regular_reason,
    read_bounded,
)


def validation_message(error: ValidationError) -> str:
    """``"field a.b.c: message"`` for the first error of a pydantic validation (one clear error)."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    return f"field {where}: {first['msg']}"


# --- Reading: one bounded, validated path for every file a user can hand us ------------------------

#: Largest JSON artifact read (atlas, edit manifest, suite file, config): refused before reading.
MAX_JSON_BYTES = 64 * 2**20
#: Largest tensor file read (edit tensors, checkpoints).
MAX_TENSOR_BYTES = 4 * 2**30
#: Deepest JSON nesting accepted (atlases need 7 levels; 64 leaves room and stops stack exhaustion).
MAX_JSON_DEPTH = 64
#: Largest magnitude of a JSON integer (64-bit); bigger ones are refused instead of overflowing later.
MAX_JSON_INT = 2**63


def decode_utf8(data: bytes, *, error: type[Exception] = ValueError, source: str = "<bytes>", strip_bom: bool = False) -> str:
    """UTF-8 text of ``data``, or ``error`` naming the line and byte of the first invalid sequence.

    With ``strip_bom``, a leading UTF-8 byte order mark is dropped (files saved by some Windows editors
    start with one); byte offsets in messages then count from after it.
    """
    if strip_bom and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise error(f"{source}: line {line}: not valid UTF-8 (byte {e.start}: {e.reason})") from None


def _reject_constant(name: str) -> Any:
    raise _NonFinite(name)


class _NonFinite(ValueError):
    pass


class _Object(dict):
    """A parsed JSON object that had a key twice (the first repeated key is kept for the message)."""

    duplicate: str = ""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = _Object(pairs)
    if len(out) == len(pairs):
        return dict(out)
    seen: set[str] = set()
    out.duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    return out


#: A UTF-16 surrogate on its own: valid in a JSON ``\\u`` escape, not encodable as UTF-8.
SURROGATE = re.compile("[\ud800-\udfff]")


def _field(where: tuple[Any, ...]) -> str:
    return ".".join(map(str, where)) or "<root>"


def check_json_value(value: Any, *, error: type[Exception] = ValueError, source: str = "<json>", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Check a JSON value (parsed, or about to be written): what is accepted can be written and read back.

    Nesting depth, finite floats (``1e999`` parses to ``inf``), 64-bit integers, no key twice in one
    object (as parsed by :func:`parse_json`), and no lone surrogate in a string or key. Iterative, so a
    deep value cannot exhaust the stack.

    Returns:
        ``value``.

    Raises:
        error: ``source: field a.b.c: ...`` for the first violation.
    """
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        v, where = stack.pop()
        if len(where) > max_depth:
            raise error(f"{source}: JSON nested deeper than {max_depth} levels")
        if isinstance(v, dict):
            if isinstance(v, _Object) and v.duplicate:
                raise error(f"{source}: field {_field(where)}: key {v.duplicate[:40]!r} appears twice")
            for k in v:
                if isinstance(k, str) and SURROGATE.search(k):
                    raise error(f"{source}: field {_field(where)}: a key holds a lone surrogate (not encodable as UTF-8)")
            stack.extend((x, (*where, k)) for k, x in v.items())
        elif isinstance(v, (list, tuple)):
            stack.extend((x, (*where, i)) for i, x in enumerate(v))
        elif isinstance(v, str):
            if SURROGATE.search(v):
                raise error(f"{source}: field {_field(where)}: lone surrogate {v[SURROGATE.search(v).start()]!r} (not encodable as UTF-8)")  # type: ignore[union-attr]
        elif isinstance(v, float) and not math.isfinite(v):
            raise error(f"{source}: field {_field(where)}: numbers must be finite, got {v}")
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) >= MAX_JSON_INT:
            raise error(f"{source}: field {_field(where)}: integer beyond 64 bits")
    return value


def parse_json(text: str | bytes, *, error: type[Exception] = ValueError, source: str = "<string>", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON strictly: ``NaN``/``Infinity`` refused, depth and integer size bounded, one error type.

    Non-finite numbers are refused rather than stored: JSON has no spelling for them, and files that
    hold them cannot be read by other tools.

    Args:
        text: JSON text, or UTF-8 bytes.
        error: Exception type raised (the artifact's error).
        source: How messages name the input.
        max_depth: Deepest nesting accepted.

    Returns:
        The parsed value.

    Raises:
        error: Invalid UTF-8, invalid JSON (with line and column), ``NaN``/``Infinity``, a key twice in
            one object, a lone surrogate, too deep, or an integer with too many digits.
    """
    if isinstance(text, bytes):
        text = decode_utf8(text, error=error, source=source)
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_object)
    except _NonFinite as e:
        raise error(f"{source}: numbers must be finite, got {e}") from None
    except json.JSONDecodeError as e:
        raise error(f"{source}: not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise error(f"{source}: JSON nested too deeply") from None
    except ValueError as e:  # integers with more digits than Python converts
        raise error(f"{source}: not valid JSON: {str(e).split(';')[0]}") from None
    return check_json_value(value, error=error, source=source, max_depth=max_depth)


def read_json_file(path: Path | str, *, error: type[Exception] = ValueError, max_bytes: int = MAX_JSON_BYTES, what: str = "file") -> Any:
    """:func:`read_bounded` then :func:`parse_json`: the one way a JSON artifact is read.

    Raises:
        error: Any problem, naming the file (see :func:`read_bounded` and :func:`parse_json`).
    """
    return parse_json(read_bounded(path, error=error, max_bytes=max_bytes, what=what), error=error, source=str(path))


# --- Writing: where an output may go ---------------------------------------------------------------


class OutputPathError(ValueError):
    """An output path that must not be written: one of the inputs, a device or FIFO, an unwritable place."""


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    """``(resolved path, (device, inode) or None)``: what two paths must share to be the same file."""
    try:
        info = os.stat(path)
        ident: tuple[int, int] | None = (info.st_dev, info.st_ino)
    except (OSError, ValueError):
        ident = None
    return os.path.realpath(path), ident


def same_or_inside(path: Path | str, other: Path | str) -> bool:
    """Whether ``path`` is ``other`` (symlinks and hard links resolved) or lies inside the directory ``other``."""
    (p, pid), (o, oid) = _identity(Path(path)), _identity(Path(other))
    if p == o or (pid is not None and pid == oid):
        return True
    return os.path.isdir(o) and os.path.commonpath([p, o]) == o


def check_output_path(
    path: Path | str, *, inputs: Iterable[Path | str | None] = (), directory: bool = False, suffix: str | None = None
) -> None:
    """Check an output path before any work, so that a run neither destroys an input nor fails at its end.

    A file output must not resolve (through symlinks and hard links) to one of ``inputs`` or lie
    inside an input directory, must not be an existing directory, device, FIFO or socket, must have
    ``suffix`` if one is required, and its nearest existing ancestor must be a writable directory
    (missing parents are created on write). A directory output (``directory=True``) must not exist as
    anything but an empty directory, nor be or hold an input.

    Args:
        path: The output.
        inputs: Files and directories the command reads (``None`` entries and missing paths are skipped).
        directory: The output is a directory.
        suffix: The suffix a file output must have (e.g. ``".json"``).

    Raises:
        OutputPathError: The first problem, naming the path (the caller adds the option name).
    """
    path = Path(path)
    for given in inputs:
        if given is None or not os.path.lexists(given):
            continue
        if same_or_inside(path, given) or (directory and same_or_inside(given, path)):
            same = _identity(path)[0] == _identity(Path(given))[0] or _identity(path)[1] == _identity(Path(given))[1]
            raise OutputPathError(f"{path}: is {'' if same else 'inside '}the input {given}; writing there would destroy it — choose another output")
    if suffix is not None and path.suffix != suffix:
        raise OutputPathError(f"{path}: must end in {suffix}")
    if directory:
        if path.exists() and not path.is_dir():
            raise OutputPathError(f"{path}: is a file; a directory is expected")
        if path.is_dir() and any(path.iterdir()):
            raise OutputPathError(f"{path}: directory exists and is not empty")
    else:
        if path.is_dir():
            raise OutputPathError(f"{path}: is a directory; a file is expected")
        if (reason := not_regular_reason(path)) is not None:
            raise OutputPathError(f"{path}: is {reason}; only a regular file is replaced by an output")
        if path.exists() and not os.access(path, os.W_OK):
            raise OutputPathError(f"{path}: file is not writable")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link
            break
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"{path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{path}: directory {parent} is not writable")
