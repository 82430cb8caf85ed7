"""Architecture table: where each model family keeps its components, declared once.

Every difference between the architectures circuit-atlas probes lives here as data (the seam of
TransformerLens 4.3's ``model_bridge/supported_architectures/*.py`` and pyvene's per-architecture
``modelings_intervenable_<arch>.py``): the dotted module paths of the embedding, the decoder layers,
the attention output projection ``W_O`` (whose input is the heads' ``z``, head-major), the MLP output
projection ``W_out`` (whose input is the neurons' ``hook_post``), the final norm and the unembedding;
whether the projections are GPT-2 ``Conv1D`` (weights stored ``[in, out]``), whether blocks are parallel
(attention and MLP read the same residual), whether sublayer outputs pass through a norm before they
reach the residual stream (Gemma 2/3, OLMo 2: then no weight folds into "the residual"), and whether
position embeddings are learned. The pipeline asks :func:`arch_of`; it never probes modules with
``hasattr``.

Families whose computation the project's sites do not describe (mixture-of-experts MLPs, state-space
blocks) are refused at load with a clear error (:class:`UnsupportedArchitecture`).
"""

from __future__ import annotations

from dataclasses import dataclass


class UnsupportedArchitecture(ValueError):
    """A model family the project cannot probe correctly (the message says why and what is supported)."""


@dataclass(frozen=True)
class ArchSpec:
    """Where one architecture keeps its components (dotted paths inside the ``*ForCausalLM`` module).

    Attributes:
        name: Family name (``"llama"``, ``"gpt2"``, ...; ``"native"`` for TransformerLens-native models).
        base: Path of the decoder stack module (``"model"``, ``"transformer"``, ``"gpt_neox"``).
        layers: Attribute of ``base`` holding the decoder layers.
        embed: Token embedding, relative to ``base``.
        pos_embed: Learned position embedding relative to ``base`` (``None``: rotary or none).
        final_norm: Final norm, relative to ``base``.
        lm_head: Unembedding, relative to the top module.
        q, k, v: Separate query/key/value projections relative to a layer (``None`` when fused).
        o: Attention output projection ``W_O`` relative to a layer.
        mlp_in: MLP input ("up") projection relative to a layer (``None`` when fused).
        mlp_gate: Gate projection of a gated MLP (``None``: not gated, or fused with ``mlp_in``).
        mlp_out: MLP output projection ``W_out`` relative to a layer.
        conv1d: Projections are GPT-2 ``Conv1D`` modules (weight ``[in, out]``).
        parallel: Attention and MLP read the same residual (GPT-J; GPT-NeoX with
            ``use_parallel_residual``; see :meth:`is_parallel`).
        post_norm: Sublayer outputs are normalised before the residual add (Gemma 2/3, OLMo 2).
        layer_returns_tuple: A decoder layer returns ``(hidden_states, ...)`` instead of a tensor.
        attn_bias_flag: Config field that gives every attention projection a bias (for export).
        mlp_bias_flag: Config field that gives every MLP projection a bias (for export).
        embed_scale: The embedding output is multiplied by ``sqrt(d_model)`` (Gemma).
        softcap: Config field of a final-logit soft cap (``None``: none).
    """

    name: str
    base: str = "model"
    layers: str = "layers"
    embed: str = "embed_tokens"
    pos_embed: str | None = None
    final_norm: str = "norm"
    lm_head: str = "lm_head"
    q: str | None = "self_attn.q_proj"
    k: str | None = "self_attn.k_proj"
    v: str | None = "self_attn.v_proj"
    o: str = "self_attn.o_proj"
    mlp_in: str | None = "mlp.up_proj"
    mlp_gate: str | None = "mlp.gate_proj"
    mlp_out: str = "mlp.down_proj"
    conv1d: bool = False
    parallel: bool | str = False
    post_norm: bool = False
    layer_returns_tuple: bool = False
    attn_bias_flag: str | None = None
    mlp_bias_flag: str | None = None
    embed_scale: bool = False
    softcap: str | None = None

    def is_parallel(self, config: object) -> bool:
        """Whether blocks are parallel for this config (a config field name in ``parallel`` is read)."""
        if isinstance(self.parallel, str):
            return bool(getattr(config, self.parallel, False))
        return self.parallel

    def residual_writes_foldable(self) -> bool:
        """Whether a constant or a projection of the residual stream folds into the writers' weights.

        Steering folded into a bias and directional ablation folded into ``W_O``/``W_out`` need the
        sublayer outputs to reach the residual stream unchanged; a post-sublayer norm breaks that.
        """
        return not self.post_norm


_LLAMA = ArchSpec(name="llama", attn_bias_flag="attention_bias", mlp_bias_flag="mlp_bias")

