"""The atlas schema's base record and its headers: the model measured (with its tokenization policy), provenance, and the suite."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from circuits.sites import MAX_D_MLP, MAX_D_MODEL, MAX_HEADS, MAX_LAYERS


class AtlasError(ValueError):
    """An atlas file is malformed, or a query names something the atlas does not hold."""


#: An integer of a file (a seed, a count): an integer in JSON (``1e20`` is not one) and within 64 bits.
Int64 = Annotated[StrictInt, Field(ge=-(2**63), lt=2**63)]
#: A count: at least ``1``.
Count = Annotated[StrictInt, Field(ge=1, lt=2**63)]


class _Frozen(BaseModel):
    # Finite numbers only: JSON cannot spell NaN/Infinity, so they are refused when an atlas is built,
    # not discovered when it is read back.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TokenizationInfo(_Frozen):
    """The tokenization policy a record was measured under (:class:`circuits.model.Tokenization`)."""

    prepend_bos: bool
    source: Literal["tokenizer", "override", "no tokenizer", "legacy"]

    def describe(self) -> str:
        """``"BOS prepended (…)"`` / ``"no BOS (…)"``, for messages."""
        what = "BOS prepended" if self.prepend_bos else "no BOS"
        return f"{what} ({self.source})"


class ModelInfo(_Frozen):
    """The model an atlas was measured on."""

    name: str
    fingerprint: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    # Bounded before anything is allocated from them (the report draws a layer × head grid).
    n_layers: StrictInt = Field(ge=1, le=MAX_LAYERS)
    n_heads: StrictInt = Field(ge=1, le=MAX_HEADS)
    d_model: StrictInt = Field(ge=1, le=MAX_D_MODEL)
    d_mlp: StrictInt = Field(ge=1, le=MAX_D_MLP)
    source: dict[str, str] = Field(default_factory=dict)
    """Where the weights came from: ``source``, ``kind``, ``architecture``, ``revision``, ``file_sha256``."""
    tokenization: TokenizationInfo
    """How text was encoded (whether BOS was prepended, and whether that is the tokenizer's own behaviour)."""


class Provenance(_Frozen):
    """How the atlas was made."""

    packages: dict[str, str]
    command: str
    seeds: list[Int64] = Field(min_length=1)
    git_commit: str | None = None
    started: str | None = None
    finished: str | None = None
    rounds: list[dict[str, Any]] = Field(default_factory=list)
    """Iterative procedures' rounds (ICP: flagged set, pruned set, scores, training record per round;
    :mod:`circuits.editing.icp`); empty for a single scan."""


class SuiteRef(_Frozen):
    """The data a behaviour was measured on."""

    name: str
    content_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    n_pairs: Count
    split: Literal["build", "eval"]
