"""The circuit atlas: a versioned, validated record of which components carry which behaviour.

An atlas is JSON on disk, validated by pydantic on load. It names the model (and a sha256 fingerprint
of its weights), the provenance of the run (package versions, command, seed), and one entry per
behaviour: the suite it was measured on (with a content hash), the metric, the method, and for every
component its effect statistics over prompts and whether it was flagged.

Flag rule (v0.1): a component is flagged when its mean normalised effect is at least ``threshold``
*and* the lower end of its 95% bootstrap CI is above 0, i.e. it significantly moves the metric towards
the clean (harmful) behaviour.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from circuits.io import atomic_write_text
from circuits.sites import parse_component

SCHEMA_VERSION = "0.1"


class AtlasError(ValueError):
    """An atlas file is malformed, or a query names something the atlas does not hold."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelInfo(_Frozen):
    """The model an atlas was measured on."""

    name: str
    fingerprint: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    n_layers: int = Field(ge=1)
    n_heads: int = Field(ge=1)
    d_model: int = Field(ge=1)
    d_mlp: int = Field(ge=1)


class Provenance(_Frozen):
    """How the atlas was made."""

    packages: dict[str, str]
    command: str
    seed: int


class SuiteRef(_Frozen):
    """The data a behaviour was measured on."""

    name: str
    content_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    n_pairs: int = Field(ge=1)
    split: Literal["build", "eval"]


class MethodInfo(_Frozen):
    """The probing method: activation patching of component outputs at all positions."""

    name: Literal["activation_patching"]
    direction: Literal["denoising", "noising"]
    normalisation: Literal["0=corrupted,1=clean"]


class EffectStats(_Frozen):
    """Per-prompt normalised effect statistics of one component."""

    mean: float
    std: float = Field(ge=0)
    n: int = Field(ge=1)
    ci_low: float
    ci_high: float
    p_value: float = Field(ge=0, le=1)


class ComponentEntry(_Frozen):
    """One component's effect on one behaviour."""

    id: str
    kind: Literal["head", "attn", "mlp", "neuron", "resid"]
    effect: EffectStats
    flagged: bool

    @field_validator("id")
    @classmethod
    def _valid_id(cls, v: str) -> str:
        parse_component(v)
        return v


class Behaviour(_Frozen):
    """One measured behaviour and the effect of every probed component on it."""

    name: str
    kind: Literal["harmful", "spurious"]
    suite: SuiteRef
    metric: str
    clean_metric_mean: float
    corrupted_metric_mean: float
    method: MethodInfo
    threshold: float
    flag_rule: str
    components: list[ComponentEntry] = Field(min_length=1)

    def flagged(self) -> list[ComponentEntry]:
        """Flagged components, largest mean effect first."""
        return sorted((c for c in self.components if c.flagged), key=lambda c: -c.effect.mean)

    def top(self, k: int, *, kind: str | None = None) -> list[ComponentEntry]:
        """The ``k`` components with the largest mean effect (optionally of one kind)."""
        pool = [c for c in self.components if kind is None or c.kind == kind]
        return sorted(pool, key=lambda c: -c.effect.mean)[:k]


class Atlas(_Frozen):
    """A circuit atlas (see module docstring)."""

    schema_version: Literal["0.1"] = SCHEMA_VERSION
    model: ModelInfo
    provenance: Provenance
    behaviours: list[Behaviour] = Field(min_length=1)

    def behaviour(self, name: str) -> Behaviour:
        """The behaviour called ``name``.

        Raises:
            AtlasError: No such behaviour.
        """
        for b in self.behaviours:
            if b.name == name:
                return b
        raise AtlasError(f"atlas has no behaviour {name!r}; it has {[b.name for b in self.behaviours]}")

    def save(self, path: Path | str) -> Path:
        """Write the atlas as indented JSON, atomically.

        Returns:
            The path written.
        """
        return atomic_write_text(path, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> Atlas:
        """Read and validate an atlas file.

        Raises:
            AtlasError: Missing file, invalid JSON, or a schema violation; the message names the
                bad field's path (e.g. ``behaviours.0.components.3.effect.std``).
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise AtlasError(f"cannot read atlas {path}: {e.strerror or e}") from None
        return cls.parse(text, source=str(path))

    @classmethod
    def parse(cls, text: str, *, source: str = "<string>") -> Atlas:
        """Validate atlas JSON text (see :meth:`load`)."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise AtlasError(f"{source} is not valid JSON: {e}") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "<root>"
            raise AtlasError(f"{source}: field {where}: {first['msg']}") from None
