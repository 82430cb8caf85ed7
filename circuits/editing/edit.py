"""Edits as data: a value you can save, load, inspect, compose, apply inside a context manager, and remove.

As in ROME (Meng et al. 2022, ``rome_main.py``), an edit is computed as plain data and applied by a
separate function that can give back the original model (:mod:`circuits.editing.apply`). An edit is a
kind (:mod:`circuits.editing.kinds`, one file each), the components it acts on, named tensors and typed
hyperparameters; its kind turns it into ``(site, intervention)`` pairs (:mod:`circuits.interventions`),
each with a hook form and, where one exists, a weight form. ``form`` says how it is applied unless the
caller asks otherwise ("baked" is ``apply_edit(..., form="weights")``, not a kind). On disk an edit is two files side
by side:

* ``NAME.json``: the manifest (schema version, kind, form, components, hyperparameters, the model name,
  weight fingerprint and source it was made for, the suite and training data it was built from, the
  sha256 of the tensor file, package versions, training record, and the evaluation when measured);
* ``NAME.safetensors``: its tensors. Loading never executes code and never unpickles.

================================  =========================================================
kind                              tensors
================================  =========================================================
``ablation`` (zero/mean/resample) ``{component}``: mean ``[d]`` or reference bank ``[n, d]``
``scaling`` (×α)                  none (``alpha`` hyperparameter)
``steering`` (CAA)                ``vector`` ``[d_model]`` added at ``blocks.L.hook_resid_pre``
``offset`` (learned δ)            ``{component}``: δ ``[d]``
``directional_ablation``          ``direction`` ``[d_model]``
``low_rank`` (weights only)       ``{weight}.lora_A`` ``[r, in]``, ``{weight}.lora_B`` ``[out, r]``
``neuron_repair`` (CARE)          ``{neuron}``: output scale ``[]``
``aifs`` (seed 002)               ``gate``, ``shift``, ``mask`` ``[d]`` (``d_model`` or ``k·d_head``)
``weight_delta`` (weights only)   ``{weight}.delta`` ``[out, in]`` (full fine-tuning)
================================  =========================================================

``d`` is ``d_head`` for a head and ``1`` (a scalar) for a neuron. Schema ``0.4`` records the tokenization
policy the edit was built under (``tokenization``: whether BOS was prepended); ``0.1``–``0.3`` manifests
load with the policy of their time (BOS prepended, ``source: "legacy"``). Manifests of earlier versions load:
``pruning`` is an ablation and ``orthogonalization`` a directional ablation, both with form
``weights``; ``invariance`` is a low-rank edit trained for invariance.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from circuits.atlas.schema import TokenizationInfo
from circuits.atlas.upgrade import LEGACY_TOKENIZATION
from circuits.editing.kinds import KINDS, LEGACY, EditError, Kind
from circuits.editing.validate import check_edit_values
from circuits.atomic import atomic_write_pair, matching_manifest, recover_pair
from circuits.io import MAX_TENSOR_BYTES, atomic_write_text, parse_json, read_bounded, read_json_file, validation_message
from circuits.sites import Component, parse_component

EDIT_SCHEMA_VERSION = "0.4"
EditKind = Literal["ablation", "scaling", "steering", "offset", "directional_ablation", "low_rank", "neuron_repair", "aifs", "weight_delta"]
EDIT_KINDS: tuple[str, ...] = tuple(KINDS)
#: Kinds with a hook form (every kind but the weight-only ``low_rank`` and ``weight_delta``).
HOOK_KINDS = frozenset(k for k, spec in KINDS.items() if spec.has_hooks)
Form = Literal["hooks", "weights"]
#: The manifest field recording the sha256 of the tensor file.
_SHA_FIELD = "tensors_sha256"
Scalar = float | int | str


def _canonical(kind: str, form: str, hyperparameters: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """A legacy kind name → ``(kind, form, hyperparameters)``; canonical ones pass through."""
    if kind in LEGACY:
        new, legacy_form, extra = LEGACY[kind]
        return new, legacy_form, {**extra, **hyperparameters}
    if kind in ("low_rank", "weight_delta"):
        form = "weights"
    return kind, form, hyperparameters


class EditManifest(BaseModel):
    """The JSON manifest of a saved edit (validated on load)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    schema_version: Literal["0.4"] = EDIT_SCHEMA_VERSION
    kind: EditKind
    form: Form = "hooks"
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

    @model_validator(mode="before")
    @classmethod
    def _legacy_kinds(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("kind"), str) and isinstance(raw.get("form", "hooks"), str) and isinstance(raw.get("hyperparameters", {}), dict):
            kind, form, hp = _canonical(raw["kind"], raw.get("form", "hooks"), raw.get("hyperparameters", {}))
            raw = {**raw, "kind": kind, "form": form, "hyperparameters": hp}
        return raw


