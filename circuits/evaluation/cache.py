"""A disk cache of the unedited model's measurements, so many edits (or an interrupted run) measure it once.

:func:`measure` of the unedited model is the cost every evaluation shares (on SmolLM2-135M, on two CPU
cores, minutes: every shipped suite, the stereotype, toxicity, classification, multiple-choice and
factual-QA sets, and 20k+ tokens of text). :func:`load_or_measure` saves it as one safetensors file
(the ``[item]`` arrays as tensors of their own dtype; what was measured in the header metadata) under a name that is
a hash of everything the numbers depend on: the model's weight fingerprint, the measurement
:class:`~circuits.evaluation.report.Settings`, the content hash of every suite measured, the bytes of the
shipped evaluation data, the source of the measuring modules (:data:`MEASURING_MODULES`), and the
circuit-atlas version. Another model, other settings or other data
give another file; nothing is ever reused across them.

A file that cannot be used (truncated, another layout, non-finite values) is deleted with a warning and
the measurements are taken again, as with probing checkpoints (:mod:`circuits.probing.checkpoints`).
Writes are atomic. No pickle: the file holds tensors and a JSON header only.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from circuits import __version__
from circuits import model as M
from circuits.atomic import atomic_write_bytes
from circuits.evaluation.report import Measurements, Settings
from circuits.io import MAX_TENSOR_BYTES, read_bounded
from circuits.suites import Suite

#: Layout tag written in the header; a file with another tag is recomputed.
FORMAT = "circuit-atlas-measurements/2"
#: Per-item arrays of :class:`Measurements` (``gaps`` is stored as ``gaps/<suite name>``).
ARRAYS = tuple(f.name for f in fields(Measurements) if f.name not in ("settings", "gaps", "gap_units", "gap_kinds", "kl"))


class MeasurementCacheError(ValueError):
    """A cached measurement file that cannot be used (it is discarded and measured again)."""


#: Modules whose code decides what a measurement is (their source is part of the key).
MEASURING_MODULES = ("circuits.evaluation.run", "circuits.evaluation.metrics", "circuits.evaluation.report", "circuits.data", "circuits.model.forward")


def _data_hash() -> str:
    """sha256 over the shipped evaluation data files (name and bytes, in name order) and the measuring code."""
    h = hashlib.sha256()
    root = resources.files("circuits.data")
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.is_file() and entry.name.endswith((".json", ".txt")):
            h.update(entry.name.encode() + b"\0" + entry.read_bytes() + b"\0")
    for name in MEASURING_MODULES:
        h.update(name.encode() + b"\0" + inspect.getsource(importlib.import_module(name)).encode() + b"\0")
    return h.hexdigest()


def cache_key(model: Any, settings: Settings, suites: Sequence[Suite]) -> str:
    """The hash naming a cached measurement: model weights, settings, suite contents, data, version.

    Args:
        model: The model as it will be measured (its weight fingerprint is part of the key).
        settings: The measurement settings.
        suites: The suites measured, in order.

    Returns:
        24 hex digits.
    """
    content = {
        "format": FORMAT,
        "version": __version__,
        "fingerprint": M.fingerprint(model),
        "settings": asdict(settings),
        "suites": [[s.name, s.content_hash] for s in suites],
        "data": _data_hash(),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:24]


def _tensor(a: np.ndarray) -> torch.Tensor:
    a = np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return torch.from_numpy(a.astype(np.uint8))
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return torch.from_numpy(a)


def _encode(m: Measurements) -> bytes:
    tensors = {f"gaps/{name}": _tensor(a) for name, a in m.gaps.items()}
    tensors.update({name: _tensor(getattr(m, name)) for name in ARRAYS if getattr(m, name) is not None})
    meta = {"format": FORMAT, "settings": json.dumps(asdict(m.settings)), "gap_units": json.dumps(m.gap_units), "gap_kinds": json.dumps(m.gap_kinds)}
    return st_save(tensors, metadata=meta)


def _metadata(blob: bytes) -> dict[str, str]:
    """The JSON header's ``__metadata__`` of a safetensors blob (what was measured, the gap units)."""
    try:
        n = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8 : 8 + n])
    except (ValueError, UnicodeDecodeError):
        raise MeasurementCacheError("unreadable safetensors header") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise MeasurementCacheError("no metadata in the header")
    return meta