#: Hugging Face ``*ForCausalLM`` class name → its spec. Tested on tiny random models of every entry.
ARCHITECTURES: dict[str, ArchSpec] = {
    "LlamaForCausalLM": _LLAMA,
    "MistralForCausalLM": ArchSpec(name="mistral"),
    "Qwen2ForCausalLM": ArchSpec(name="qwen2"),
    "Qwen3ForCausalLM": ArchSpec(name="qwen3", attn_bias_flag="attention_bias"),
    "Gemma2ForCausalLM": ArchSpec(
        name="gemma2", post_norm=True, attn_bias_flag="attention_bias", embed_scale=True, softcap="final_logit_softcapping"
    ),
    "Gemma3ForCausalLM": ArchSpec(
        name="gemma3", post_norm=True, attn_bias_flag="attention_bias", embed_scale=True, softcap="final_logit_softcapping"
    ),
    "Olmo2ForCausalLM": ArchSpec(name="olmo2", post_norm=True, attn_bias_flag="attention_bias"),
    "Phi3ForCausalLM": ArchSpec(name="phi3", q=None, k=None, v=None, mlp_in=None, mlp_gate=None),
    "GPT2LMHeadModel": ArchSpec(
        name="gpt2", base="transformer", layers="h", embed="wte", pos_embed="wpe", final_norm="ln_f",
        q=None, k=None, v=None, o="attn.c_proj", mlp_in="mlp.c_fc", mlp_gate=None, mlp_out="mlp.c_proj", conv1d=True,
    ),
    "GPTNeoXForCausalLM": ArchSpec(
        name="gpt_neox", base="gpt_neox", embed="embed_in", final_norm="final_layer_norm",
        q=None, k=None, v=None, o="attention.dense", mlp_in="mlp.dense_h_to_4h", mlp_gate=None,
        mlp_out="mlp.dense_4h_to_h", parallel="use_parallel_residual",
    ),
    "GPTJForCausalLM": ArchSpec(
        name="gptj", base="transformer", layers="h", embed="wte", final_norm="ln_f", q="attn.q_proj", k="attn.k_proj",
        v="attn.v_proj", o="attn.out_proj", mlp_in="mlp.fc_in", mlp_gate=None, mlp_out="mlp.fc_out", parallel=True,
        layer_returns_tuple=True,
    ),
}

#: TransformerLens-native models (``TransformerBridge.boot_native``), used for tiny test models.
NATIVE = ArchSpec(
    name="native", base="", layers="layers", embed="tok_embed", final_norm="ln_out", lm_head="head",
    q="attn.q", k="attn.k", v="attn.v", o="attn.o", mlp_in="mlp.in", mlp_gate="mlp.gate", mlp_out="mlp.out",
)

#: Families TransformerLens can load but the project refuses, with the reason.
_REFUSED: dict[str, str] = {
    "moe": "a mixture-of-experts MLP (a token's MLP output depends on a router; MLP and neuron sites "
    "would describe only one expert)",
    "mamba": "state-space blocks (there are no attention heads or residual MLPs to patch)",
}
_MOE_MARKERS = ("Moe", "Mixtral", "Olmoe", "Jamba", "DeepseekV2", "DeepseekV3", "Dbrx", "GraniteMoe", "Arctic")
_SSM_MARKERS = ("Mamba", "RecurrentGemma", "Rwkv", "FalconH1", "Bamba", "NemotronH", "Zamba")


def arch_of(class_name: str) -> ArchSpec:
    """The spec of a Hugging Face causal-LM class.

    Args:
        class_name: ``type(hf_model).__name__``, e.g. ``"LlamaForCausalLM"``.

    Returns:
        Its :class:`ArchSpec`.

    Raises:
        UnsupportedArchitecture: Mixture-of-experts or state-space families (named reason), or a family
            not in :data:`ARCHITECTURES` (the message lists the supported ones).
    """
    if class_name in ARCHITECTURES:
        return ARCHITECTURES[class_name]
    if any(m in class_name for m in _MOE_MARKERS):
        raise UnsupportedArchitecture(f"{class_name} is not supported: it has {_REFUSED['moe']}")
    if any(m in class_name for m in _SSM_MARKERS):
        raise UnsupportedArchitecture(f"{class_name} is not supported: it has {_REFUSED['mamba']}")
    supported = ", ".join(sorted(s.name for s in ARCHITECTURES.values()))
    raise UnsupportedArchitecture(
        f"{class_name} is not in circuit-atlas's architecture table (supported families: {supported}); "
        "add an entry to circuits/model/arch.py and run the architecture matrix tests"
    )
