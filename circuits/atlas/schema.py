"""The circuit atlas: a versioned, validated record of which components carry which behaviour.

An atlas is JSON on disk, validated by pydantic on load (``circuits atlas schema`` exports the JSON
Schema). It names the model (and a sha256 fingerprint of its weights and its dimensions), the
provenance of the run (package versions, git commit, command, seeds, timestamps), one entry per
behaviour, and any causal-tracing grids:

* a behaviour: name, kind (``harmful`` | ``spurious``), the suite it was measured on (name, content
  hash, number of pairs, split), the metric, the methods used (intervention, direction, noise level,
  IG steps, window, seeds), and its components;
* a component: a stable id (``L9H6``, ``L5N1024``, ``L7MLP``, ``L3RESID@4``), its kind, its effect
  statistics (mean, std, n, 95% bootstrap CI, p-value of a paired test) under the behaviour's primary
  method, the same statistics under every other method (``effects``), scores
  (:mod:`circuits.probing.scores`: causal effect CE, spuriousness, SSS, IDS, R), and whether it is flagged
  with the rule that flagged it.

Flag rule: a component is flagged when its mean primary effect is at least the behaviour's
``threshold``, its 95% bootstrap CI lies above 0 (:attr:`EffectStats.above_zero`, one-sided: a
component carries a behaviour only with a positive effect) *and* its Benjamini–Hochberg q-value over
the behaviour's components is below 0.05 (``q_value``: the false discovery rate is controlled at 5%).
Atlases written before the q-value record ``flag_rule`` without it and ``q_value`` ``None``. A method with a stochastic intervention
(``resample``, ``noise``) must record at least 3 seeds (validated), so that its effects can be checked
for one sign across seeds (:func:`circuits.probing.scores.significant_across_seeds`).

Version history: ``0.1`` (one method, no scores), ``0.2`` (no model source) and ``0.3`` (no
tokenization policy) are read and upgraded on load (:mod:`circuits.atlas.upgrade`), then validated like
a ``0.4`` file; ``0.4`` is written. ``0.4`` records the tokenization policy the atlas was measured under
(``model.tokenization``: whether a BOS token was prepended, :class:`circuits.model.Tokenization`);
earlier files were all measured with BOS prepended (TransformerLens' default), which the upgrade records
with ``source: "legacy"``.

Validation on load: numbers are finite (JSON has no NaN; a non-finite value is refused when the atlas
is built, so no file that cannot be read back is ever written), ``ci_low <= ci_high``,
``schema_version`` is present, component ids are canonical, match their kind (``L9H6`` is a head) and
exist in the recorded model's dimensions, circuit nodes match their kind and lie inside the model,
trace grids have one row per layer and their subject positions lie among their tokens, the model's
dimensions are bounded (:data:`circuits.sites.MAX_LAYERS`, ...) before anything is allocated from
them, integers are JSON integers within 64 bits, and the file is read within the limits of
:mod:`circuits.io` (size, depth, no key twice, no lone surrogate). What is written is validated the
same way first, so it can always be read back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import (
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from circuits.atlas.frames import atlas_dataframe
from circuits.atlas.graph import CircuitGraph
from circuits.atlas.records import (  # noqa: F401 - AtlasError, ModelInfo, Provenance, SuiteRef, TokenizationInfo: part of the schema
    AtlasError,
    Count,
    Int64,
    ModelInfo,
    Provenance,
    SuiteRef,
    TokenizationInfo,
    _Frozen,
)
from circuits.atlas.upgrade import upgrade
from circuits.io import (
    atomic_write_text,
    check_json_value,
    parse_json,
    read_json_file,
    validation_message,
)
from circuits.sites import (
    ComponentError,
    check_components,
    parse_component,
)

SCHEMA_VERSION = "0.4"
ComponentKind = Literal["head", "attn", "mlp", "neuron", "resid"]
#: Interventions whose effects vary with the seed (the ≥3-seed rule applies to them).
STOCHASTIC_INTERVENTIONS = frozenset({"resample", "noise"})
MethodName = Literal["activation_patching", "attribution_patching", "eap_ig", "gradient_sensitivity", "spurious_sensitivity", "causal_tracing"]


class MethodInfo(_Frozen):
    """One probing method as run: its key in ``ComponentEntry.effects`` is :attr:`key`."""

    name: MethodName
    intervention: str = "swap"
    direction: Literal["denoising", "noising"] = "denoising"
    metric: str = ""
    normalisation: Literal["0=corrupted,1=clean", "none"] = "0=corrupted,1=clean"
    noise_std: float | None = None
    ig_steps: Count | None = None
    window: Count | None = None
    seeds: list[Int64] = Field(default_factory=lambda: [0])

    @property
    def key(self) -> str:
        """``name/intervention/direction`` (e.g. ``activation_patching/swap/denoising``)."""
        return f"{self.name}/{self.intervention}/{self.direction}"

    @model_validator(mode="after")
    def _seeds_for_noise(self) -> MethodInfo:
        if self.intervention in STOCHASTIC_INTERVENTIONS and len(set(self.seeds)) < 3:
            raise ValueError(f"a {self.intervention} intervention is random: record at least 3 seeds, got {self.seeds}")
        return self


class EffectStats(_Frozen):
    """Per-prompt effect statistics of one component under one method."""

    mean: float
    std: float = Field(ge=0)
    n: Count
    ci_low: float
    ci_high: float
    p_value: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _ordered_ci(self) -> EffectStats:
        if self.ci_low > self.ci_high:
            raise ValueError(f"ci_low {self.ci_low} is above ci_high {self.ci_high}")
        return self

    @property
    def significant(self) -> bool:
        """Two-sided: the 95% CI excludes 0."""
        return self.ci_low > 0 or self.ci_high < 0

    @property
    def above_zero(self) -> bool:
        """One-sided: the 95% CI lies above 0 (the significance condition of the flag rule)."""
        return self.ci_low > 0


class ComponentEntry(_Frozen):
    """One component's effect on one behaviour."""

    id: str
    kind: ComponentKind
    effect: EffectStats
    effects: dict[str, EffectStats] = Field(default_factory=dict)
    scores: dict[str, float] = Field(default_factory=dict)
    flagged: bool
    q_value: float | None = Field(default=None, ge=0, le=1)
    """Benjamini–Hochberg adjusted one-sided p-value of the primary effect being above 0, over the
    behaviour's components (:func:`circuits.stats.fdr_q_values`; the flag rule's false discovery rate
    control). ``None`` in atlases written before it: their ``flag_rule`` names the rule they used."""
    traced: bool | None = None
    """Flagged by noise-restoration tracing at this granularity (seed 004: ``Δ log P(y_h) > τ``;
    :mod:`circuits.probing.component_tracing`); ``None`` where not traced."""

    @field_validator("id")
    @classmethod
    def _valid_id(cls, v: str) -> str:
        parse_component(v)
        return v

    @model_validator(mode="after")
    def _id_matches_kind(self) -> ComponentEntry:
        actual = parse_component(self.id).kind
        if actual != self.kind:
            raise ValueError(f"component {self.id} is a {actual}, but its kind is {self.kind!r}")
        return self

    @property
    def layer(self) -> int:
        """The component's layer."""
        return parse_component(self.id).layer