def _json_dict(meta: dict[str, str], key: str) -> dict[str, str]:
    try:
        value = json.loads(meta[key])
    except (KeyError, TypeError, ValueError):
        raise MeasurementCacheError(f"metadata {key!r} missing or not JSON") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise MeasurementCacheError(f"metadata {key!r} is not a map of strings")
    return value


def _decode(blob: bytes, settings: Settings) -> Measurements:
    try:
        tensors = st_load(blob)
    except Exception as e:  # safetensors raises its own error types
        raise MeasurementCacheError(f"not a valid safetensors file ({e})") from None
    meta = _metadata(blob)
    if meta.get("format") != FORMAT:
        raise MeasurementCacheError(f"layout {meta.get('format')!r}, expected {FORMAT!r}")
    for name, t in tensors.items():
        if name == "labels" and t.dtype == torch.uint8:
            continue
        if not t.dtype.is_floating_point or not torch.isfinite(t).all():
            raise MeasurementCacheError(f"{name} is not a finite floating-point array")
    expected_gaps = {f"gaps/{s}" for s in settings.suites} if "suites" in settings.groups else set()
    gaps = {k for k in tensors if k.startswith("gaps/")}
    if gaps != expected_gaps:
        raise MeasurementCacheError(f"holds suite gaps {sorted(gaps)}, expected {sorted(expected_gaps)}")
    unknown = set(tensors) - gaps - set(ARRAYS)
    if unknown:
        raise MeasurementCacheError(f"unknown arrays {sorted(unknown)}")
    arrays: dict[str, Any] = {name: tensors[name].numpy() for name in ARRAYS if name in tensors}
    if "labels" in arrays:
        arrays["labels"] = arrays["labels"].astype(bool)
    names = [s for s in settings.suites] if "suites" in settings.groups else []
    units, kinds = _json_dict(meta, "gap_units"), _json_dict(meta, "gap_kinds")
    if sorted(units) != sorted(names) or sorted(kinds) != sorted(names):
        raise MeasurementCacheError(f"gap units/kinds recorded for {sorted(units)}, expected {sorted(names)}")
    return Measurements(settings=settings, gaps={n: tensors[f"gaps/{n}"].numpy() for n in names}, gap_units=units, gap_kinds=kinds, **arrays)


def load_or_measure(model: Any, cache_dir: Path | str, settings: Settings, suites: Sequence[Suite], take: Callable[[], Measurements]) -> Measurements:
    """The measurements of ``model`` under ``settings`` from ``cache_dir``, or ``take()`` them and store them there.

    The file is keyed by :func:`cache_key` (weights, settings, suite contents, code); an unreadable or
    mismatched file is discarded with a warning and measured again. :func:`circuits.evaluation.run.measure` with ``cache_dir``
    is the entry point.

    Args:
        model: The model (``TransformerBridge``).
        cache_dir: Directory of cached measurements (created if missing).
        settings: What ``take`` measures.
        suites: The suites ``take`` measures.
        take: Measures the model (called only on a miss).

    Returns:
        The measurements.
    """
    directory = Path(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"measurements-{cache_key(model, settings, suites)}.safetensors"
    if path.exists():
        try:
            return _decode(read_bounded(path, error=MeasurementCacheError, max_bytes=MAX_TENSOR_BYTES, what="cached measurements"), settings)
        except MeasurementCacheError as e:
            warnings.warn(f"discarding cached measurements {path}: {e}; measuring again", RuntimeWarning, stacklevel=3)
            path.unlink(missing_ok=True)
    m = take()
    atomic_write_bytes(path, _encode(m))
    return m
