"""Sites and components: typed identities for the places a probe or an edit touches.

A *component* is a frozen, hashable identity with the string form papers and TransformerLens use. A
component without ``@pos`` covers every position; ``@pos`` restricts it to one position.

======================  =======================  ===============================================
class                   string                   activation (TL hook name) [index after batch]
======================  =======================  ===============================================
``HeadRef``             ``L9H6``, ``L9H6@3``     ``blocks.9.attn.hook_z`` [:, 6] / [3, 6]
``HeadRef(act="q")``    ``L9H6.q``               ``blocks.9.attn.hook_q`` [:, 6]
``HeadRef(act="k")``    ``L9H6.k``               ``blocks.9.attn.hook_k`` [:, kv(6)] (GQA: shared)
``HeadRef(act="v")``    ``L9H6.v``               ``blocks.9.attn.hook_v`` [:, kv(6)] (GQA: shared)
``HeadRef(act=...)``    ``L9H6.pattern@3``       ``blocks.9.attn.hook_pattern`` [6, 3] (query pos)
``AttnRef``             ``L4ATTN``               ``blocks.4.hook_attn_out``
``MlpRef``              ``L7MLP``, ``L7MLP@2``   ``blocks.7.hook_mlp_out``
``NeuronRef``           ``L5N1024``              ``blocks.5.mlp.hook_post`` [:, 1024]
``ResidRef``            ``L3RESID@4``            ``blocks.3.hook_resid_pre`` [4]
``ResidRef(site=mid)``  ``L3RESID_MID@4``        ``blocks.3.hook_resid_mid`` [4]
``ResidRef(site=post)`` ``L3RESID_POST@4``       ``blocks.3.hook_resid_post`` [4]
======================  =======================  ===============================================

Grouped-query attention: SmolLM2 has 9 query heads sharing 3 key/value heads. ``hook_k``/``hook_v``
hold one vector per *key/value* head, so patching ``L9H6.k`` patches key/value head ``6 // 3 = 2``,
which every query head of that group (6, 7, 8) reads. :func:`kv_head_of` gives the mapping.

Hook-name strings are built here and nowhere else (style of ``transformer_lens.utils.get_act_name``),
so a change of TransformerLens naming touches this module only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias

ResidSite = Literal["resid_pre", "resid_mid", "resid_post"]
HeadAct = Literal["z", "q", "k", "v", "pattern"]


def hook_name(kind: str, layer: int) -> str:
    """The TransformerLens hook name of an activation kind in a layer.

    Args:
        kind: One of ``z q k v pattern attn_scores attn_out mlp_out post pre resid_pre resid_mid
            resid_post q_input k_input v_input mlp_in``.
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
    if kind in {"attn_out", "mlp_out", "resid_pre", "resid_mid", "resid_post", "q_input", "k_input", "v_input", "mlp_in"}:
        # q_input/k_input/v_input: per-head copies of the residual feeding each head's query/key/value
        # ([batch, pos, head, d_model]); mlp_in: the residual the MLP reads. Edge probing only
        # (circuits.model.split_inputs turns them on).
        return f"blocks.{layer}.hook_{kind}"
    raise ValueError(f"unknown activation kind {kind!r}")


#: Hook name of the token embedding output (the input of block 0).
EMBED_HOOK = "hook_embed"


def _at(pos: int | None) -> str:
    return "" if pos is None else f"@{pos}"


@dataclass(frozen=True, order=True)
class HeadRef:
    """Attention head ``head`` of layer ``layer``: its ``z`` (default), ``q``, ``k``, ``v`` or pattern."""

    layer: int
    head: int
    act: HeadAct = "z"
    pos: int | None = None

    kind: ClassVar[str] = "head"

    def __str__(self) -> str:
        act = "" if self.act == "z" else f".{self.act}"
        return f"L{self.layer}H{self.head}{act}{_at(self.pos)}"

    @property
    def hook_name(self) -> str:
        """``blocks.{L}.attn.hook_{act}``."""
        return hook_name(self.act, self.layer)


