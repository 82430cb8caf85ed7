"""Shared parts of the command-line interface (see :mod:`circuits.cli`): the app, console, model loading and input checks."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape


# Plain (not boxed) usage errors: a box is cut at the terminal width and can hide the bad value.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, help="Find and fix harmful or spurious circuits.")
console = Console()
err_console = Console(stderr=True)

DEFAULT_MODEL = "smollm2-135m"
MODEL_HELP = "Model: a shipped name (smollm2-135m), a Hugging Face directory, a .gguf file, or a hub id."
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP)]
DtypeOpt = Annotated[str | None, typer.Option(help="Weight dtype: float32 (default), bfloat16 or float16.")]
DeviceOpt = Annotated[str | None, typer.Option(help="Device: cpu (default), cuda, cuda:N or mps.")]
PrependBosOpt = Annotated[
    bool | None,
    typer.Option(
        "--prepend-bos/--no-prepend-bos",
        help="Put the BOS token before every text, or never. Default: encode text as the model's own tokenizer does "
        "(SmolLM2 adds no BOS). The policy is recorded in atlases, edits and reports.",
        show_default=False,
    ),
]
BaselineCacheOpt = Annotated[
    bool,
    typer.Option(
        "--baseline-cache/--no-baseline-cache",
        help="Reuse the unedited model's measurements from $XDG_CACHE_HOME/circuit-atlas/measurements (keyed by weights, "
        "settings, data and measuring code), or store them there; --no-baseline-cache measures it every time.",
    ),
]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
        force=True,
    )


def _fail(message: str) -> None:
    # One line on stderr, never wrapped at the terminal width; messages may contain [brackets].
    err_console.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


def _check_output(path: Path, *, option: str = "-o", suffix: str | None = None, directory: bool = False) -> None:
    """Check an output path before any work (exit 2 with one clear error): so a run never fails at the end.

    A file output must not be an existing directory, must have ``suffix`` if one is required, and its
    nearest existing ancestor must be a writable directory (missing parents are created on write; a
    file in the way is refused). A directory output (``directory=True``) must not be a file or a
    non-empty directory.
    """
    if suffix is not None and path.suffix != suffix:
        _fail(f"{option} {path}: must end in {suffix}")
    if directory:
        if path.exists() and not path.is_dir():
            _fail(f"{option} {path}: is a file; a directory is expected")
        if path.is_dir() and any(path.iterdir()):
            _fail(f"{option} {path}: directory exists and is not empty")
    else:
        if path.is_dir():
            _fail(f"{option} {path}: is a directory; a file is expected")
        if path.exists() and not os.access(path, os.W_OK):
            _fail(f"{option} {path}: file is not writable")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link
            break
        parent = parent.parent
    if not parent.is_dir():
        _fail(f"{option} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        _fail(f"{option} {path}: directory {parent} is not writable")


def _check_count(option: str, value: int | None, *, minimum: int = 1) -> None:
    """Refuse a count below ``minimum`` (``None`` means "all" and passes)."""
    if value is not None and value < minimum:
        _fail(f"{option} must be >= {minimum}, got {value}")


def _check_finite(option: str, value: float | None) -> None:
    """Refuse NaN and ±inf (typer parses ``nan`` and ``inf`` as floats)."""
    if value is not None and not math.isfinite(value):
        _fail(f"{option} must be a finite number, got {value}")


def _load_edits(paths: list[Path]):  # noqa: ANN202 - returns list[Edit]
    """Load edit manifests, all made for one model (else one clear error, exit 2)."""
    from circuits.editing import EditError, load_edit

    try:
        edits = [load_edit(p) for p in paths]
    except EditError as e:
        _fail(str(e))
    names = {e.model_name for e in edits}
    if len(names) > 1:
        _fail(f"edits were made for different models: {sorted(names)}")
    return edits


def _check_model_options(dtype: str | None, device: str | None) -> None:
    """Check --dtype/--device before any work (exit 2 with one clear error)."""
    from circuits.model import ModelLoadError, resolve_device, resolve_dtype

    try:
        resolve_dtype(dtype)
        resolve_device(device)
    except ModelLoadError as e:
        _fail(str(e))


def _load(source: str, dtype: str | None = None, device: str | None = None, prepend_bos: bool | None = None):  # noqa: ANN202 - returns a HookedLM
    from circuits.model import ModelLoadError, ModelNotInstalledError, UnsupportedArchitecture, load_model, quiet_libraries

    quiet_libraries()
    with console.status(f"loading {source}…"):
        try:
            return load_model(source, dtype=dtype, device=device, prepend_bos=prepend_bos)
        except (ModelNotInstalledError, ModelLoadError, UnsupportedArchitecture) as e:
            _fail(str(e))


def _edit_model(edits, model: str | None) -> str:  # noqa: ANN001 - edits: list[Edit]
    """The model to load for edits: --model, else where the first edit's model came from."""
    if model:
        return model
    if not edits:
        return DEFAULT_MODEL
    return edits[0].model_source.get("source") or edits[0].model_name