class Behaviour(_Frozen):
    """One measured behaviour and the effect of every probed component on it."""

    name: str
    kind: Literal["harmful", "spurious", "capability"]
    suite: SuiteRef
    metric: str
    clean_metric_mean: float
    corrupted_metric_mean: float
    methods: list[MethodInfo] = Field(min_length=1)
    threshold: float
    flag_rule: str
    components: list[ComponentEntry] = Field(min_length=1)
    summary: dict[str, float] = Field(default_factory=dict)
    #: The edges that carry the behaviour (``circuits circuit``); absent in atlases without edge probing.
    circuit: CircuitGraph | None = None

    @model_validator(mode="after")
    def _unique_components(self) -> Behaviour:
        ids = [c.id for c in self.components]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"duplicate component ids {dup[:5]}")
        return self

    @property
    def primary(self) -> MethodInfo:
        """The method behind ``ComponentEntry.effect`` (the first listed)."""
        return self.methods[0]

    def flagged(self) -> list[ComponentEntry]:
        """Flagged components, largest mean effect first."""
        return sorted((c for c in self.components if c.flagged), key=lambda c: -c.effect.mean)

    def top(self, k: int, *, kind: str | None = None, by: str = "effect") -> list[ComponentEntry]:
        """The ``k`` components with the largest value of ``by`` (optionally of one kind).

        ``by`` is ``"effect"`` (mean primary effect), ``"|effect|"``, a method key of
        ``ComponentEntry.effects``, or a score name (``"R"``, ``"SSS"``, ...).

        Raises:
            AtlasError: ``by`` is not recorded for this behaviour.
        """
        pool = [c for c in self.components if kind is None or c.kind == kind]
        return sorted(pool, key=lambda c: -ranking_value(c, by, self.name))[:k]


