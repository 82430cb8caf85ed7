"""Edits as data: a value you can save, load, inspect, apply inside a context manager, and remove.

As in ROME (Meng et al. 2022, ``rome_main.py``), an edit is computed as plain data and applied by a
separate function that can give back the original model. On disk an edit is two files side by side:

* ``NAME.json``: the manifest (schema version, kind, components, hyperparameters, the model name and
  weight fingerprint it was made for, the suite it was built from, the sha256 of the tensor file,
  package versions, and the evaluation before/after when measured);
* ``NAME.safetensors``: its tensors. Loading never executes code and never unpickles.

:func:`apply_edit` refuses a model whose weight fingerprint differs from the manifest's.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from circuits import model as M
from circuits.io import atomic_write_bytes, atomic_write_text, validation_message
from circuits.sites import Component, HeadRef, parse_component

EDIT_SCHEMA_VERSION = "0.1"
EditKind = Literal["mean_ablation"]


class EditError(ValueError):
    """An edit file is malformed, or an edit does not fit the model it is applied to."""


class EditManifest(BaseModel):
    """The JSON manifest of a saved edit (validated on load)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal["0.1"] = EDIT_SCHEMA_VERSION
    kind: EditKind
    components: list[str] = Field(min_length=1)
    hyperparameters: dict[str, float | int | str]
    model_name: str
    model_fingerprint: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    suite: dict[str, str | int]
    tensors_sha256: str = Field(default="", pattern=r"^$|^[0-9a-f]{64}$")
    packages: dict[str, str] = Field(default_factory=dict)
    evaluation: dict[str, float | int | str] | None = None


@dataclass(frozen=True)
class Edit:
    """An edit: what it touches and the tensors it needs.

    Attributes:
        kind: The edit kind (``"mean_ablation"``).
        components: Components it acts on, in order.
        tensors: Named tensors; for mean ablation, ``tensors[str(head)]`` is the head's mean output
            ``z`` (``Float[Tensor, "d_head"]``).
        model_name: Name of the model it was made for.
        model_fingerprint: Weight fingerprint of that model.
        hyperparameters: e.g. ``{"k": 5}``.
        suite: Where it was built (suite name, split, content hash).
        evaluation: Measured before/after numbers, if any.
    """

    kind: EditKind
    components: tuple[Component, ...]
    tensors: dict[str, Tensor]
    model_name: str
    model_fingerprint: str
    hyperparameters: dict[str, float | int | str] = field(default_factory=dict)
    suite: dict[str, str | int] = field(default_factory=dict)
    evaluation: dict[str, float | int | str] | None = None

    def with_evaluation(self, evaluation: dict[str, float | int | str]) -> Edit:
        """A copy of this edit that records an evaluation."""
        return replace(self, evaluation=dict(evaluation))


def save_edit(edit: Edit, path: Path | str, *, packages: dict[str, str] | None = None) -> Path:
    """Save an edit as ``path`` (manifest, ``.json``) and ``path.with_suffix('.safetensors')``.

    Both files are written atomically, tensors first, so a manifest never points at missing tensors.

    Args:
        edit: The edit.
        path: Manifest path; must end in ``.json``.
        packages: Package versions to record.

    Returns:
        The manifest path.

    Raises:
        EditError: ``path`` does not end in ``.json``.
    """
    path = Path(path)
    if path.suffix != ".json":
        raise EditError(f"edit manifest path must end in .json, got {path}")
    blob = st_save({k: v.detach().contiguous().cpu() for k, v in edit.tensors.items()})
    manifest = EditManifest(
        kind=edit.kind,
        components=[str(c) for c in edit.components],
        hyperparameters=edit.hyperparameters,
        model_name=edit.model_name,
        model_fingerprint=edit.model_fingerprint,
        suite=edit.suite,
        tensors_sha256=hashlib.sha256(blob).hexdigest(),
        packages=packages or {},
        evaluation=edit.evaluation,
    )
    atomic_write_bytes(path.with_suffix(".safetensors"), blob)
    atomic_write_text(path, manifest.model_dump_json(indent=2) + "\n")
    return path


