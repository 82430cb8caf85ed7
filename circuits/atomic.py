"""Atomic writes: every artifact is written to a temporary sibling and renamed into place as a whole.

A file is written to ``.{name}.tmp-{pid}-{token}`` in the target's directory, flushed and fsynced,
then moved over the target with ``os.replace`` (atomic on POSIX file systems): a reader, or a run
after ``kill -9``, finds the old file or the new one, never a mix. A directory (an export) is filled
under such a name and renamed as a whole. Two files that must match (an edit's manifest and its
tensors) use a commit protocol (:func:`atomic_write_pair`). Each write first removes the temporaries
that dead processes left in its directory (the pid in the name tells), so interrupted runs leave
nothing behind for long. :mod:`circuits.io` re-exports the writers.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

# --- Writing: a temporary sibling, fsynced, renamed into place ---------------------------------------

#: Temporaries are named ``.{target}.{tag}-{pid}-{token}``, so a later run can tell whose they were.
_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<tag>tmp|pending)-(?P<pid>\d+)-[0-9a-f]{8}")


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A fresh temporary name beside ``path`` recording this process's id (see :func:`remove_stale`)."""
    return path.parent / f".{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or no such pid at all)
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def stale_temporaries(directory: Path | str, *, name: str | None = None, tag: str = "tmp", dead: bool = True) -> list[Path]:
    """Temporaries in ``directory`` (of the target ``name``, if given) whose writer is gone (or any, ``dead=False``)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    matches = [(n, m) for n in names if (m := _TEMP.fullmatch(n)) and m["tag"] == tag and name in (None, m["name"])]
    return sorted(Path(directory) / n for n, m in matches if not (dead and _alive(int(m["pid"]))))


def remove_stale(directory: Path | str) -> int:
    """Delete the temporary files and directories that killed writers left in ``directory``.

    Pending manifests (tag ``pending``) are left to :func:`recover_pair`: they may complete a write.

    Returns:
        How many were removed.
    """
    stale = stale_temporaries(directory)
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if stale:
        logger.info("removed %d temporaries left by interrupted writes in %s", len(stale), directory)
    return len(stale)


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk (a no-op where it cannot be opened for that)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO cannot block it
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class NotRegularFileError(OSError):
    """The target exists and is not a regular file (a device, FIFO, socket or directory): it is never replaced."""


def not_regular_reason(path: Path | str) -> str | None:
    """Why an existing ``path`` must not be replaced by a file (a directory, device, FIFO, socket), else ``None``.

    A symlink is followed: a link to ``/dev/full`` is a device. A missing path (or a dangling link) is
    ``None``: writing creates it.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))
    return next((what for test, what in kinds if test(mode)), "not a regular file")


def check_replaceable(path: Path | str) -> None:
    """Refuse to replace anything but a regular file (or nothing): a device or FIFO is never swapped for a file.

    Raises:
        NotRegularFileError: ``path`` is a directory, device, FIFO or socket.
    """
    if (reason := not_regular_reason(path)) is not None:
        raise NotRegularFileError(errno.EEXIST, f"is {reason}; only a regular file is replaced", str(path))


def stage_bytes(path: Path | str, data: bytes, *, tag: str = "tmp") -> Path:
    """Write ``data`` to a fresh temporary sibling of ``path``, fsynced, and return its name.

    Temporaries that dead processes left in the directory are removed first. The temporary gets the
    mode of the file it will replace, else the umask's default.

    Raises:
        NotRegularFileError: ``path`` exists and is not a regular file (:func:`check_replaceable`).
        OSError: The directory cannot be created or written (the temporary is removed).
    """
    path = Path(path)
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent)
    tmp = temp_sibling(path, tag)
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def commit(tmp: Path, path: Path) -> Path:
    """Rename a staged temporary over ``path`` (atomic on POSIX) and make the rename durable."""
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)
    return path


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`stage_bytes`, then :func:`commit`).

    Args:
        path: Destination; parent directories are created.
        data: Content.

    Returns:
        The destination path.

    Raises:
        NotRegularFileError: ``path`` is a directory, device, FIFO or socket (it is left as it is).
        OSError: The directory cannot be created or written; the old file, if any, is untouched.
    """
    path = Path(path)
    return commit(stage_bytes(path, data), path)


def atomic_write_text(path: Path | str, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(path: Path | str) -> Iterator[Path]:
    """Fill a directory atomically: yields a temporary sibling, fsynced and renamed to ``path`` on success.

    Raises:
        ValueError: ``path`` exists and is not an empty directory (nothing is overwritten).
        OSError: The directory cannot be written; the partial result is removed.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"output directory {path} exists and is not {'empty' if path.is_dir() else 'a directory'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent)
    tmp = temp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            _fsync(f)
        _fsync(tmp)
        os.replace(tmp, path)  # replaces an empty directory; fails if one was filled meanwhile
        _fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- Pairs: a data file and the manifest recording its sha256 (edits) ----------------------------------


