"""File input and output: atomic writes, and bounded, strict reads of JSON artifacts.

Every file circuit-atlas writes goes through :mod:`circuits.atomic` (re-exported here): a temporary
sibling, fsynced, renamed into place.

Every JSON artifact circuit-atlas reads from a user's path (atlases, edit manifests, suite files) goes
through :func:`read_json_file`: only regular files (no FIFO, ``/dev/zero`` or directory), at most
:data:`MAX_JSON_BYTES`, read with a bounded read; UTF-8; strict JSON with finite numbers only (``NaN``,
``Infinity`` and overflowing literals such as ``1e999`` are refused), nesting at most
:data:`MAX_JSON_DEPTH` levels, integers within 64 bits. Every failure raises the caller's error type
(``AtlasError``, ``EditError``, ``SuiteError``) naming the file and, where there is one, the field.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from circuits.atomic import atomic_directory, atomic_write_bytes, atomic_write_text  # noqa: F401 - re-exported


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


def read_bounded(path: Path | str, *, error: type[Exception] = ValueError, max_bytes: int = MAX_JSON_BYTES, what: str = "file") -> bytes:
    """Read a regular file of at most ``max_bytes`` bytes, never blocking or reading without bound.

    The file is checked to be a regular file before it is opened and again with ``fstat`` on the open
    descriptor (``/dev/zero``, FIFOs and directories are refused), opened non-blocking (a FIFO swapped in
    meanwhile cannot hang the open), checked for size
    before reading, and read with a bounded read (a file growing meanwhile is still refused).

    Args:
        path: The file.
        error: Exception type raised (the artifact's error, e.g. ``AtlasError``).
        max_bytes: Size limit.
        what: How messages name the file (``"atlas"``, ``"edit manifest"``).

    Returns:
        The content.

    Raises:
        error: Missing or unreadable file, not a regular file, or larger than ``max_bytes``.
    """
    path = Path(path)
    try:
        # Checked before opening too (opening some devices has effects), then again on the descriptor
        # (the path may be swapped in between).
        regular = stat.S_ISREG(os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)) if regular else -1
    except (OSError, ValueError) as e:  # ValueError: an embedded NUL in the path
        raise error(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from None
    if not regular:
        raise error(f"cannot read {what} {path}: not a regular file")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"cannot read {what} {path}: not a regular file")
        if info.st_size > max_bytes:
            raise error(f"{what} {path} is {info.st_size} bytes; the limit is {max_bytes} bytes")
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise error(f"{what} {path} is larger than the limit of {max_bytes} bytes")
        return b"".join(chunks)
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)


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


def check_json_value(value: Any, *, error: type[Exception] = ValueError, source: str = "<json>", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Check parsed JSON: nesting depth, finite floats (``1e999`` parses to ``inf``), 64-bit integers.

    Iterative, so a deep value cannot exhaust the stack.

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
            stack.extend((x, (*where, k)) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((x, (*where, i)) for i, x in enumerate(v))
        elif isinstance(v, float) and not math.isfinite(v):
            raise error(f"{source}: field {'.'.join(map(str, where)) or '<root>'}: numbers must be finite, got {v}")
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) >= MAX_JSON_INT:
            raise error(f"{source}: field {'.'.join(map(str, where)) or '<root>'}: integer beyond 64 bits")
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
        error: Invalid UTF-8, invalid JSON (with line and column), ``NaN``/``Infinity``, too deep,
            or an integer with too many digits.
    """
    if isinstance(text, bytes):
        text = decode_utf8(text, error=error, source=source)
    try:
        value = json.loads(text, parse_constant=_reject_constant)
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
