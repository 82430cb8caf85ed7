"""Edits as data: a value you can save, load, inspect, compose, apply inside a context manager, and remove.

As in ROME (Meng et al. 2022, ``rome_main.py``), an edit is computed as plain data and applied by a
separate function that can give back the original model. On disk an edit is two files side by side:

* ``NAME.json``: the manifest (schema version, kind, components, hyperparameters, the model name and
  weight fingerprint it was made for, the suite and training data it was built from, the sha256 of the
  tensor file, package versions, training record, and the evaluation before/after when measured);
* ``NAME.safetensors``: its tensors. Loading never executes code and never unpickles.

Edit kinds (the builders, in :mod:`circuits.editing.build` and :mod:`circuits.editing.train`, cite
their sources) and how each is applied:

================================  =========  =======================================================
kind                              applied as tensors
================================  =========  =======================================================
``ablation`` (zero/mean/resample) hooks      ``{component}``: mean ``[d]`` or reference bank ``[n, d]``
``pruning`` (zero/mean)           weights    ``{component}``: mean folded into the output bias
``scaling`` (×α)                  hooks      none (``alpha`` hyperparameter)
``steering`` (CAA)                hooks      ``vector`` ``[d_model]`` added at ``blocks.L.hook_resid_pre``
``offset`` (learned δ)            hooks      ``{component}``: δ ``[d]``
``directional_ablation``          hooks      ``direction`` ``[d_model]`` (unit)
``orthogonalization``             weights    ``direction`` ``[d_model]`` (unit)
``low_rank`` / ``invariance``     weights    ``{weight}.lora_A`` ``[r, in]``, ``{weight}.lora_B`` ``[out, r]``
``neuron_repair`` (CARE)          weights    ``{neuron}``: outgoing-weight scale ``[]``
================================  =========  =======================================================

Components are head outputs (``L9H6``, ``hook_z``) and MLP neurons (``L5N1024``, ``hook_post``); ``d``
is ``d_head`` for a head and ``1`` (a scalar) for a neuron. Weight names are those of
:func:`circuits.model.read_weight` (``blocks.3.attn.o.weight``, ``nn.Linear`` layout ``[out, in]``).

:func:`apply_edit` applies several edits in the order given (weight edits read the weights left by the
edits before them), refuses a model whose weight fingerprint differs from the manifest's, and gives the
model back bit for bit on removal. :func:`baked` turns every deterministic hook edit into the equivalent
weight edit, which is what :func:`circuits.editing.export.export_hf` saves.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from circuits import model as M
from circuits.io import atomic_write_bytes, atomic_write_text, validation_message
from circuits.sites import Component, HeadRef, NeuronRef, ResidRef, parse_component

EDIT_SCHEMA_VERSION = "0.3"
EditKind = Literal[
    "ablation",
    "pruning",
    "scaling",
    "steering",
    "offset",
    "directional_ablation",
    "orthogonalization",
    "low_rank",
    "invariance",
    "neuron_repair",
]
EDIT_KINDS: tuple[str, ...] = get_args(EditKind)
#: Kinds applied as forward hooks (the rest change weights).
HOOK_KINDS = frozenset({"ablation", "scaling", "steering", "offset", "directional_ablation"})
Scalar = float | int | str
#: A weight edit step: ``(weight name, current value or None for an absent bias → new value)``.
WeightStep = M.WeightStep


class EditError(ValueError):
    """An edit file is malformed, or an edit does not fit the model it is applied to."""


class EditManifest(BaseModel):
    """The JSON manifest of a saved edit (validated on load)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal["0.3"] = EDIT_SCHEMA_VERSION
    kind: EditKind
    components: list[str] = Field(min_length=1)
    hyperparameters: dict[str, Scalar]
    model_name: str
    model_fingerprint: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    model_source: dict[str, str] = Field(default_factory=dict)
    suite: dict[str, Scalar]
    tensors_sha256: str = Field(default="", pattern=r"^$|^[0-9a-f]{64}$")
    packages: dict[str, str] = Field(default_factory=dict)
    training: dict[str, Scalar] | None = None
    evaluation: dict[str, Scalar] | None = None


