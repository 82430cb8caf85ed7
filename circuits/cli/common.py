"""Shared parts of the command-line interface (see :mod:`circuits.cli`): the app, console, model loading and input checks."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from circuits import __version__

# Plain (not boxed) usage errors: a box is cut at the terminal width and can hide the bad value.
app = typer.Typer(add_completion=True, no_args_is_help=True, rich_markup_mode=None, help="Find and fix harmful or spurious circuits.")
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> bool:
    if value:
        console.print(f"circuit-atlas {__version__}", highlight=False)
        raise typer.Exit()
    return value


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True)] = False,
) -> None:
    """Find and fix harmful or spurious circuits."""

DEFAULT_MODEL = "smollm2-135m"
MODEL_HELP = (
    "Model: a shipped name (smollm2-135m; gemma-3-270m, qwen2.5-coder-0.5b-instruct, qwen2.5-coder-1.5b-instruct after `make models`), "
    "a Hugging Face directory, a .gguf file, or a hub id."
)
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", metavar="<model>", help=MODEL_HELP)]


def choice(name: str, values: Iterable[str]) -> type[StrEnum]:
    """An enum of ``values`` for an option: typer validates it, lists it in ``--help`` and completes it in the shell.

    Members are ``str`` whose ``str()`` is the value, so they pass on to the library unchanged.
    """
    return StrEnum(name, {v: v for v in values})  # type: ignore[return-value]


DtypeChoice = choice("DtypeChoice", ("float32", "bfloat16", "float16"))
DtypeOpt = Annotated[DtypeChoice | None, typer.Option(help="Weight dtype (default float32).", show_default=False)]
DeviceOpt = Annotated[str | None, typer.Option(metavar="<device>", help="Device: cpu (default), cuda, cuda:N or mps.")]
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


def _check_output(
    path: Path, *, option: str = "-o", suffix: str | None = None, directory: bool = False, inputs: Iterable[Path | str | None] = ()
) -> None:
    """Check an output path before any work (exit 2 with one clear error): so a run never fails at the end.

    One check for every command (:func:`circuits.io.check_output_path`): the output must not resolve
    (symlinks and hard links included) to one of the command's ``inputs`` or lie inside an input
    directory; an existing output must be a regular file (never a device, FIFO, socket or directory)
    that is writable, in a writable directory; ``suffix`` if one is required. A directory output
    (``directory=True``) must not exist or be empty.
    """
    from circuits.io import OutputPathError, check_output_path

    try:
        check_output_path(path, inputs=inputs, directory=directory, suffix=suffix)
    except OutputPathError as e:
        _fail(f"{option} {e}")


@contextlib.contextmanager
def _writing(path: Path | str) -> Iterator[None]:
    """Turn a failed write (full disk, permission, a device swapped in) into one clear error, exit 2.

    Every artifact is written atomically (:mod:`circuits.atomic`), so after a failed write the old file,
    if any, is as it was and no temporary is left; the command never reports it "written".
    """
    try:
        yield
    except OSError as e:
        _fail(f"cannot write {path}: {e.strerror or e}; the previous file, if any, is unchanged")


def _inputs(*paths: Path | str | None, edits: Iterable[Path] = ()) -> list[Path]:
    """The inputs of a command as paths, for :func:`_check_output`: files, directories, model sources and
    suite names (a name that is not an existing path is skipped by the check), and each edit manifest
    with its tensor file."""
    out = [Path(p).expanduser() for p in paths if p is not None and str(p) != ""]
    return out + [q for e in edits for q in (Path(e), Path(e).with_suffix(".safetensors"))]


def _check_count(option: str, value: int | None, *, minimum: int = 1) -> None:
    """Refuse a count (or seed) below ``minimum`` or beyond 64 bits (``None`` means "all" and passes)."""
    if value is not None and value < minimum:
        _fail(f"{option} must be >= {minimum}, got {value}")
    if value is not None and value >= 2**63:
        _fail(f"{option} must be below 2**63, got {value}")


def _check_finite(option: str, value: float | None) -> None:
    """Refuse NaN and ±inf (typer parses ``nan`` and ``inf`` as floats)."""
    if value is not None and not math.isfinite(value):
        _fail(f"{option} must be a finite number, got {value}")


def _load_edits(paths: list[Path]):
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


def _check_model(source: str, dtype: str | None = None, device: str | None = None) -> str:
    """Check the model source, --dtype and --device before any model loads (exit 2 with one clear error).

    The one model-source validator (:func:`circuits.model.validate_source`, also called by
    :func:`circuits.model.load_model`): an empty ``--model ""``, a malformed config, an unknown or
    non-string architecture, truncated or mismatched weights or a bad GGUF header is refused here.

    Returns:
        ``source``.
    """
    from circuits.model import (
        ModelLoadError,
        ModelNotInstalledError,
        UnsupportedArchitecture,
        quiet_libraries,
        resolve_device,
        resolve_dtype,
        validate_source,
    )

    quiet_libraries()
    try:
        resolve_dtype(dtype)
        resolve_device(device)
        validate_source(source)
    except (ModelNotInstalledError, ModelLoadError, UnsupportedArchitecture) as e:
        _fail(str(e))
    return source


def _check_split(option: str, suite, split: str, *, given: str | None = None) -> None:
    """Refuse, before any model loads, a suite with no pairs in the split a command needs (e.g. all in eval).

    Suites generated per model (``identity-harm``) are checked once the model is bound.
    """
    from circuits.suites import SuiteError, made_per_model

    if made_per_model(suite):
        return
    try:
        suite.pairs(split)
    except SuiteError as e:
        _fail(f"{option} {given or suite.name}: {e}; a suite needs {split} pairs here")


def _load(source: str, dtype: str | None = None, device: str | None = None, prepend_bos: bool | None = None):
    from circuits.model import (
        ModelLoadError,
        ModelNotInstalledError,
        UnsupportedArchitecture,
        load_model,
        quiet_libraries,
    )

    quiet_libraries()
    dtype = None if dtype is None else str(dtype)  # a DtypeChoice from the option: its plain name
    with console.status(f"loading {source}…"):
        try:
            return load_model(source, dtype=dtype, device=device, prepend_bos=prepend_bos)
        except (ModelNotInstalledError, ModelLoadError, UnsupportedArchitecture) as e:
            _fail(str(e))


DEFAULT_SUITE = "gender-occupation"


def _say_default(option: str, value: str | None, default: str) -> None:
    """Say which default an omitted option took (called after the input checks, so a bad input's output is only its error)."""
    if value is None:
        console.print(f"{option} not given: using {default}", highlight=False)


def _model_source(model: str | None, default: str) -> str:
    """``--model`` if given (an empty ``--model ""`` is kept, and refused by :func:`_check_model`), else ``default``."""
    return default if model is None else model


def _edit_model(edits, model: str | None) -> str:
    """The model to load for edits: --model, else where the first edit's model came from."""
    if model is not None:
        return model
    if not edits:
        return DEFAULT_MODEL
    return edits[0].model_source.get("source") or edits[0].model_name


