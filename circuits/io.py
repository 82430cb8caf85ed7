"""Atomic file writes: a crash mid-write leaves the old file intact.

Every file circuit-atlas writes (atlases, edit manifests, safetensors) goes through here: the bytes are
written to a temporary file in the same directory, flushed and fsynced, then moved over the target
with ``os.replace``, which is atomic on POSIX file systems.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))
