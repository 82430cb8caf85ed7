"""Per-layer checkpoints of a patching sweep: written atomically, validated on resume, recomputed if bad.

A sweep (:func:`circuits.probing.patching.patch_groups`) saves each finished layer's raw results as
``layer_{L}.safetensors`` (one tensor, ``patched`` ``[component, row]``) in a directory named by a
hash of everything the results depend on. Files are written through :func:`circuits.io.atomic_write_bytes`,
so a killed scan leaves whole checkpoints or none. On resume a checkpoint is used only if it is a
valid safetensors file holding exactly that tensor, with the expected shape, a floating dtype and
finite values; anything else (truncated, NaN, another schema) is deleted with a warning and the layer
is recomputed, so a bad checkpoint never stops a scan. Rows that are not finite are not saved.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from circuits.atomic import atomic_write_bytes, remove_stale
from circuits.io import MAX_TENSOR_BYTES, read_bounded

logger = logging.getLogger(__name__)

#: The one tensor a checkpoint holds.
KEY = "patched"


def layer_path(directory: Path, layer: int) -> Path:
    """Where the checkpoint of ``layer`` lives in a sweep's checkpoint directory."""
    return directory / f"layer_{layer}.safetensors"


def open_directory(directory: Path) -> Path:
    """Create a sweep's checkpoint directory and remove temporaries that killed runs left in it."""
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale(directory)
    return directory


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (it is discarded and recomputed)."""


def _validate(path: Path, shape: tuple[int, int]) -> Tensor:
    blob = read_bounded(path, error=CheckpointError, max_bytes=MAX_TENSOR_BYTES, what="checkpoint")
    try:
        tensors = st_load(blob)
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"not a valid safetensors file ({e})") from None
    if set(tensors) != {KEY}:
        raise CheckpointError(f"expected one tensor {KEY!r}, found {sorted(tensors)}")
    rows = tensors[KEY]
    if not rows.dtype.is_floating_point:
        raise CheckpointError(f"dtype {rows.dtype} is not floating point")
    if tuple(rows.shape) != shape:
        raise CheckpointError(f"shape {tuple(rows.shape)}, expected {shape}")
    if not torch.isfinite(rows).all():
        raise CheckpointError("it holds NaN or infinite values")
    return rows.float()


def load_layer(path: Path, shape: tuple[int, int]) -> Tensor | None:
    """A layer's saved results, or ``None`` if there is no usable checkpoint (then recompute it).

    A checkpoint that exists but fails validation is deleted and a warning is issued.

    Args:
        path: The checkpoint (:func:`layer_path`).
        shape: Expected ``(components in the layer, rows)``.

    Returns:
        ``[component, row]`` float32 results, or ``None``.
    """
    if not path.exists():
        return None
    try:
        rows = _validate(path, shape)
    except CheckpointError as e:
        warnings.warn(f"discarding checkpoint {path}: {e}; recomputing the layer", RuntimeWarning, stacklevel=2)
        path.unlink(missing_ok=True)
        return None
    logger.info("loaded checkpoint %s", path)
    return rows


def save_layer(path: Path, rows: Tensor) -> bool:
    """Save a layer's results atomically, unless they hold non-finite values.

    Args:
        path: The checkpoint (:func:`layer_path`).
        rows: ``[component, row]`` results.

    Returns:
        Whether the checkpoint was written.
    """
    if not torch.isfinite(rows).all():
        logger.warning("not checkpointing %s: the results hold NaN or infinite values", path)
        return False
    atomic_write_bytes(path, st_save({KEY: rows.detach().float().contiguous().cpu()}))
    return True