@dataclass(frozen=True)
class Edit:
    """An edit: what it touches and the tensors it needs.

    Attributes:
        kind: The edit kind (see the module docstring for each kind's tensors).
        components: Components it acts on, in order (for model-wide kinds: the site the direction or
            vector was read at, e.g. ``L12RESID``).
        tensors: Named tensors.
        model_name: Name of the model it was made for.
        model_fingerprint: Weight fingerprint of that model.
        hyperparameters: e.g. ``{"mode": "mean", "k": 5}``.
        suite: Where it was built (suite name, split, content hash, number of pairs).
        training: For trained kinds: steps, seed, losses, training-data hash, wall time.
        evaluation: Measured before/after numbers, if any.
        model_source: Where that model's weights came from (:class:`circuits.model.Provenance`).
    """

    kind: EditKind
    components: tuple[Component, ...]
    tensors: dict[str, Tensor]
    model_name: str
    model_fingerprint: str
    hyperparameters: dict[str, Scalar] = field(default_factory=dict)
    suite: dict[str, Scalar] = field(default_factory=dict)
    training: dict[str, Scalar] | None = None
    evaluation: dict[str, Scalar] | None = None
    model_source: dict[str, str] = field(default_factory=dict)

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


def _upgrade(raw: Any) -> Any:
    """Schema 0.1 (only ``mean_ablation``) → 0.2 (``ablation`` with ``mode="mean"``) → 0.3 (``model_source``)."""
    if isinstance(raw, dict) and raw.get("schema_version") == "0.1":
        raw = dict(raw, schema_version="0.2")
        if raw.get("kind") == "mean_ablation":
            raw["kind"] = "ablation"
            raw["hyperparameters"] = dict(raw.get("hyperparameters") or {}, mode="mean")
    if isinstance(raw, dict) and raw.get("schema_version") == "0.2":
        raw = dict(raw, schema_version="0.3")  # 0.3 adds the optional model_source
    return raw


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
        model_source=edit.model_source,
        suite=edit.suite,
        tensors_sha256=hashlib.sha256(blob).hexdigest(),
        packages=packages or {},
        training=edit.training,
        evaluation=edit.evaluation,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path.with_suffix(".safetensors"), blob)
    atomic_write_text(path, manifest.model_dump_json(indent=2) + "\n")
    return path