def _recorded_sha(manifest: bytes, field: str) -> str | None:
    try:
        value = json.loads(manifest).get(field)
    except (ValueError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, str) else None


def _pending(manifest_path: Path) -> list[Path]:
    """Pending manifests of ``manifest_path`` (of live and dead writers), newest first."""
    found = stale_temporaries(manifest_path.parent, name=manifest_path.name, tag="pending", dead=False)
    return sorted(found, key=lambda p: p.stat().st_mtime_ns if p.exists() else 0, reverse=True)


def atomic_write_pair(data_path: Path | str, data: bytes, manifest_path: Path | str, manifest: bytes, *, sha_field: str) -> None:
    """Replace a data file and the JSON manifest recording its sha256 so that readers see one version.

    Both are staged and fsynced first, the manifest as a *pending* sibling; renaming the data file in is
    the commit point, the manifest follows. A writer killed between the two renames leaves new data, the
    old manifest and the new pending one: :func:`matching_manifest` then finds the pending manifest (the one
    that matches the data), and the next writer completes the rename (:func:`recover_pair`). Killed
    before the commit point, the old pair stays whole.

    Args:
        data_path: The data file (e.g. ``NAME.safetensors``).
        data: Its content.
        manifest_path: The manifest (e.g. ``NAME.json``).
        manifest: Its content: a JSON object whose ``sha_field`` is the hex sha256 of ``data``.
        sha_field: That field's name.

    Raises:
        ValueError: The manifest does not record ``data``'s sha256.
        OSError: The directory cannot be written (the old pair is left whole).
    """
    data_path, manifest_path = Path(data_path), Path(manifest_path)
    if _recorded_sha(manifest, sha_field) != hashlib.sha256(data).hexdigest():
        raise ValueError(f"the manifest's {sha_field} is not the sha256 of the data it is saved with")
    recover_pair(data_path, manifest_path, sha_field=sha_field)
    staged = stage_bytes(data_path, data)
    try:
        pending = stage_bytes(manifest_path, manifest, tag="pending")
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    try:
        commit(staged, data_path)
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    commit(pending, manifest_path)


def matching_manifest(manifest_path: Path | str, data: bytes, *, sha_field: str) -> bytes | None:
    """The manifest that records ``data``'s sha256 when the one read first did not (read-only).

    A writer between (or killed between) the two renames of :func:`atomic_write_pair` has committed
    the data; the manifest that matches it is the current one. The manifest is read again, then each
    pending one, newest first.

    Args:
        manifest_path: The manifest.
        data: The data file's content, as read.
        sha_field: The manifest field holding the data's sha256.

    Returns:
        That manifest's content, or ``None`` (the data does not match any: the caller reports it).
    """
    manifest_path = Path(manifest_path)
    digest = hashlib.sha256(data).hexdigest()
    for candidate in (manifest_path, *_pending(manifest_path)):
        try:
            content = read_bounded(candidate, error=OSError, what="manifest")
        except OSError:  # renamed away meanwhile
            continue
        if _recorded_sha(content, sha_field) == digest:
            return content
    return None


def recover_pair(data_path: Path | str, manifest_path: Path | str, *, sha_field: str) -> None:
    """Finish or discard the pending manifests that killed writers left beside ``manifest_path``.

    A pending manifest matching the data file completes its write (it is renamed into place, unless
    the manifest there matches already); any other pending manifest of a dead process is deleted.
    """
    data_path, manifest_path = Path(data_path), Path(manifest_path)
    dead = stale_temporaries(manifest_path.parent, name=manifest_path.name, tag="pending")
    if not dead:
        return
    try:
        digest = hashlib.sha256(data_path.read_bytes()).hexdigest()
    except OSError:
        digest = None
    try:
        current = _recorded_sha(manifest_path.read_bytes(), sha_field)
    except OSError:
        current = None
    for p in sorted(dead, key=lambda p: p.stat().st_mtime_ns, reverse=True):
        if digest is not None and current != digest and _recorded_sha(p.read_bytes(), sha_field) == digest:
            commit(p, manifest_path)
            current = digest
            logger.info("completed the interrupted write of %s", manifest_path)
        else:
            p.unlink(missing_ok=True)


#: Default bound of :func:`read_bounded` (the JSON limit of :mod:`circuits.io`).
MAX_READ_BYTES = 64 * 2**20


def read_bounded(path: Path | str, *, error: type[Exception] = ValueError, max_bytes: int = MAX_READ_BYTES, what: str = "file") -> bytes:
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
