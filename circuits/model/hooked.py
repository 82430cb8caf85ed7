"""``HookedLM``: the one object that owns a hooked model and everything known about it.

A ``HookedLM`` holds the TransformerLens 4.3 ``TransformerBridge`` (the hooked model: TransformerLens
hook names on a Hugging Face or TransformerLens-native model), its tokenizer, its architecture spec
(:mod:`circuits.model.arch`), where it came from (:class:`Provenance`), how to build it again in
another process (its *recipe*, for distributed executors) and its shape. Nothing is patched onto the
library's objects; the rest of the package passes a ``HookedLM`` to the functions of
:mod:`circuits.model` and never reaches into the bridge.

It also keeps the *overlays* applied to the model (persistent hooks placed by edits, each with its
weight form where one exists), so that generation can run the same function through a plain Hugging
Face model with its KV cache (:mod:`circuits.model.generation`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from circuits.model.arch import ArchSpec

#: A forward hook ``(activation, hook) -> activation | None`` in TransformerLens' convention.
HookFn = Callable[[Tensor, Any], Tensor | None]
#: A weight step: ``(weight name, current value or None for an absent bias → new value)``.
WeightStep = tuple[str, Callable[[Tensor | None], Tensor]]

SourceKind = Literal["shipped", "directory", "gguf", "hub", "in_memory", "tiny"]
TokenizationSource = Literal["tokenizer", "override", "no tokenizer", "legacy"]


@dataclass(frozen=True)
class Tokenization:
    """How text becomes token ids for a model: the one policy scans, metrics, evaluation and generation use.

    By default text is encoded as the model's own Hugging Face tokenizer encodes it
    (``tokenizer(text)``): a BOS token is prepended exactly when that tokenizer adds one (its
    ``add_bos_token`` / post-processor), so the hooked model sees what plain ``transformers`` sees.
    ``load_model(prepend_bos=True/False)`` overrides it. The policy is recorded in every atlas, edit
    manifest and evaluation report (:meth:`as_dict`).

    Attributes:
        prepend_bos: Whether a BOS token is the first token of every encoded text.
        source: Where the policy came from: ``"tokenizer"`` (the model's own), ``"override"``
            (``prepend_bos=`` given), ``"no tokenizer"`` (token ids are passed directly), or
            ``"legacy"`` (a record written before the policy existed: TransformerLens' bridge always
            prepended BOS).
    """

    prepend_bos: bool
    source: TokenizationSource = "tokenizer"

    def as_dict(self) -> dict[str, Any]:
        """``{"prepend_bos": bool, "source": str}`` (for JSON records)."""
        return {"prepend_bos": self.prepend_bos, "source": self.source}

    def describe(self) -> str:
        """``"BOS prepended (the tokenizer's own)"`` and the like, for messages."""
        what = "BOS prepended" if self.prepend_bos else "no BOS"
        how = {"tokenizer": "the tokenizer's own", "override": "prepend_bos override", "no tokenizer": "token ids", "legacy": "recorded before the policy existed"}
        return f"{what} ({how[self.source]})"


@dataclass(frozen=True)
class Provenance:
    """Where a model came from (recorded in atlases and edits beside the weight fingerprint).

    Attributes:
        source: What was passed to :func:`circuits.model.load_model` (a short name, a path, a hub id),
            or ``"<in-memory>"``/``"<tiny>"``.
        kind: Which kind of source that was.
        architecture: The Hugging Face class (``"LlamaForCausalLM"``) or ``"native"``.
        revision: The hub commit of a hub snapshot, else ``None``.
        file_sha256: sha256 of the GGUF file, or of the directory's weight files, else ``None``.
        quantization: Shipped models: the GGUF quantization the weights come from (``"Q4_K_M"``).
        licence: Shipped models: the licence as the packages state it.
        distributed_by: Shipped models: who uploaded the packages (not the model's publisher).
        original: Shipped models: the hub name of the original (unquantized) model.
    """

    source: str
    kind: SourceKind
    architecture: str
    revision: str | None = None
    file_sha256: str | None = None
    quantization: str | None = None
    licence: str | None = None
    distributed_by: str | None = None
    original: str | None = None

    def as_dict(self) -> dict[str, str]:
        """Non-empty fields as strings (for JSON records)."""
        return {k: str(v) for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a loaded model that sites and atlases need.

    Attributes:
        name: Model name (``"smollm2-135m"``, a directory name, ``"tiny"``).
        n_layers: Number of transformer blocks.
        n_heads: Number of query heads per block.
        n_kv_heads: Number of key/value heads per block (grouped-query attention).
        d_model: Residual stream width.
        d_head: Per-head width.
        d_mlp: MLP hidden width (number of neurons per layer).
        d_vocab: Vocabulary size.
    """

    name: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int


@dataclass
class Overlay:
    """Persistent hooks that an edit placed on the model, with their weight form if it has one.

    Attributes:
        hooks: ``(TransformerLens hook name, fn)`` pairs active on the bridge.
        fold: Weight steps computing the same function, or ``None`` (e.g. a resample ablation).
        removers: Undo the bridge hooks.
        folded: The weight form's values, computed once (keyed by the live weights' identity).
    """

    hooks: list[tuple[str, HookFn]]
    fold: Callable[[], list[WeightStep]] | None
    removers: list[Callable[[], None]] = field(default_factory=list)
    folded: tuple[Any, dict[str, Tensor]] | None = None


class HookedLM:
    """A hooked language model: the bridge, tokenizer, architecture, provenance, recipe and shape.

    Build one with :func:`circuits.model.load_model` or :func:`circuits.model.tiny_model`, not directly.

    Attributes:
        bridge: The TransformerLens ``TransformerBridge`` (TransformerLens hook names).
        tokenizer: The Hugging Face tokenizer, or ``None`` for a tokenizer-less tiny model.
        name: Short name recorded in atlases (``"smollm2-135m"``).
        provenance: Where the weights came from.
        arch: Where this architecture keeps its components.
        recipe: How to build the model again in another process (``None``: in-memory, cannot be).
        shape: Dimensions.
        tokenization: How text is encoded (:class:`Tokenization`; :func:`circuits.model.tokens_of`).
    """

    def __init__(
        self,
        bridge: Any,
        tokenizer: Any,
        *,
        name: str,
        provenance: Provenance,
        arch: ArchSpec,
        recipe: dict[str, Any] | None,
        tokenization: Tokenization | None = None,
    ) -> None:
        self.bridge = bridge
        self.tokenizer = tokenizer
        self.tokenization = tokenization or Tokenization(prepend_bos=False, source="no tokenizer")
        # TransformerLens' own string helpers (``to_tokens``, ``to_str_tokens``) follow the same policy.
        bridge.cfg.default_prepend_bos = self.tokenization.prepend_bos
        self.name = name
        self.provenance = provenance
        self.arch = arch
        self.recipe = recipe
        self.shape = _shape(bridge.cfg, name)
        self.overlays: list[Overlay] = []
        #: Handles of applied edits that changed weights, oldest first (removal must be last-first).
        self.weight_edits: list[Any] = []
        self._twin: Any = None
        self._fingerprint: tuple[tuple[int, int], str] | None = None

    @property
    def core(self) -> torch.nn.Module:
        """The module that holds the weights (the Hugging Face ``*ForCausalLM`` or the native model)."""
        return self.bridge.original_model

    @property
    def is_hf(self) -> bool:
        """Whether the weights live in a Hugging Face model (not a TransformerLens-native one)."""
        return self.arch.name != "native"

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return next(self.core.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' floating dtype."""
        return next(p for p in self.core.parameters() if p.is_floating_point()).dtype

    def __call__(self, tokens: Tensor) -> Tensor:
        """Logits ``[batch, pos, d_vocab]`` of token ids ``[batch, pos]`` (autograd follows the caller)."""
        return self.bridge(tokens)

    def __repr__(self) -> str:
        s = self.shape
        return (
            f"HookedLM({self.name!r}, {self.provenance.architecture}, {s.n_layers} layers × {s.n_heads} heads, "
            f"d_model={s.d_model}, {self.dtype}, {self.device}, {self.tokenization.describe()})"
        )


def _shape(cfg: Any, name: str) -> ModelShape:
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    return ModelShape(
        name=name,
        n_layers=int(cfg.n_layers),
        n_heads=int(cfg.n_heads),
        n_kv_heads=int(n_kv),
        d_model=int(cfg.d_model),
        d_head=int(cfg.d_head),
        d_mlp=int(cfg.d_mlp or 0),
        d_vocab=int(cfg.d_vocab),
    )