def load_edit(path: Path | str) -> Edit:
    """Load an edit saved by :func:`save_edit` (schema 0.1 files are upgraded).

    Args:
        path: The manifest (``.json``).

    Returns:
        The edit.

    Raises:
        EditError: Missing files, invalid JSON, a schema violation (naming the field), a tensor file
            that does not match the manifest's hash, or tensors the edit's kind needs but lacks.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise EditError(f"cannot read edit manifest {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EditError(f"{path} is not valid JSON: {e}") from None
    try:
        manifest = EditManifest.model_validate(_upgrade(raw))
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
    try:
        tensors = st_load(blob)
    except Exception as e:  # safetensors raises its own error types
        raise EditError(f"{tensor_path} is not a valid safetensors file: {e}") from None
    edit = Edit(
        kind=manifest.kind,
        components=components,
        tensors=tensors,
        model_name=manifest.model_name,
        model_fingerprint=manifest.model_fingerprint,
        model_source=dict(manifest.model_source),
        hyperparameters=dict(manifest.hyperparameters),
        suite=dict(manifest.suite),
        training=None if manifest.training is None else dict(manifest.training),
        evaluation=None if manifest.evaluation is None else dict(manifest.evaluation),
    )
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
    load_edit(path)  # validates the manifest and its tensors before anything is written
    raw = _upgrade(json.loads(path.read_text(encoding="utf-8")))
    try:
        manifest = EditManifest.model_validate({**raw, "evaluation": dict(evaluation)})
    except ValidationError as e:
        raise EditError(f"{path}: evaluation: {validation_message(e)}") from None
    atomic_write_text(path, manifest.model_dump_json(indent=2) + "\n")
    return path


def required_tensors(edit: Edit) -> list[str]:
    """Names of the tensors an edit's kind needs (for validation).

    Raises:
        EditError: A ``mode`` hyperparameter the kind does not know.
    """
    mode = str(edit.hyperparameters.get("mode", ""))
    per_component = [str(c) for c in edit.components]
    if edit.kind in ("ablation", "pruning"):
        allowed = ("zero", "mean", "resample") if edit.kind == "ablation" else ("zero", "mean")
        if mode not in allowed:
            raise EditError(f"{edit.kind} edit needs hyperparameter mode in {allowed}, got {mode!r}")
        return [] if mode == "zero" else per_component
    if edit.kind in ("offset", "neuron_repair"):
        return per_component
    if edit.kind == "steering":
        return ["vector"]
    if edit.kind in ("directional_ablation", "orthogonalization"):
        return ["direction"]
    if edit.kind in ("low_rank", "invariance"):
        return [k for k in edit.tensors if k.endswith((".lora_A", ".lora_B"))] or ["<weight>.lora_A"]
    return []


# --------------------------------------------------------------------------------------------------
# What an edit does to a model: forward hooks and/or weight steps
# --------------------------------------------------------------------------------------------------


def _check_component(c: Component, model: Any, kinds: tuple[type, ...], edit: Edit) -> None:
    shape = M.shape_of(model)
    if not isinstance(c, kinds):
        raise EditError(f"a {edit.kind} edit acts on {'/'.join(k.__name__ for k in kinds)}, got {c}")
    if c.layer >= shape.n_layers:
        raise EditError(f"{c} does not exist in a model with {shape.n_layers} layers")
    if isinstance(c, HeadRef) and c.head >= shape.n_heads:
        raise EditError(f"{c} does not exist in a model with {shape.n_heads} heads per layer")
    if isinstance(c, NeuronRef) and c.index >= shape.d_mlp:
        raise EditError(f"{c} does not exist in a model with d_mlp={shape.d_mlp}")


def _unit_of(c: Component) -> int:
    return c.head if isinstance(c, HeadRef) else c.index  # type: ignore[union-attr]


def _component_value(edit: Edit, c: Component, model: Any, *, bank: bool = False) -> Tensor:
    shape = M.shape_of(model)
    t = edit.tensors[str(c)]
    want: tuple[int, ...] = (shape.d_head,) if isinstance(c, HeadRef) else ()
    got = tuple(t.shape[1:]) if bank else tuple(t.shape)
    if got != want or (bank and (t.ndim == 0 or t.shape[0] == 0)):
        raise EditError(f"{edit.kind} tensor for {c} has shape {tuple(t.shape)}, expected {('n',) if bank else ()}{want}")
    return t


def _per_unit_hooks(edit: Edit, model: Any, fn: Callable[[Tensor, Tensor, list[Component]], Tensor]) -> list[tuple[str, M.HookFn]]:
    """Group components by hook point; ``fn(activation, unit_index, components)`` returns the new activation."""
    by_hook: dict[str, list[Component]] = defaultdict(list)
    for c in edit.components:
        _check_component(c, model, (HeadRef, NeuronRef), edit)
        by_hook[HeadRef(c.layer, 0).hook_name if isinstance(c, HeadRef) else NeuronRef(c.layer, 0).hook_name].append(c)

    def make(comps: list[Component]) -> M.HookFn:
        units = torch.tensor([_unit_of(c) for c in comps])

        def hook(act: Tensor, hook: Any) -> Tensor:
            return fn(act, units, comps)

        return hook

    return [(name, make(comps)) for name, comps in sorted(by_hook.items())]


def _ablation_hooks(edit: Edit, model: Any) -> list[tuple[str, M.HookFn]]:
    mode = edit.hyperparameters["mode"]
    if mode == "resample":
        gen = torch.Generator().manual_seed(int(edit.hyperparameters.get("seed", 0)))
        banks = {str(c): _component_value(edit, c, model, bank=True) for c in edit.components}

        def resample(act: Tensor, units: Tensor, comps: list[Component]) -> Tensor:
            act = act.clone()
            for u, c in zip(units.tolist(), comps):
                bank = banks[str(c)]
                rows = torch.randint(bank.shape[0], (act.shape[0],), generator=gen)
                act[:, :, u] = bank[rows][:, None].to(act.dtype)  # one reference activation per prompt
            return act

        return _per_unit_hooks(edit, model, resample)
    if mode == "mean":
        values = {str(c): _component_value(edit, c, model) for c in edit.components}

        def mean(act: Tensor, units: Tensor, comps: list[Component]) -> Tensor:
            act = act.clone()
            act[:, :, units] = torch.stack([values[str(c)] for c in comps]).to(act.dtype)
            return act

        return _per_unit_hooks(edit, model, mean)

    def zero(act: Tensor, units: Tensor, comps: list[Component]) -> Tensor:
        act = act.clone()
        act[:, :, units] = 0
        return act

    return _per_unit_hooks(edit, model, zero)


def _scaling_hooks(edit: Edit, model: Any) -> list[tuple[str, M.HookFn]]:
    alpha = float(edit.hyperparameters["alpha"])

    def scale(act: Tensor, units: Tensor, comps: list[Component]) -> Tensor:
        act = act.clone()
        act[:, :, units] = act[:, :, units] * alpha
        return act

    return _per_unit_hooks(edit, model, scale)


def _offset_hooks(edit: Edit, model: Any) -> list[tuple[str, M.HookFn]]:
    deltas = {str(c): _component_value(edit, c, model) for c in edit.components}

    def add(act: Tensor, units: Tensor, comps: list[Component]) -> Tensor:
        act = act.clone()
        act[:, :, units] = act[:, :, units] + torch.stack([deltas[str(c)] for c in comps]).to(act.dtype)
        return act

    return _per_unit_hooks(edit, model, add)


def _resid_vector(edit: Edit, model: Any, key: str) -> Tensor:
    d_model = M.shape_of(model).d_model
    v = edit.tensors[key]
    if tuple(v.shape) != (d_model,):
        raise EditError(f"{edit.kind} tensor {key!r} has shape {tuple(v.shape)}, expected ({d_model},)")
    return v


def _steering_site(edit: Edit, model: Any) -> ResidRef:
    (site,) = edit.components if len(edit.components) == 1 else (None,)
    if not isinstance(site, ResidRef) or site.site != "resid_pre" or site.pos is not None:
        raise EditError(f"a steering edit acts on one residual stream at all positions (e.g. L12RESID), got {edit.components}")
    _check_component(site, model, (ResidRef,), edit)
    return site


def _steering_hooks(edit: Edit, model: Any) -> list[tuple[str, M.HookFn]]:
    site = _steering_site(edit, model)
    v = _resid_vector(edit, model, "vector") * float(edit.hyperparameters.get("coefficient", 1.0))

    def add(resid: Tensor, hook: Any) -> Tensor:
        return resid + v.to(resid.dtype)

    return [(site.hook_name, add)]


def _direction(edit: Edit, model: Any) -> Tensor:
    r = _resid_vector(edit, model, "direction").double()
    norm = r.norm()
    if not torch.isfinite(norm) or norm < 1e-6:
        raise EditError(f"{edit.kind} direction has norm {float(norm):.3g}; it must be a nonzero vector")
    return r / norm


def _directional_ablation_hooks(edit: Edit, model: Any) -> list[tuple[str, M.HookFn]]:
    r = _direction(edit, model).float()
    n_layers = M.shape_of(model).n_layers

    def ablate(resid: Tensor, hook: Any) -> Tensor:
        rr = r.to(resid.dtype)
        return resid - (resid @ rr)[..., None] * rr

    names = [ResidRef(layer, None, s).hook_name for layer in range(n_layers) for s in ("resid_pre", "resid_mid")]
    names.append(ResidRef(n_layers - 1, None, "resid_post").hook_name)
    return [(n, ablate) for n in names if M.has_hook(model, n)]  # attention-only and parallel blocks have no resid_mid


def _columns(c: Component, model: Any) -> tuple[str, slice]:
    """The output weight a component writes through, and its input columns there."""
    if isinstance(c, HeadRef):
        d = M.shape_of(model).d_head
        return f"blocks.{c.layer}.attn.o", slice(c.head * d, (c.head + 1) * d)
    return f"blocks.{c.layer}.mlp.out", slice(c.index, c.index + 1)  # type: ignore[union-attr]


def _add_bias(bias: Tensor | None, weight_rows: int, delta: Tensor) -> Tensor:
    base = torch.zeros(weight_rows, dtype=delta.dtype) if bias is None else bias
    return base + delta.to(base.dtype)


def _column_steps(edit: Edit, model: Any, new_columns: Callable[[Component, Tensor], Tensor], bias_delta: Callable[[Component, Tensor], Tensor] | None) -> list[WeightStep]:
    """One bias step (optional, first: it reads the columns before they change) and one weight step
    per output matrix, rewriting the input columns of every component that writes through it."""
    by_lin: dict[str, list[tuple[Component, slice]]] = defaultdict(list)
    for c in edit.components:
        _check_component(c, model, (HeadRef, NeuronRef), edit)
        lin, cols = _columns(c, model)
        by_lin[lin].append((c, cols))
    steps: list[WeightStep] = []
    for lin, targets in by_lin.items():

        def weight(w: Tensor | None, targets: list[tuple[Component, slice]] = targets) -> Tensor:
            assert w is not None
            new = [new_columns(c, w[:, cols].clone()) for c, cols in targets]
            w = w.clone()
            for (_, cols), value in zip(targets, new):
                w[:, cols] = value
            return w

        if bias_delta is not None:

            def bias(b: Tensor | None, lin: str = lin, targets: list[tuple[Component, slice]] = targets) -> Tensor:
                w = M.read_weight(model, f"{lin}.weight")
                assert w is not None
                return _add_bias(b, w.shape[0], sum(bias_delta(c, w[:, cols]) for c, cols in targets))  # type: ignore[arg-type]

            steps.append((f"{lin}.bias", bias))
        steps.append((f"{lin}.weight", weight))
    return steps


def _as_vector(t: Tensor) -> Tensor:
    return t.reshape(-1).to(torch.float32)


def _pruning_steps(edit: Edit, model: Any) -> list[WeightStep]:
    mode = edit.hyperparameters["mode"]
    means = {str(c): _as_vector(_component_value(edit, c, model)) for c in edit.components} if mode == "mean" else {}
    fold = (lambda c, w: w.float() @ means[str(c)]) if mode == "mean" else None
    return _column_steps(edit, model, lambda c, w: torch.zeros_like(w), fold)


def _scaling_steps(edit: Edit, model: Any) -> list[WeightStep]:
    alpha = float(edit.hyperparameters["alpha"])
    return _column_steps(edit, model, lambda c, w: w * alpha, None)


def _offset_steps(edit: Edit, model: Any) -> list[WeightStep]:
    deltas = {str(c): _as_vector(_component_value(edit, c, model)) for c in edit.components}
    return _column_steps(edit, model, lambda c, w: w, lambda c, w: w.float() @ deltas[str(c)])


def _neuron_repair_steps(edit: Edit, model: Any) -> list[WeightStep]:
    scales = {str(c): _component_value(edit, c, model) for c in edit.components}
    for c in edit.components:
        _check_component(c, model, (NeuronRef,), edit)
    return _column_steps(edit, model, lambda c, w: w * scales[str(c)].to(w.dtype), None)


def _steering_steps(edit: Edit, model: Any) -> list[WeightStep]:
    """Adding ``v`` to ``resid_pre`` of layer ``L`` at every position = adding it to the bias of the
    last writer before it (layer ``L-1``'s MLP output, or attention output in an attention-only
    model), or to every embedding row for ``L = 0``."""
    site = _steering_site(edit, model)
    _require_residual_folds(edit, model)
    v = _resid_vector(edit, model, "vector").float() * float(edit.hyperparameters.get("coefficient", 1.0))
    if site.layer == 0:
        return [("embed.weight", lambda w: w + v.to(w.dtype))]  # type: ignore[operator]
    lin = f"blocks.{site.layer - 1}.{'attn.o' if _attn_only(model) else 'mlp.out'}"
    d_model = M.shape_of(model).d_model
    return [(f"{lin}.bias", lambda b: _add_bias(b, d_model, v))]


def _attn_only(model: Any) -> bool:
    return not M.has_weight(model, "blocks.0.mlp.out.weight")


def _require_residual_folds(edit: Edit, model: Any) -> None:
    if not model.arch.residual_writes_foldable():
        raise EditError(
            f"a {edit.kind} edit has no weight form on {model.arch.name}: its sublayer outputs are normalised before "
            "they reach the residual stream, so a vector or projection cannot be folded into their weights; apply it as hooks"
        )


def _writers(model: Any) -> list[str]:
    """Every weight that writes into the residual stream: ``W_E``, each ``W_O`` and ``W_out``, and their biases."""
    names = ["embed.weight", *(["pos_embed.weight"] if M.has_weight(model, "pos_embed.weight") else [])]
    lins = ("attn.o",) if _attn_only(model) else ("attn.o", "mlp.out")
    for layer in range(M.shape_of(model).n_layers):
        for lin in lins:
            names.append(f"blocks.{layer}.{lin}.weight")
            if M.read_weight(model, f"blocks.{layer}.{lin}.bias") is not None:
                names.append(f"blocks.{layer}.{lin}.bias")
    return names


def _orthogonalization_steps(edit: Edit, model: Any) -> list[WeightStep]:
    _require_residual_folds(edit, model)
    r = _direction(edit, model)

    def project(name: str) -> Callable[[Tensor | None], Tensor]:
        def step(w: Tensor | None) -> Tensor:
            assert w is not None
            wd = w.double()
            if name in ("embed.weight", "pos_embed.weight"):  # rows are residual vectors
                out = wd - (wd @ r)[:, None] * r[None, :]
            elif name.endswith(".bias"):
                out = wd - (wd @ r) * r
            else:  # [d_model, in]: columns are residual vectors
                out = wd - r[:, None] * (r @ wd)[None, :]
            return out.to(w.dtype)

        return step

    return [(n, project(n)) for n in _writers(model)]


def low_rank_factors(edit: Edit) -> dict[str, tuple[Tensor, Tensor]]:
    """``{weight name: (A [r, in], B [out, r])}`` of a low-rank or invariance edit."""
    names = sorted({k.rsplit(".", 1)[0] for k in edit.tensors if k.endswith((".lora_A", ".lora_B"))})
    out = {}
    for n in names:
        if f"{n}.lora_A" not in edit.tensors or f"{n}.lora_B" not in edit.tensors:
            raise EditError(f"{edit.kind} edit has only one of {n}.lora_A / {n}.lora_B")
        out[n] = (edit.tensors[f"{n}.lora_A"], edit.tensors[f"{n}.lora_B"])
    if not out:
        raise EditError(f"{edit.kind} edit has no lora_A/lora_B tensors")
    return out


def _low_rank_steps(edit: Edit, model: Any) -> list[WeightStep]:
    """``W' = W + α B A`` (Hu et al. 2022, LoRA) for each factored weight."""
    alpha = float(edit.hyperparameters.get("alpha", 1.0))
    steps: list[WeightStep] = []
    for name, (a, b) in low_rank_factors(edit).items():
        try:
            w = M.read_weight(model, name)
        except KeyError as e:
            raise EditError(f"{edit.kind} edit: {e.args[0]}") from None
        if w is None or a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1] or (b.shape[0], a.shape[1]) != tuple(w.shape):
            raise EditError(f"{edit.kind} factors for {name} have shapes A {tuple(a.shape)}, B {tuple(b.shape)}; weight is {None if w is None else tuple(w.shape)}")
        steps.append((name, lambda w, a=a, b=b: w + (alpha * (b.double() @ a.double())).to(w.dtype)))  # type: ignore[misc, operator]
    return steps


