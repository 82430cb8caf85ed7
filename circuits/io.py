"""Atomic file writes: a crash mid-write leaves the old file intact.

Every file circuit-atlas writes (atlases, edit manifests, safetensors) goes through here: the bytes are
written to a temporary file in the same directory, flushed and fsynced, then moved over the target
with ``os.replace``, which is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating parent directories.

    Args:
        path: Destination.
        data: Content.

    Returns:
        The destination path.

    Raises:
        OSError: The directory cannot be created or written; the old file, if any, is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; keep the replaced file's mode, else the usual umask default.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(path: Path | str) -> Iterator[Path]:
    """Fill a directory atomically: yields a temporary sibling, renamed to ``path`` on success.

    Raises:
        ValueError: ``path`` exists and is not empty (nothing is overwritten).
        OSError: The directory cannot be written; a partial result is removed.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise ValueError(f"output directory {path} exists and is not empty")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def validation_message(error: ValidationError) -> str:
    """``"field a.b.c: message"`` for the first error of a pydantic validation (one clear error)."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    return f"field {where}: {first['msg']}"
