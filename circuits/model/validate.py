"""Checking a model source before anything loads: config, architecture, weights, tokenizer, GGUF header.

Every model source (shipped name, directory, GGUF file, hub snapshot, export) goes through
:func:`validate_source` first, in :func:`circuits.model.load_model` and in the CLI: a malformed config,
an unknown or non-string architecture, truncated or mismatched weights, a bad GGUF header or an empty
name is one :class:`~circuits.model.sources.ModelLoadError` naming the file and what is wrong, before
any weights load.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    model_validator,
)

from circuits.atomic import not_regular_reason
from circuits.io import decode_utf8, read_bounded, read_json_file, validation_message
from circuits.model.arch import arch_of
from circuits.model.sources import (
    _HUB_ID,
    MODELS,
    ModelLoadError,
    _cached_gguf,
    _hub_snapshot,
    gguf_path,
)
from circuits.sites import MAX_D_MLP, MAX_D_MODEL, MAX_HEADS, MAX_LAYERS

logger = logging.getLogger(__name__)


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
        from transformers.core_model_loading import (
            WeightConverter,
            WeightRenaming,
            dot_natural_key,
            rename_source_key,
        )
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

    Remembered in this process per directory and the (name, size, modification time) of its files:
    validating a source and loading it check the directory once, not three times; a directory whose
    files changed since is checked again.

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
    _check_directory_once(str(path.resolve()), _directory_signature(path))


@functools.lru_cache(maxsize=256)
def _check_directory_once(path: str, signature: tuple[tuple[str, int, int], ...]) -> None:  # signature only keys the cache
    """:func:`_check_directory`, remembered as :func:`circuits.model.sources.sha256_file` remembers hashes: a
    failed check raises, so only passing directories are remembered."""
    _check_directory(Path(path))


def _directory_signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime in ns) of every entry directly in ``path``, sorted by name."""
    out = []
    for entry in sorted(path.iterdir()):
        try:
            st = entry.stat()
        except OSError:
            continue
        out.append((entry.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _check_directory(path: Path) -> None:
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