_HOOKS: dict[str, Callable[[Edit, Any], list[tuple[str, M.HookFn]]]] = {
    "ablation": _ablation_hooks,
    "scaling": _scaling_hooks,
    "steering": _steering_hooks,
    "offset": _offset_hooks,
    "directional_ablation": _directional_ablation_hooks,
}
_WEIGHTS: dict[str, Callable[[Edit, Any], list[WeightStep]]] = {
    "pruning": _pruning_steps,
    "orthogonalization": _orthogonalization_steps,
    "low_rank": _low_rank_steps,
    "invariance": _low_rank_steps,
    "neuron_repair": _neuron_repair_steps,
}
#: Hook kinds with an exactly equivalent weight form (for export).
_BAKED: dict[str, Callable[[Edit, Any], list[WeightStep]]] = {
    "scaling": _scaling_steps,
    "steering": _steering_steps,
    "offset": _offset_steps,
    "directional_ablation": _orthogonalization_steps,
}


def weight_steps(edit: Edit, model: Any) -> list[WeightStep]:
    """The weight steps of a weight-kind edit, differentiable in the edit's tensors (for training).

    Raises:
        EditError: ``edit`` is a hook kind, or does not fit the model.
    """
    if edit.kind not in _WEIGHTS:
        raise EditError(f"{edit.kind} is applied with hooks, not weights")
    return _WEIGHTS[edit.kind](edit, model)


