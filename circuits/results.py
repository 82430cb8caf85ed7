"""Results files: every published number is a field of a committed JSON file that says how it was made.

As in lm-evaluation-harness (one JSON per run with its configuration, versions and seeds; its tables are
printed from that JSON), a result of circuit-atlas (a finding, a headline table, a benchmark, the test
count and time) is written once as a :class:`ResultFile` under ``results/`` and every table a reader
sees (``docs/results/*.md``, README) is generated from those files (``make results``).

A results file records, beside its ``data``:

* ``provenance``: the git commit (and whether the tree had uncommitted changes), the sha256 of the
  lock file the environment was installed from, the exact command, the date, the device and CPU
  threads, package versions, seeds, and for each model its name, weight fingerprint and the sha256 of
  the file the weights came from, and for each suite its content hash (:func:`provenance`);
* ``kind``: what the data is (a renderer of ``docs/results`` is registered per kind).

Files are written atomically (:func:`write_result`) and read back validated (:func:`read_result`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from circuits import model as M
from circuits.io import atomic_write_text, read_json_file, validation_message
from circuits.model import HookedLM

RESULTS_SCHEMA_VERSION = "1"
ROOT = Path(__file__).resolve().parents[1]
#: The lock file every published number was measured with (its sha256 is recorded).
LOCK_FILE = ROOT / "requirements" / "lock.txt"
_PACKAGES = ("circuit-atlas", "torch", "transformers", "transformer-lens", "gguf", "numpy", "scipy")


class ResultError(ValueError):
    """A results file is missing, malformed, or not what its reader expects."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelRecord(_Frozen):
    """A model a result was measured on."""

    name: str
    fingerprint: str
    """sha256 over the loaded weights (:func:`circuits.model.fingerprint`)."""
    file_sha256: str | None = None
    """sha256 of the file the weights came from (the GGUF file, or the directory's safetensors)."""
    source: str | None = None
    tokenization: dict[str, Any] = Field(default_factory=dict)


class SuiteRecord(_Frozen):
    """A data set a result was measured on."""

    name: str
    content_hash: str


class Provenance(_Frozen):
    """How a result was made (see the module docstring)."""

    git_commit: str | None
    git_dirty: bool | None
    lock_sha256: str | None
    command: str
    date: str
    device: str
    threads: int
    packages: dict[str, str]
    seeds: list[int] = Field(default_factory=list)
    models: list[ModelRecord] = Field(default_factory=list)
    suites: list[SuiteRecord] = Field(default_factory=list)


class ResultFile(_Frozen):
    """A results file: what it is, how it was made, and the numbers."""

    schema_version: str = RESULTS_SCHEMA_VERSION
    kind: str
    title: str
    provenance: Provenance
    data: dict[str, Any]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def model_record(model: HookedLM) -> ModelRecord:
    """The record of a loaded model (:class:`circuits.model.HookedLM`): name, fingerprint, file hash, policy."""
    return ModelRecord(
        name=M.model_name(model), fingerprint=M.fingerprint(model), file_sha256=model.provenance.file_sha256,
        source=model.provenance.source, tokenization=model.tokenization.as_dict(),
    )


def provenance(
    *, models: Sequence[Any] = (), suites: Sequence[Any] = (), seeds: Sequence[int] = (), command: str | None = None, device: str = "cpu"
) -> Provenance:
    """The provenance of a result measured now, in this process.

    Args:
        models: Loaded models (:class:`circuits.model.HookedLM`) or :class:`ModelRecord` values.
        suites: Suites (anything with ``name`` and ``content_hash``) the numbers come from.
        seeds: Seeds used.
        command: The command that made it (default: this process's ``sys.argv``).
        device: Where it ran.

    Returns:
        The provenance.
    """
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    status = _git("status", "--porcelain", "--untracked-files=no")
    return Provenance(
        git_commit=_git("rev-parse", "HEAD"),
        git_dirty=None if status is None else bool(status),
        lock_sha256=_sha256(LOCK_FILE),
        command=command if command is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        date=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        device=device,
        threads=torch.get_num_threads(),
        packages=packages,
        seeds=list(seeds),
        models=[m if isinstance(m, ModelRecord) else model_record(m) for m in models],
        suites=[SuiteRecord(name=s.name, content_hash=s.content_hash) for s in suites],
    )


def write_result(path: Path | str, *, kind: str, title: str, data: dict[str, Any], provenance: Provenance) -> Path:
    """Write a results file atomically (validated first: what is written reads back).

    Args:
        path: ``results/<area>/<name>.json``.
        kind: What the data is (its renderer's key).
        title: One line saying what was measured.
        data: The numbers (JSON-able; finite).
        provenance: From :func:`provenance`.

    Returns:
        The path.

    Raises:
        ResultError: ``data`` holds a value JSON cannot hold (NaN, ±inf, non-string keys).
    """
    try:
        result = ResultFile(kind=kind, title=title, provenance=provenance, data=data)
        text = result.model_dump_json(indent=2) + "\n"
        ResultFile.model_validate_json(text)
    except (ValidationError, ValueError, TypeError) as e:
        raise ResultError(f"result {path}: {e}") from None
    return atomic_write_text(path, text)


def read_result(path: Path | str, *, kind: str | None = None) -> ResultFile:
    """Read and validate a results file.

    Raises:
        ResultError: Unreadable, malformed, or of another ``kind`` than asked.
    """
    raw = read_json_file(path, error=ResultError, what="results file")
    try:
        result = ResultFile.model_validate(raw)
    except ValidationError as e:
        raise ResultError(f"{path}: {validation_message(e)}") from None
    if kind is not None and result.kind != kind:
        raise ResultError(f"{path}: a {result.kind!r} result, expected {kind!r}")
    return result
