"""Edits as data: a value you can save, load, inspect, compose, apply inside a context manager, and remove.

As in ROME (Meng et al. 2022, ``rome_main.py``), an edit is computed as plain data and applied by a
separate function that can give back the original model (:mod:`circuits.editing.apply`). An edit is a
kind (:data:`circuits.editing.kinds.KINDS`, one file each: what its tensors are and which sites they act
on), the components it acts on, named tensors and typed hyperparameters, the ``form`` it is applied in
by default (``hooks`` or ``weights``; "baked" is a choice of applying, not a kind) and the ``objective``
that made its tensors (:data:`circuits.editing.recipes.METHODS`; ``None`` for an edit made by hand).
The kinds, their tensors, forms and objectives are listed in ``docs/edit_kinds.md``, generated from
the registry. On disk an edit is two files side by side:

* ``NAME.json``: the manifest (schema version, kind, form, objective, components, hyperparameters, the
  model name, weight fingerprint and source it was made for, the tokenization policy it was built
  under, the suite and training data it was built from, the sha256 of the tensor file, package
  versions, training record, and the evaluation when measured);
* ``NAME.safetensors``: its tensors. Loading never executes code and never unpickles.

Schema history: ``0.4`` recorded the tokenization policy (``tokenization``); ``0.5`` records the
``objective`` and every kind by its name in :data:`~circuits.editing.kinds.KINDS` (earlier manifests
could name a recipe — ``pruning``, ``orthogonalization``, ``invariance``, ``mean_ablation`` — as their
kind). A manifest of an earlier schema is refused with one error naming the fix:
``python scripts/migrate_manifests.py PATH`` rewrites it in place (the tensor file is not touched, so its
``tensors_sha256`` stays valid).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from circuits.atlas.schema import TokenizationInfo
from circuits.atomic import atomic_write_pair, matching_manifest, recover_pair
from circuits.editing.kinds import KINDS, EditError, Form, Kind
from circuits.editing.validate import check_edit_values
from circuits.io import (
    MAX_TENSOR_BYTES,
    atomic_write_text,
    parse_json,
    read_bounded,
    read_json_file,
    validation_message,
)
from circuits.sites import Component, parse_component

EDIT_SCHEMA_VERSION = "0.5"
#: The command that upgrades a manifest of an earlier schema (named in the error that refuses one).
MIGRATION = "python scripts/migrate_manifests.py"
#: The manifest field recording the sha256 of the tensor file.
_SHA_FIELD = "tensors_sha256"
Scalar = float | int | str
#: An objective's name: lower-case words joined by ``_`` (``gap``, ``mean_difference``, ``care``).
_OBJECTIVE = re.compile(r"^[a-z][a-z0-9_]*$")


def _check_kind(kind: Any) -> str:
    if not isinstance(kind, str) or kind not in KINDS:
        raise EditError(f"unknown edit kind {kind!r}; kinds: {', '.join(KINDS)}")
    return kind


def _check_objective(objective: Any) -> str | None:
    if objective is not None and (not isinstance(objective, str) or not _OBJECTIVE.match(objective)):
        raise EditError(f"objective must be a lower-case name such as 'gap' (or null for an edit made by hand), got {objective!r}")
    return objective


class EditManifest(BaseModel):
    """The JSON manifest of a saved edit (validated on load)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    schema_version: Literal["0.5"] = EDIT_SCHEMA_VERSION
    kind: str
    form: Form
    objective: str | None
    components: list[str] = Field(min_length=1)
    hyperparameters: dict[str, Scalar]
    model_name: str
    model_fingerprint: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    model_source: dict[str, str] = Field(default_factory=dict)
    tokenization: TokenizationInfo | None = None
    suite: dict[str, Scalar]
    tensors_sha256: str = Field(default="", pattern=r"^$|^[0-9a-f]{64}$")
    packages: dict[str, str] = Field(default_factory=dict)
    training: dict[str, Scalar] | None = None
    evaluation: dict[str, Scalar] | None = None

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        return _check_kind(kind)

    @field_validator("objective")
    @classmethod
    def _objective_name(cls, objective: str | None) -> str | None:
        return _check_objective(objective)