def _baked_steps(edit: Edit, model: Any) -> list[WeightStep]:
    if edit.kind in _WEIGHTS:
        return _WEIGHTS[edit.kind](edit, model)
    if edit.kind == "ablation":
        if edit.hyperparameters["mode"] == "resample":
            raise EditError("a resample ablation is random at every forward pass and has no weight form; use mode zero or mean to export")
        return _pruning_steps(edit, model)
    return _BAKED[edit.kind](edit, model)


def _check_bakeable(hook_edits: list[Edit]) -> None:
    """Refuse hook compositions whose weight forms are not the same function.

    Two column edits (ablation, scaling, offset) of one component compose on its activation but not
    on its (then zeroed or rescaled) output columns; a steering vector added after a directional
    ablation keeps its component along the direction until the next ablation site, which a projected
    weight cannot express.

    Raises:
        EditError: Such a composition.
    """
    seen: dict[str, Edit] = {}
    directional = False
    for e in hook_edits:
        if e.kind in ("ablation", "scaling", "offset"):
            for c in e.components:
                if str(c) in seen:
                    raise EditError(f"cannot bake {seen[str(c)]} and {e}: both act on {c}; bake them separately")
                seen[str(c)] = e
        if e.kind == "directional_ablation":
            directional = True
        if e.kind == "steering" and directional:
            raise EditError(f"cannot bake {e} after a directional ablation; put the steering edit first")