@dataclass(frozen=True, order=True)
class AttnRef:
    """The whole attention output of layer ``layer`` (all heads, after ``W_O``)."""

    layer: int
    pos: int | None = None

    kind: ClassVar[str] = "attn"

    def __str__(self) -> str:
        return f"L{self.layer}ATTN{_at(self.pos)}"

    @property
    def hook_name(self) -> str:
        """``blocks.{L}.hook_attn_out``."""
        return hook_name("attn_out", self.layer)


@dataclass(frozen=True, order=True)
class MlpRef:
    """The whole MLP output of layer ``layer``."""

    layer: int
    pos: int | None = None

    kind: ClassVar[str] = "mlp"

    def __str__(self) -> str:
        return f"L{self.layer}MLP{_at(self.pos)}"

    @property
    def hook_name(self) -> str:
        """``blocks.{L}.hook_mlp_out``."""
        return hook_name("mlp_out", self.layer)


@dataclass(frozen=True, order=True)
class NeuronRef:
    """MLP neuron ``index`` of layer ``layer`` (post-activation)."""

    layer: int
    index: int
    pos: int | None = None

    kind: ClassVar[str] = "neuron"

    def __str__(self) -> str:
        return f"L{self.layer}N{self.index}{_at(self.pos)}"

    @property
    def hook_name(self) -> str:
        """``blocks.{L}.mlp.hook_post``."""
        return hook_name("post", self.layer)


@dataclass(frozen=True, order=True)
class ResidRef:
    """The residual stream of layer ``layer`` at position ``pos`` (before, between or after the block).

    ``pos=None`` means every position (``L3RESID``), as steering vectors and directional ablation use.
    """

    layer: int
    pos: int | None
    site: ResidSite = "resid_pre"

    kind: ClassVar[str] = "resid"

    def __str__(self) -> str:
        suffix = {"resid_pre": "", "resid_mid": "_MID", "resid_post": "_POST"}[self.site]
        return f"L{self.layer}RESID{suffix}" + ("" if self.pos is None else f"@{self.pos}")

    @property
    def hook_name(self) -> str:
        """``blocks.{L}.hook_{site}``."""
        return hook_name(self.site, self.layer)


#: Any component identity.
Component: TypeAlias = HeadRef | AttnRef | MlpRef | NeuronRef | ResidRef

# Canonical ids only: ASCII digits without leading zeros (``L03H2``, Arabic-Indic digits and a trailing
# newline are refused), so one component has exactly one id and duplicate checks see it.
_NUM = r"(0|[1-9][0-9]{0,8})"
_POS = r"(?:@" + _NUM + r")?"
_HEAD = re.compile(r"L" + _NUM + r"H" + _NUM + r"(?:\.(q|k|v|pattern))?" + _POS, re.ASCII)
_ATTN = re.compile(r"L" + _NUM + r"ATTN" + _POS, re.ASCII)
_MLP = re.compile(r"L" + _NUM + r"MLP" + _POS, re.ASCII)
_NEURON = re.compile(r"L" + _NUM + r"N" + _NUM + _POS, re.ASCII)
_RESID = re.compile(r"L" + _NUM + r"RESID(_MID|_POST)?" + _POS, re.ASCII)


#: Largest model dimensions accepted anywhere a shape comes from a file (a model config, an atlas):
#: far above any model one machine probes, and small enough that a layer × head grid fits in memory.
MAX_LAYERS = 512
MAX_HEADS = 512
MAX_D_MODEL = 1 << 16
MAX_D_MLP = 1 << 20


class ComponentError(ValueError):
    """A string is not a canonical component id, or a component does not exist in a model."""


def _opt(g: str | None) -> int | None:
    return None if g is None else int(g)


