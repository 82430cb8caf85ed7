"""Sites and components: typed identities for the places a probe or an edit touches.

A *component* is a frozen, hashable identity with the string form papers and TransformerLens use:

=================  ==========================  =========================================
class              string                      activation (TL hook name)
=================  ==========================  =========================================
``HeadRef``        ``L9H6``                    ``blocks.9.attn.hook_z`` [:, :, 6]
``MlpRef``         ``L7MLP``                   ``blocks.7.hook_mlp_out``
``NeuronRef``      ``L5N1024``                 ``blocks.5.mlp.hook_post`` [:, :, 1024]
``ResidRef``       ``L3RESID@4``               ``blocks.3.hook_resid_pre`` [:, 4]
=================  ==========================  =========================================

Hook-name strings are built here and nowhere else (style of ``transformer_lens.utils.get_act_name``),
so a change of TransformerLens naming touches this module only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeAlias

ResidKind = Literal["resid_pre", "resid_mid", "resid_post"]


def hook_name(kind: str, layer: int) -> str:
    """The TransformerLens hook name of an activation kind in a layer.

    Args:
        kind: One of ``z q k v pattern attn_scores result attn_out mlp_out post pre resid_pre
            resid_mid resid_post``.
        layer: Block index.

    Returns:
        e.g. ``hook_name("z", 9) == "blocks.9.attn.hook_z"``.

    Raises:
        ValueError: Unknown kind.
    """
    if kind in {"z", "q", "k", "v", "pattern", "attn_scores"}:
        return f"blocks.{layer}.attn.hook_{kind}"
    if kind in {"post", "pre"}:
        return f"blocks.{layer}.mlp.hook_{kind}"
    if kind in {"attn_out", "mlp_out", "resid_pre", "resid_mid", "resid_post"}:
        return f"blocks.{layer}.hook_{kind}"
    raise ValueError(f"unknown activation kind {kind!r}")


def embed_hook_name() -> str:
    """Hook name of the token embedding output (input of block 0)."""
    return "hook_embed"


@dataclass(frozen=True, order=True)
class HeadRef:
    """Attention head ``h`` of layer ``L``: its output ``z`` (before ``W_O``), all positions."""

    layer: int
    head: int

    kind: ClassVar[str] = "head"

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"

    @property
    def hook_name(self) -> str:
        """``blocks.{L}.attn.hook_z``; index ``[:, :, head]``."""
        return hook_name("z", self.layer)


@dataclass(frozen=True, order=True)
class MlpRef:
    """The whole MLP output of layer ``L``."""

    layer: int

    kind: ClassVar[str] = "mlp"

    def __str__(self) -> str:
        return f"L{self.layer}MLP"

    @property
    def hook_name(self) -> str:
        """``blocks.{L}.hook_mlp_out``."""
        return hook_name("mlp_out", self.layer)


@dataclass(frozen=True, order=True)
class NeuronRef:
    """MLP neuron ``index`` of layer ``L`` (post-activation, all positions)."""

    layer: int
    index: int

    kind: ClassVar[str] = "neuron"

    def __str__(self) -> str:
        return f"L{self.layer}N{self.index}"

    @property
    def hook_name(self) -> str:
        """``blocks.{L}.mlp.hook_post``; index ``[:, :, index]``."""
        return hook_name("post", self.layer)


@dataclass(frozen=True, order=True)
class ResidRef:
    """The residual stream entering layer ``L`` (``resid_pre``) at position ``pos``."""

    layer: int
    pos: int

    kind: ClassVar[str] = "resid"

    def __str__(self) -> str:
        return f"L{self.layer}RESID@{self.pos}"

    @property
    def hook_name(self) -> str:
        """``blocks.{L}.hook_resid_pre``; index ``[:, pos]``."""
        return hook_name("resid_pre", self.layer)


#: Any component identity.
Component: TypeAlias = HeadRef | MlpRef | NeuronRef | ResidRef

_PATTERNS: list[tuple[re.Pattern[str], type]] = [
    (re.compile(r"^L(\d+)H(\d+)$"), HeadRef),
    (re.compile(r"^L(\d+)MLP$"), MlpRef),
    (re.compile(r"^L(\d+)N(\d+)$"), NeuronRef),
    (re.compile(r"^L(\d+)RESID@(\d+)$"), ResidRef),
]


def parse_component(text: str) -> Component:
    """Parse a component id (``L9H6``, ``L7MLP``, ``L5N1024``, ``L3RESID@4``).

    Args:
        text: The id.

    Returns:
        The component; ``str(parse_component(s)) == s`` for every valid ``s``.

    Raises:
        ValueError: ``text`` is not a component id.
    """
    for pattern, cls in _PATTERNS:
        m = pattern.match(text)
        if m:
            return cls(*(int(g) for g in m.groups()))
    raise ValueError(f"{text!r} is not a component id (expected e.g. L9H6, L7MLP, L5N1024, L3RESID@4)")


def all_heads(n_layers: int, n_heads: int) -> list[HeadRef]:
    """Every head, layer-major: ``L0H0, L0H1, ...``."""
    return [HeadRef(layer, head) for layer in range(n_layers) for head in range(n_heads)]


def all_mlps(n_layers: int) -> list[MlpRef]:
    """Every MLP layer."""
    return [MlpRef(layer) for layer in range(n_layers)]


def kv_head_of(head: int, n_heads: int, n_kv_heads: int) -> int:
    """The key/value head that query head ``head`` reads under grouped-query attention.

    Query heads are grouped contiguously: with 9 query and 3 key/value heads, heads 0-2 share kv
    head 0, 3-5 share 1, 6-8 share 2 (the Hugging Face Llama ``repeat_kv`` convention).

    Raises:
        ValueError: ``n_heads`` is not a multiple of ``n_kv_heads`` or ``head`` is out of range.
    """
    if n_kv_heads <= 0 or n_heads % n_kv_heads:
        raise ValueError(f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv_heads}")
    if not 0 <= head < n_heads:
        raise ValueError(f"head {head} out of range for {n_heads} heads")
    return head // (n_heads // n_kv_heads)
