"""The model adapter: the one package that talks to TransformerLens and Hugging Face internals.

Everything else in circuit-atlas speaks in sites and components (:mod:`circuits.sites`) and calls the
functions here with a :class:`HookedLM`: loading from any source (:mod:`.loading`), tokenizing
(:mod:`.tokens`), running with hooks and from layer ``k`` (:mod:`.forward`), weights by
architecture-independent name, fingerprints and Hugging Face export (:mod:`.weights`), and generation
at Hugging Face speed with edits applied (:mod:`.generation`). Architecture differences are declared
in one table (:mod:`.arch`). TransformerLens 4 removed ``HookedTransformer``; its hooked model is
``transformer_lens.model_bridge.TransformerBridge``, which keeps the TL hook names
(``blocks.{L}.attn.hook_z``, ``blocks.{L}.mlp.hook_post``, ...). An import-linter contract keeps every
other package away from ``transformer_lens`` and from Hugging Face module names.
"""

from circuits.model.arch import (
    ARCHITECTURES,
    ArchSpec,
    UnsupportedArchitecture,
    arch_of,
)
from circuits.model.export import hf_config, hf_model_copy, save_hf_pretrained
from circuits.model.forward import (
    add_persistent_hook,
    attach_overlay,
    cache_from_layer,
    embed,
    final_residual,
    final_residual_with_prefix,
    has_hook,
    logit_lens,
    run,
    run_from_layer,
    run_with_cache,
    unembed,
)
from circuits.model.generation import (
    PaddingUnsupported,
    generate,
    generate_ids,
    sample_continuations,
)
from circuits.model.hooked import (
    HookedLM,
    HookFn,
    ModelShape,
    Provenance,
    Tokenization,
    WeightStep,
)
from circuits.model.loading import (
    DTYPES,
    MODELS,
    ModelLoadError,
    ModelNotInstalledError,
    ModelSpec,
    build_model,
    cache_root,
    check_directory,
    gguf_path,
    hub_name,
    load_model,
    model_recipe,
    quiet_libraries,
    resolve_device,
    resolve_dtype,
    validate_source,
)
from circuits.model.split import edge_support, head_writes, is_parallel, split_inputs
from circuits.model.tiny import tiny_model
from circuits.model.tokens import (
    bos_token_id,
    decode,
    encode_text,
    single_token_id,
    subject_positions,
    text_windows,
    to_tokens,
    token_lengths,
    token_strings,
    tokenization_policy,
    tokenizer_adds_bos,
    tokenizer_of,
    tokens_of,
)
from circuits.model.weights import (
    ExportError,
    fingerprint,
    frozen_parameters,
    has_weight,
    hf_module_name,
    load_weights,
    parametrize_weight,
    read_weight,
    replace_weight,
    weight_parameters,
    weights_state,
)


def shape_of(lm: HookedLM) -> ModelShape:
    """A model's dimensions (:attr:`HookedLM.shape`)."""
    return lm.shape


def model_name(lm: HookedLM) -> str:
    """The name a model was loaded under (``"smollm2-135m"``, a directory name, ``"tiny"``)."""
    return lm.name


def embedding_matrix(lm: HookedLM):  # noqa: ANN201 - Float[Tensor, "d_vocab d_model"]
    """The token embedding matrix ``W_E`` ``[d_vocab, d_model]`` (detached)."""
    value = read_weight(lm, "embed.weight")
    assert value is not None
    return value


__all__ = [
    "ARCHITECTURES", "ArchSpec", "DTYPES", "ExportError", "HookFn", "HookedLM", "MODELS", "ModelLoadError",
    "ModelNotInstalledError", "ModelShape", "ModelSpec", "PaddingUnsupported", "Provenance", "Tokenization", "UnsupportedArchitecture", "WeightStep",
    "add_persistent_hook", "arch_of", "attach_overlay", "bos_token_id", "build_model", "cache_from_layer", "cache_root",
    "check_directory", "decode", "edge_support", "embed", "embedding_matrix", "encode_text", "final_residual", "final_residual_with_prefix", "fingerprint", "frozen_parameters",
    "generate", "generate_ids", "gguf_path", "has_hook", "has_weight", "head_writes", "is_parallel", "hf_config", "hf_model_copy", "hub_name", "hf_module_name", "load_model",
    "load_weights", "logit_lens", "model_name", "model_recipe", "parametrize_weight", "quiet_libraries", "read_weight", "replace_weight",
    "resolve_device", "resolve_dtype", "run", "run_from_layer", "run_with_cache", "sample_continuations",
    "save_hf_pretrained", "shape_of", "single_token_id", "split_inputs", "subject_positions", "text_windows", "tiny_model", "to_tokens",
    "token_lengths", "token_strings", "tokenization_policy", "tokenizer_adds_bos", "tokenizer_of", "tokens_of", "unembed", "validate_source",
    "weight_parameters", "weights_state",
]