def parse_component(text: str) -> Component:
    """Parse a canonical component id (``L9H6``, ``L9H6.k@2``, ``L4ATTN``, ``L7MLP``, ``L5N1024``, ``L3RESID@4``).

    Ids are strict: ASCII digits, no leading zeros, at most 9 digits per number, no surrounding
    whitespace, so every component has exactly one id.

    Args:
        text: The id.

    Returns:
        The component; ``str(parse_component(s)) == s`` for every valid ``s``.

    Raises:
        ComponentError: ``text`` is not a canonical component id (a ``ValueError``).
    """
    if not isinstance(text, str):
        raise ComponentError(f"a component id is a string, got {type(text).__name__}")
    if m := _HEAD.fullmatch(text):
        return HeadRef(int(m[1]), int(m[2]), m[3] or "z", _opt(m[4]))  # type: ignore[arg-type]
    if m := _ATTN.fullmatch(text):
        return AttnRef(int(m[1]), _opt(m[2]))
    if m := _MLP.fullmatch(text):
        return MlpRef(int(m[1]), _opt(m[2]))
    if m := _NEURON.fullmatch(text):
        return NeuronRef(int(m[1]), int(m[2]), _opt(m[3]))
    if m := _RESID.fullmatch(text):
        site = {None: "resid_pre", "_MID": "resid_mid", "_POST": "resid_post"}[m[2]]
        return ResidRef(int(m[1]), _opt(m[3]), site)  # type: ignore[arg-type]
    shown = text if len(text) <= 40 else text[:40] + "…"
    raise ComponentError(f"{shown!r} is not a component id (expected e.g. L9H6, L7MLP, L5N1024, L3RESID@4; no leading zeros)")


def check_components(components: Any, shape: Any) -> None:
    """Check that components exist in a model of the given shape.

    Args:
        components: Components (or their ids).
        shape: Anything with ``n_layers``, ``n_heads`` and ``d_mlp`` (the model's shape, or an atlas's
            :class:`~circuits.atlas.schema.ModelInfo`).

    Raises:
        ComponentError: The first component beyond the model, naming it and the bound it breaks
            (e.g. ``L99H99: layer 99 does not exist in a model with 2 layers (0-1)``).
    """
    for c in components:
        c = parse_component(c) if isinstance(c, str) else c
        if not 0 <= c.layer < shape.n_layers:
            raise ComponentError(f"{c}: layer {c.layer} does not exist in a model with {shape.n_layers} layers (0-{shape.n_layers - 1})")
        if isinstance(c, HeadRef) and not 0 <= c.head < shape.n_heads:
            raise ComponentError(f"{c}: head {c.head} does not exist in a model with {shape.n_heads} heads per layer (0-{shape.n_heads - 1})")
        if isinstance(c, NeuronRef) and not 0 <= c.index < shape.d_mlp:
            raise ComponentError(f"{c}: neuron {c.index} does not exist in a model with d_mlp={shape.d_mlp} (0-{shape.d_mlp - 1})")


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


def activation_index(component: Component, n_heads: int, n_kv_heads: int) -> tuple[Any, ...]:
    """The index (after the batch axis) of a component's slice of its hook activation.

    Shapes after batch: ``hook_z/q`` ``[pos, head, d_head]``; ``hook_k/v`` ``[pos, kv_head, d_head]``;
    ``hook_pattern`` ``[head, query_pos, key_pos]``; ``hook_post`` ``[pos, d_mlp]``; the others
    ``[pos, d_model]``.

    Args:
        component: The component.
        n_heads: Query heads per layer.
        n_kv_heads: Key/value heads per layer.

    Returns:
        A tuple usable as ``activation[(slice(None), *index)]``.

    Raises:
        TypeError: Unknown component type.
    """
    pos: Any = slice(None) if getattr(component, "pos", None) is None else component.pos
    if isinstance(component, HeadRef):
        if component.act == "pattern":
            return (component.head, pos)
        head = component.head
        if component.act in ("k", "v"):
            head = kv_head_of(head, n_heads, n_kv_heads)
        return (pos, head)
    if isinstance(component, NeuronRef):
        return (pos, component.index)
    if isinstance(component, (AttnRef, MlpRef, ResidRef)):
        return (pos,)
    raise TypeError(f"not a component: {component!r}")