@dataclass(frozen=True)
class Edit:
    """An edit: its kind, what it touches, its tensors and hyperparameters, and where it comes from.

    Attributes:
        kind: The edit kind (a key of :data:`circuits.editing.kinds.KINDS`; earlier names such as
            ``"pruning"`` are accepted and normalised, see the module docstring).
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
            ``"weights"`` (always ``"weights"`` for ``low_rank``).
        tokenization: The tokenization policy it was built under (``{"prepend_bos": bool, "source":
            str}``, :class:`circuits.model.Tokenization`), or ``None`` for an edit made by hand.
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
    form: Form = "hooks"
    tokenization: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        """Normalise a legacy kind, then validate (:func:`check_edit_values`).

        Raises:
            EditError: Unknown kind or form, duplicate or non-component components, non-finite tensors,
                or hyperparameters of the wrong type or not finite.
        """
        kind, form, hp = _canonical(self.kind, self.form, dict(self.hyperparameters))
        if kind not in KINDS:
            raise EditError(f"unknown edit kind {self.kind!r}; kinds: {', '.join(EDIT_KINDS)}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "form", form)
        object.__setattr__(self, "hyperparameters", hp)
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


def _upgrade(raw: Any) -> Any:
    """Schema 0.1–0.3 manifests → 0.4.

    0.3 added ``model_source`` and ``form`` (kinds via :data:`LEGACY`); 0.4 adds ``tokenization``, set
    for earlier manifests to the policy of their time (BOS prepended, ``source: "legacy"``).
    """
    if isinstance(raw, dict) and raw.get("schema_version") in ("0.1", "0.2", "0.3"):
        raw = dict(raw, schema_version="0.4")
        raw.setdefault("tokenization", LEGACY_TOKENIZATION)
    return raw


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
        kind=edit.kind,  # type: ignore[arg-type]
        form=edit.form,
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
    """Validate parsed manifest JSON (upgrading earlier versions) and parse its components."""
    if isinstance(raw, dict) and "schema_version" not in raw:
        raise EditError(f"{path}: field schema_version: missing (this file is not an edit manifest)")
    try:
        manifest = EditManifest.model_validate(_upgrade(raw))
    except ValidationError as e:
        raise EditError(f"{path}: {validation_message(e)}") from None
    try:
        return manifest, tuple(parse_component(c) for c in manifest.components)
    except ValueError as e:
        raise EditError(f"{path}: field components: {e}") from None


def load_edit(path: Path | str) -> Edit:
    """Load an edit saved by :func:`save_edit` (earlier schema versions are upgraded).

    Args:
        path: The manifest (``.json``).

    Returns:
        The edit.

    Raises:
        EditError: Missing files, invalid JSON, a schema violation (naming the field), a tensor file
            that does not match the manifest's hash, or tensors the edit's kind needs but lacks.
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
    missing = [k for k in required_tensors(edit) if k not in tensors]
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
    raw = _upgrade(read_json_file(path, error=EditError, what="edit manifest"))
    try:
        manifest = EditManifest.model_validate({**raw, "evaluation": dict(evaluation)})
    except ValidationError as e:
        raise EditError(f"{path}: evaluation: {validation_message(e)}") from None
    atomic_write_text(path, manifest.model_dump_json(indent=2) + "\n")
    return path