def ranking_value(c: ComponentEntry, by: str, behaviour: str) -> float:
    """A component's value under ``by`` (see :meth:`Behaviour.top`): what atlases rank by.

    Raises:
        AtlasError: ``by`` is not recorded for this component.
    """
    if by == "effect":
        return c.effect.mean
    if by == "|effect|":
        return abs(c.effect.mean)
    if by in c.effects:
        return c.effects[by].mean
    if by in c.scores:
        return c.scores[by]
    raise AtlasError(f"behaviour {behaviour!r} has no score or method {by!r} for {c.id}; it has {sorted(c.scores) + sorted(c.effects)}")


class TraceRecord(_Frozen):
    """A causal-tracing grid (ROME) kept with the atlas."""

    prompt: str
    subject: str
    target: str
    kind: Literal["resid", "mlp", "attn"]
    window: Count
    severed: bool
    n_samples: Count
    seed: Int64
    noise_std: float = Field(gt=0)
    clean_prob: float
    corrupted_prob: float
    tokens: list[str] = Field(min_length=1)
    subject_positions: list[StrictInt] = Field(min_length=1)
    probs: list[list[float]] = Field(min_length=1)
    metric: str = "p(target)"
    """What ``probs``, ``clean_prob`` and ``corrupted_prob`` measure."""

    @model_validator(mode="after")
    def _grid_shape(self) -> TraceRecord:
        if any(len(row) != len(self.tokens) for row in self.probs):
            raise ValueError("every row of probs must have one value per token")
        bad = [p for p in self.subject_positions if not 0 <= p < len(self.tokens)]
        if bad:
            raise ValueError(f"subject position {bad[0]} is outside the {len(self.tokens)} tokens (0-{len(self.tokens) - 1})")
        if len(set(self.subject_positions)) != len(self.subject_positions):
            raise ValueError("subject positions repeat")
        return self


class BehaviourComponent(NamedTuple):
    """A component entry with the behaviour it belongs to."""

    behaviour: str
    entry: ComponentEntry