@dataclass(frozen=True)
class Edit:
    """An edit: its kind, what it touches, its tensors and hyperparameters, and where it comes from.

    Attributes:
        kind: The edit kind (a key of :data:`circuits.editing.kinds.KINDS`).
        components: Components it acts on, in order (for residual-stream kinds: the site the direction
            or vector was read at, e.g. ``L12RESID``).
        tensors: Named tensors.
        model_name: Name of the model it was made for.
        model_fingerprint: Weight fingerprint of that model.
        hyperparameters: e.g. ``{"mode": "mean", "k": 5}``.
        suite: Where it was built (suite name, split, content hash, number of pairs).
        training: For trained kinds: steps, seed, losses, training-data hash, wall time.
        evaluation: Measured before/after numbers, if any.
        model_source: Where that model's weights came from (:class:`circuits.model.Provenance`).
        form: How :func:`circuits.editing.apply.apply_edit` applies it by default: ``"hooks"`` or
            ``"weights"``, one of its kind's ``forms`` (``None``: the kind's default, its first form).
        tokenization: The tokenization policy it was built under (``{"prepend_bos": bool, "source":
            str}``, :class:`circuits.model.Tokenization`), or ``None`` for an edit made by hand.
        objective: What made its tensors (``"gap"``, ``"care"``, ``"mean_difference"``…;
            :data:`circuits.editing.recipes.METHODS`), or ``None`` for an edit made by hand.
    """

    kind: str
    components: tuple[Component, ...]
    tensors: dict[str, Tensor]
    model_name: str
    model_fingerprint: str
    hyperparameters: dict[str, Scalar] = field(default_factory=dict)
    suite: dict[str, Scalar] = field(default_factory=dict)
    training: dict[str, Scalar] | None = None
    evaluation: dict[str, Scalar] | None = None
    model_source: dict[str, str] = field(default_factory=dict)
    form: Form | None = None
    tokenization: dict[str, Any] | None = None
    objective: str | None = None

    def __post_init__(self) -> None:
        """Resolve the default form, then validate (:func:`check_edit_values`).

        Raises:
            EditError: Unknown kind, a form the kind does not have (or, for its hyperparameters, cannot
                take), a malformed objective, duplicate or non-component components, non-finite
                tensors, or hyperparameters of the wrong type or not finite.
        """
        spec = KINDS[_check_kind(self.kind)]
        if self.form is None:
            object.__setattr__(self, "form", spec.forms[0])
        if not isinstance(self.hyperparameters, dict):
            raise EditError(f"hyperparameters must be an object of numbers and strings, got {type(self.hyperparameters).__name__}")
        spec.check_form(self.form, self.hyperparameters)  # type: ignore[arg-type]
        _check_objective(self.objective)
        check_edit_values(self)

    @property
    def spec(self) -> Kind:
        """The kind's implementation (:mod:`circuits.editing.kinds`)."""
        return KINDS[self.kind]

    def with_evaluation(self, evaluation: dict[str, Scalar]) -> Edit:
        """A copy of this edit that records an evaluation."""
        return replace(self, evaluation=dict(evaluation))

    @property
    def n_parameters(self) -> int:
        """Number of stored numbers (the size of the edit)."""
        return int(sum(t.numel() for t in self.tensors.values()))

    def __str__(self) -> str:
        comps = ", ".join(map(str, self.components[:4])) + ("…" if len(self.components) > 4 else "")
        return f"{self.kind}({comps})"


def required_tensors(edit: Edit) -> list[str]:
    """Names of the tensors an edit's kind needs (for validation).

    Raises:
        EditError: A hyperparameter the kind does not accept (e.g. an unknown ablation ``mode``).
    """
    return edit.spec.required_tensors(edit)


def _check_version(path: Path, raw: Any) -> None:
    """Refuse a manifest of another schema version with one error naming the migration.

    Raises:
        EditError: No ``schema_version``, an earlier one (run :data:`MIGRATION`), or an unknown one.
    """
    if not isinstance(raw, dict):
        return  # the schema validation names what is wrong
    if "schema_version" not in raw:
        raise EditError(f"{path}: field schema_version: missing (this file is not an edit manifest)")
    version = raw["schema_version"]
    if version == EDIT_SCHEMA_VERSION:
        return
    if isinstance(version, str) and re.fullmatch(r"0\.[0-4]", version):
        raise EditError(
            f"{path}: edit manifest schema {version} is older than {EDIT_SCHEMA_VERSION}; upgrade it with `{MIGRATION} {path}` "
            "(rewrites its kind, form and objective in place; the tensor file is not touched)"
        )
    raise EditError(f"{path}: field schema_version: unsupported edit manifest version {version!r} (this library reads {EDIT_SCHEMA_VERSION})")