def _fold(edit: Edit, model: Any) -> Callable[[], list[WeightStep]] | None:
    """The weight form of a hook edit for generation, or ``None`` where there is none."""
    if edit.kind == "ablation" and edit.hyperparameters["mode"] == "resample":
        return None
    if edit.kind in ("steering", "directional_ablation") and not model.arch.residual_writes_foldable():
        return None
    return lambda: _baked_steps(edit, model)


class AppliedEdits:
    """Edits applied to a model; remove them with :meth:`remove` or by leaving a ``with`` block.

    Used without ``with``, the edits stay applied (permanently) until :meth:`remove` is called.
    Removal reinstalls the original weight tensors, so the model is bit-for-bit what it was.
    """

    def __init__(self, removers: list[Callable[[], None]], edits: tuple[Edit, ...]):
        self._removers = removers
        self.edits = edits

    def remove(self) -> None:
        """Undo the edits, last first (idempotent)."""
        while self._removers:
            self._removers.pop()()

    def __enter__(self) -> AppliedEdits:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def verify_fingerprint(model: Any, *edits: Edit) -> None:
    """Refuse edits made for another model.

    Raises:
        EditError: Some edit's fingerprint differs from the model's weights.
    """
    have = M.fingerprint(model)
    for e in edits:
        if e.model_fingerprint != have:
            raise EditError(
                f"edit {e} was made for model {e.model_name} {e.model_fingerprint[:19]}…, "
                f"but this model is {have[:19]}…; refusing to apply"
            )