def all_heads(n_layers: int, n_heads: int) -> list[HeadRef]:
    """Every head's output ``z`` (all positions), layer-major: ``L0H0, L0H1, ...``."""
    return [HeadRef(layer, head) for layer in range(n_layers) for head in range(n_heads)]


def all_mlps(n_layers: int) -> list[MlpRef]:
    """Every MLP layer's output (all positions)."""
    return [MlpRef(layer) for layer in range(n_layers)]


def all_neurons(layers: range | list[int], d_mlp: int) -> list[NeuronRef]:
    """Every neuron of the given layers (all positions)."""
    return [NeuronRef(layer, i) for layer in layers for i in range(d_mlp)]


def resid_grid(n_layers: int, n_pos: int, site: ResidSite = "resid_pre") -> list[ResidRef]:
    """Every (layer, position) of one residual site, layer-major."""
    return [ResidRef(layer, pos, site) for layer in range(n_layers) for pos in range(n_pos)]


def output_columns(component: Component, shape: Any) -> tuple[str, slice]:
    """The output weight a head or neuron writes through, and its input columns there.

    A head ``h`` of layer ``L`` writes through ``W_O`` (``blocks.L.attn.o``), whose input is the heads'
    ``z`` concatenated head-major: columns ``h·d_head … (h+1)·d_head``. A neuron ``n`` writes through
    ``W_out`` (``blocks.L.mlp.out``), column ``n``. Names follow :mod:`circuits.model.weights`.

    Args:
        component: A ``HeadRef`` or ``NeuronRef``.
        shape: The model's shape (``d_head``).

    Returns:
        ``(weight name without .weight/.bias, column slice)``.

    Raises:
        TypeError: Another component type.
    """
    if isinstance(component, HeadRef):
        return f"blocks.{component.layer}.attn.o", slice(component.head * shape.d_head, (component.head + 1) * shape.d_head)
    if isinstance(component, NeuronRef):
        return f"blocks.{component.layer}.mlp.out", slice(component.index, component.index + 1)
    raise TypeError(f"{component} has no output columns (only heads and neurons do)")


def writers(site: ResidRef, shape: Any, *, attn_only: bool = False, parallel: bool = False) -> list[str]:
    """The weights that write into the residual stream between the previous residual site and ``site``.

    Residual sites in order: ``resid_pre`` of layer 0, then per layer ``resid_mid`` (after attention;
    absent in parallel blocks) and ``resid_post`` (= the next layer's ``resid_pre``). Between two sites
    the writers are the token embedding (before layer 0), a layer's ``W_O`` and its bias, and its
    ``W_out`` and bias. Used by weight forms that must touch exactly what reaches a site (directional
    ablation's weight orthogonalization; steering folded into a bias).

    Args:
        site: A whole residual site (``pos`` ignored).
        shape: The model's shape (``n_layers``).
        attn_only: Blocks have no MLP.
        parallel: Attention and MLP read the same residual (no ``resid_mid``).

    Returns:
        Weight names (``embed.weight``, ``blocks.L.attn.o.weight``, ``….bias``, ``blocks.L.mlp.out.weight``, …),
        biases listed whether or not the model has them.
    """

    def layer_out(layer: int, parts: tuple[str, ...]) -> list[str]:
        return [f"blocks.{layer}.{p}.{w}" for p in parts for w in ("weight", "bias")]

    whole_block = ("attn.o",) if attn_only else ("attn.o", "mlp.out")
    after_mid = ("attn.o",) if attn_only else ("mlp.out",)
    if site.site == "resid_mid":
        return layer_out(site.layer, ("attn.o",))
    layer = site.layer - 1 if site.site == "resid_pre" else site.layer
    if layer < 0:
        return ["embed.weight"]
    return layer_out(layer, whole_block if parallel else after_mid)