def save_edit(edit: Edit, path: Path | str, *, packages: dict[str, str] | None = None) -> Path:
    """Save an edit as ``path`` (manifest, ``.json``) and ``path.with_suffix('.safetensors')``.

    The pair is replaced as a whole (:func:`circuits.atomic.atomic_write_pair`: both staged, tensors
    renamed in, manifest last): a reader, or a run after ``kill -9``, finds the old edit or the new
    one, never one's manifest with the other's tensors.

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
        form=edit.form,  # type: ignore[arg-type]
        objective=edit.objective,
        components=[str(c) for c in edit.components],
        hyperparameters=edit.hyperparameters,
        model_name=edit.model_name,
        model_fingerprint=edit.model_fingerprint,
        model_source=edit.model_source,
        tokenization=edit.tokenization,
        suite=edit.suite,
        tensors_sha256=hashlib.sha256(blob).hexdigest(),
        packages=packages or {},
        training=edit.training,
        evaluation=edit.evaluation,
    )
    text = manifest.model_dump_json(indent=2) + "\n"
    atomic_write_pair(path.with_suffix(".safetensors"), blob, path, text.encode("utf-8"), sha_field=_SHA_FIELD)
    return path


def _read_manifest(path: Path, raw: Any) -> tuple[EditManifest, tuple[Component, ...]]:
    """Validate parsed manifest JSON (of this schema version) and parse its components."""
    _check_version(path, raw)
    try:
        manifest = EditManifest.model_validate(raw)
    except ValidationError as e:
        raise EditError(f"{path}: {validation_message(e)}") from None
    try:
        return manifest, tuple(parse_component(c) for c in manifest.components)
    except ValueError as e:
        raise EditError(f"{path}: field components: {e}") from None


def load_edit(path: Path | str) -> Edit:
    """Load an edit saved by :func:`save_edit` (of this schema version; see the module docstring).

    Args:
        path: The manifest (``.json``).

    Returns:
        The edit.

    Raises:
        EditError: Missing files, invalid JSON, an earlier schema version (naming the migration), a
            schema violation (naming the field), a tensor file that does not match the manifest's hash,
            or tensors the edit's kind needs but lacks.
    """
    path = Path(path)
    manifest, components = _read_manifest(path, read_json_file(path, error=EditError, what="edit manifest"))
    tensor_path = path.with_suffix(".safetensors")
    blob = read_bounded(tensor_path, error=EditError, max_bytes=MAX_TENSOR_BYTES, what="edit tensors")
    if hashlib.sha256(blob).hexdigest() != manifest.tensors_sha256:
        # A save between (or killed between) renaming the tensors and the manifest in: take its manifest.
        newer = matching_manifest(path, blob, sha_field=_SHA_FIELD)
        if newer is None:
            raise EditError(f"{tensor_path} does not match the sha256 recorded in {path.name}")
        manifest, components = _read_manifest(path, parse_json(newer, error=EditError, source=str(path)))
    try:
        tensors = st_load(blob)
    except Exception as e:  # safetensors raises its own error types
        raise EditError(f"{tensor_path} is not a valid safetensors file: {e}") from None
    try:
        edit = Edit(
            kind=manifest.kind,
            form=manifest.form,
            objective=manifest.objective,
            components=components,
            tensors=tensors,
            model_name=manifest.model_name,
            model_fingerprint=manifest.model_fingerprint,
            model_source=dict(manifest.model_source),
            tokenization=None if manifest.tokenization is None else manifest.tokenization.model_dump(),
            hyperparameters=dict(manifest.hyperparameters),
            suite=dict(manifest.suite),
            training=None if manifest.training is None else dict(manifest.training),
            evaluation=None if manifest.evaluation is None else dict(manifest.evaluation),
        )
    except EditError as e:
        raise EditError(f"{path}: {e}") from None
    try:
        missing = [k for k in required_tensors(edit) if k not in tensors]
    except EditError as e:  # the kind's own rules (an ablation's mode): one error naming the file
        raise EditError(f"{path}: {e}") from None
    if missing:
        raise EditError(f"{tensor_path} has no tensors {missing} that a {edit.kind} edit of {path.name} needs")
    return edit


def record_evaluation(path: Path | str, evaluation: dict[str, Scalar]) -> Path:
    """Record an evaluation in a saved edit's manifest (atomically; the tensor file is not touched).

    Args:
        path: The manifest (``.json``).
        evaluation: Flat measured numbers (e.g. :meth:`circuits.evaluation.run.EvalReport.flat`).

    Returns:
        The manifest path.

    Raises:
        EditError: The manifest cannot be read or is malformed (nothing is written then).
    """
    path = Path(path)
    recover_pair(path.with_suffix(".safetensors"), path, sha_field=_SHA_FIELD)  # finish an interrupted save first
    load_edit(path)  # validates the manifest and its tensors before anything is written
    raw = read_json_file(path, error=EditError, what="edit manifest")
    try:
        manifest = EditManifest.model_validate({**raw, "evaluation": dict(evaluation)})
    except ValidationError as e:
        raise EditError(f"{path}: evaluation: {validation_message(e)}") from None
    atomic_write_text(path, manifest.model_dump_json(indent=2) + "\n")
    return path