class Atlas(_Frozen):
    """A circuit atlas (see module docstring)."""

    schema_version: Literal["0.4"] = SCHEMA_VERSION
    model: ModelInfo
    provenance: Provenance
    behaviours: list[Behaviour] = Field(min_length=1)
    traces: list[TraceRecord] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_behaviours(self) -> Atlas:
        names = [b.name for b in self.behaviours]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate behaviour names {names}")
        for b in self.behaviours:
            try:
                check_components((c.id for c in b.components), self.model)
                if b.circuit is not None:
                    check_components((n.id for n in b.circuit.nodes if n.kind not in ("input", "logits")), self.model)
            except ComponentError as e:
                raise ValueError(f"behaviour {b.name!r}: {e}") from None
            if b.circuit is not None and any(n.kind == "logits" and not 0 <= n.layer <= self.model.n_layers for n in b.circuit.nodes):
                raise ValueError(f"behaviour {b.name!r}: the circuit's LOGITS node lies beyond the model's {self.model.n_layers} layers")
        for i, t in enumerate(self.traces):
            if len(t.probs) != self.model.n_layers:
                raise ValueError(f"traces.{i}: probs has {len(t.probs)} rows; the model has {self.model.n_layers} layers (one row each)")
        return self

    def behaviour(self, name: str) -> Behaviour:
        """The behaviour called ``name``.

        Raises:
            AtlasError: No such behaviour.
        """
        for b in self.behaviours:
            if b.name == name:
                return b
        raise AtlasError(f"atlas has no behaviour {name!r}; it has {[b.name for b in self.behaviours]}")

    def circuit(self, behaviour: str) -> CircuitGraph:
        """The circuit graph of a behaviour (``atlas.circuit("ioi").edges``).

        Raises:
            AtlasError: No such behaviour, or it has no circuit (run ``circuits circuit --atlas`` or
                ``circuits scan --edges``).
        """
        b = self.behaviour(behaviour)
        if b.circuit is None:
            raise AtlasError(f"behaviour {behaviour!r} has no circuit graph; add one with `circuits circuit --atlas` or `circuits scan --edges`")
        return b.circuit

    def components(
        self, *, behaviour: str | None = None, kind: str | None = None, flagged: bool | None = None
    ) -> list[BehaviourComponent]:
        """Components across behaviours, filtered.

        Args:
            behaviour: Only this behaviour (``None``: all).
            kind: Only this component kind (``head``, ``mlp``, ``neuron``, ...).
            flagged: Only flagged (``True``) or unflagged (``False``) components.

        Returns:
            ``(behaviour, entry)`` pairs, in atlas order.

        Raises:
            AtlasError: No such behaviour.
        """
        pool = [self.behaviour(behaviour)] if behaviour else self.behaviours
        return [
            BehaviourComponent(b.name, c)
            for b in pool
            for c in b.components
            if (kind is None or c.kind == kind) and (flagged is None or c.flagged == flagged)
        ]

    def top(self, k: int, *, by: str = "effect", behaviour: str | None = None, kind: str | None = None) -> list[BehaviourComponent]:
        """The ``k`` largest components by ``by`` (see :meth:`Behaviour.top`) across behaviours.

        Raises:
            AtlasError: No such behaviour, or ``by`` is not recorded.
        """
        pool = self.components(behaviour=behaviour, kind=kind)
        return sorted(pool, key=lambda bc: -ranking_value(bc.entry, by, bc.behaviour))[:k]

    def to_dataframe(self) -> Any:
        """One row per component × behaviour (pandas DataFrame).

        Columns: ``behaviour, behaviour_kind, component, component_kind, layer, head, mean, std, n,
        ci_low, ci_high, p_value, flagged``, then one ``effect:<method key>`` column per extra method
        and one ``score:<name>`` column per score.
        """
        return atlas_dataframe(self)

    def save(self, path: Path | str) -> Path:
        """Write the atlas as indented JSON, atomically; returns the path.

        Validated first, as loading validates: an atlas changed without validation (``model_copy``)
        that holds NaN/±inf or would not load back is refused, and the old file stays as it was.

        Raises:
            AtlasError: A value the file could not be read back with (naming the field).
        """
        source = f"atlas to write to {path}"
        check_json_value(self.model_dump(), error=AtlasError, source=source)
        text = self.model_dump_json(indent=2) + "\n"
        Atlas.parse(text, source=source)  # what is written loads back
        return atomic_write_text(path, text)

    @classmethod
    def load(cls, path: Path | str) -> Atlas:
        """Read and validate an atlas file (read through :func:`circuits.io.read_json_file`).

        Raises:
            AtlasError: Missing or unreadable file, not a regular file, larger than
                :data:`circuits.io.MAX_JSON_BYTES`, invalid UTF-8 or JSON, non-finite numbers, nesting
                deeper than :data:`circuits.io.MAX_JSON_DEPTH`, or a schema violation; the message names
                the file and the bad field's path (e.g. ``behaviours.0.components.3.effect.std``).
        """
        return cls.validate_raw(read_json_file(path, error=AtlasError, what="atlas"), source=str(path))

    @classmethod
    def parse(cls, text: str | bytes, *, source: str = "<string>") -> Atlas:
        """Validate atlas JSON text (see :meth:`load`); ``0.1`` and ``0.2`` files are upgraded."""
        return cls.validate_raw(parse_json(text, error=AtlasError, source=source), source=source)

    @classmethod
    def validate_raw(cls, raw: Any, *, source: str = "<value>") -> Atlas:
        """Validate parsed atlas JSON; a missing ``schema_version`` is refused, earlier versions upgraded.

        Raises:
            AtlasError: ``source: field X: problem``.
        """
        if not isinstance(raw, dict):
            raise AtlasError(f"{source}: an atlas is a JSON object, got {type(raw).__name__}")
        if "schema_version" not in raw:
            raise AtlasError(f"{source}: field schema_version: missing (this file is not an atlas, or was edited by hand)")
        try:
            return cls.model_validate(upgrade(raw))
        except ValidationError as e:
            raise AtlasError(f"{source}: {validation_message(e)}") from None

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of atlas files."""
        return cls.model_json_schema()