def apply_edit(model: Any, *edits: Edit, check_fingerprint: bool = True, bake: bool = False) -> AppliedEdits:
    """Apply edits to a model, in the order given.

    Hook kinds attach forward hooks; weight kinds replace weights, each step reading the weights the
    previous edits left (so ``orthogonalization`` after ``low_rank`` projects the low-rank-edited
    matrices). Hooks act on the activations of the weight-edited model. With ``bake=True`` every edit
    is applied in its weight form (deterministic hook kinds have an exact one), as
    :func:`circuits.editing.export.export_hf` needs: the weight kinds first, in order, then the baked
    hook kinds, in order, which computes the same function as the unbaked edits.

    Args:
        model: A ``TransformerBridge``.
        *edits: One or more edits.
        check_fingerprint: Refuse a model whose weights differ from the edits' (default on). All edits
            are checked against the *unedited* model, before any is applied.
        bake: Apply every edit as weights.

    Returns:
        A handle: a context manager that removes the edits on exit; without ``with`` the edits stay
        until ``handle.remove()``.

    Raises:
        EditError: No edits, a fingerprint mismatch, an edit that does not fit the model's shape, or
            (with ``bake``) a resample ablation. Nothing stays applied after an error.
    """
    if not edits:
        raise EditError("no edits to apply")
    if check_fingerprint:
        verify_fingerprint(model, *edits)
    for e in edits:
        required_tensors(e)  # validates mode
    removers: list[Callable[[], None]] = []
    # Hooks act on the activations of the weight-edited model whatever their position in the list, so
    # their weight forms are baked after every weight edit (in order among themselves): same function.
    order = [e for e in edits if e.kind in _WEIGHTS] + [e for e in edits if e.kind not in _WEIGHTS] if bake else list(edits)
    if bake:
        _check_bakeable([e for e in edits if e.kind not in _WEIGHTS])
    try:
        for e in order:
            if bake or e.kind in _WEIGHTS:
                for name, step in _baked_steps(e, model) if bake else _WEIGHTS[e.kind](e, model):
                    try:
                        current = M.read_weight(model, name)
                        removers.append(M.replace_weight(model, name, step(current)))
                    except (KeyError, ValueError) as err:
                        raise EditError(f"{e}: {err}") from None
            else:
                removers.append(M.attach_overlay(model, _HOOKS[e.kind](e, model), _fold(e, model)))
    except Exception:
        AppliedEdits(removers, edits).remove()
        raise
    return AppliedEdits(removers, edits)