def load_edit(path: Path | str) -> Edit:
    """Load an edit saved by :func:`save_edit`.

    Args:
        path: The manifest (``.json``).

    Returns:
        The edit.

    Raises:
        EditError: Missing files, invalid JSON, a schema violation (naming the field), a tensor file
            that does not match the manifest's hash, or tensors that do not match the components.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise EditError(f"cannot read edit manifest {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise EditError(f"{path} is not valid JSON: {e}") from None
    try:
        manifest = EditManifest.model_validate(raw)
    except ValidationError as e:
        raise EditError(f"{path}: {validation_message(e)}") from None
    try:
        components = tuple(parse_component(c) for c in manifest.components)
    except ValueError as e:
        raise EditError(f"{path}: field components: {e}") from None
    tensor_path = path.with_suffix(".safetensors")
    try:
        blob = tensor_path.read_bytes()
    except OSError as e:
        raise EditError(f"cannot read edit tensors {tensor_path}: {e.strerror or e}") from None
    if hashlib.sha256(blob).hexdigest() != manifest.tensors_sha256:
        raise EditError(f"{tensor_path} does not match the sha256 recorded in {path.name}")
    tensors = st_load(blob)
    missing = [str(c) for c in components if str(c) not in tensors]
    if missing:
        raise EditError(f"{tensor_path} has no tensors for {missing}")
    return Edit(
        kind=manifest.kind,
        components=components,
        tensors=tensors,
        model_name=manifest.model_name,
        model_fingerprint=manifest.model_fingerprint,
        hyperparameters=dict(manifest.hyperparameters),
        suite=dict(manifest.suite),
        evaluation=None if manifest.evaluation is None else dict(manifest.evaluation),
    )


def _mean_ablation_hooks(edit: Edit, model: Any) -> list[tuple[str, M.HookFn]]:
    shape = M.shape_of(model)
    by_layer: dict[int, list[tuple[int, Tensor]]] = defaultdict(list)
    for c in edit.components:
        if not isinstance(c, HeadRef):
            raise EditError(f"mean_ablation supports heads only, got {c}")
        if c.layer >= shape.n_layers or c.head >= shape.n_heads:
            raise EditError(f"{c} does not exist in a model with {shape.n_layers} layers × {shape.n_heads} heads")
        mean = edit.tensors[str(c)]
        if tuple(mean.shape) != (shape.d_head,):
            raise EditError(f"mean for {c} has shape {tuple(mean.shape)}, expected ({shape.d_head},)")
        by_layer[c.layer].append((c.head, mean))

    def make(targets: list[tuple[int, Tensor]]) -> M.HookFn:
        heads = torch.tensor([h for h, _ in targets])
        means = torch.stack([m for _, m in targets])

        def hook(z: Tensor, hook: Any) -> Tensor:
            z = z.clone()
            z[:, :, heads] = means.to(z.dtype)
            return z

        return hook

    return [(HeadRef(layer, 0).hook_name, make(t)) for layer, t in sorted(by_layer.items())]


_HOOK_BUILDERS: dict[str, Callable[[Edit, Any], list[tuple[str, M.HookFn]]]] = {
    "mean_ablation": _mean_ablation_hooks,
}


class AppliedEdits:
    """Edits applied to a model; remove them with :meth:`remove` or by leaving a ``with`` block.

    Used without ``with``, the edits stay applied (permanently) until :meth:`remove` is called.
    """

    def __init__(self, removers: list[Callable[[], None]]):
        self._removers = removers

    def remove(self) -> None:
        """Undo the edits (idempotent)."""
        while self._removers:
            self._removers.pop()()

    def __enter__(self) -> AppliedEdits:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def apply_edit(model: Any, *edits: Edit, check_fingerprint: bool = True) -> AppliedEdits:
    """Apply edits to a model, in the order given.

    Args:
        model: A ``TransformerBridge``.
        *edits: One or more edits.
        check_fingerprint: Refuse a model whose weights differ from the edits' (default on).

    Returns:
        A handle: a context manager that removes the edits on exit; without ``with`` the edits stay
        until ``handle.remove()``.

    Raises:
        EditError: No edits, a fingerprint mismatch, or an edit that does not fit the model's shape.
    """
    if not edits:
        raise EditError("no edits to apply")
    if check_fingerprint:
        have = M.fingerprint(model)
        for e in edits:
            if e.model_fingerprint != have:
                raise EditError(
                    f"edit ({e.kind} on {', '.join(map(str, e.components[:4]))}...) was made for model "
                    f"{e.model_name} {e.model_fingerprint[:19]}…, but this model is {have[:19]}…; refusing to apply"
                )
    hooks = [h for e in edits for h in _HOOK_BUILDERS[e.kind](e, model)]
    removers: list[Callable[[], None]] = []
    try:
        for name, fn in hooks:
            removers.append(M.add_persistent_hook(model, name, fn))
    except Exception:
        AppliedEdits(removers).remove()
        raise
    return AppliedEdits(removers)
