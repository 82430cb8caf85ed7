"""Command-line interface: ``circuits scan``, ``edit``, ``export``, ``generate``, ``trace``, ``report``, ``atlas``.

Typical session (what ``make scan`` runs)::

    circuits scan --suite gender-occupation -o atlas/smollm2-135m/gender-occupation.atlas.json
    circuits edit atlas/smollm2-135m/gender-occupation.atlas.json --k 3 \
        -o atlas/smollm2-135m/edits/gender-occupation.ablation.json
    circuits generate --edit atlas/smollm2-135m/edits/gender-occupation.ablation.json \
        --prompt "The nurse said that"
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import track

from circuits.editing.recipes import RECIPE_KINDS
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Find and fix harmful or spurious circuits.")
console = Console()
err_console = Console(stderr=True)

DEFAULT_MODEL = "smollm2-135m"
MODEL_HELP = "Model: a shipped name (smollm2-135m), a Hugging Face directory, a .gguf file, or a hub id."
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP)]
DtypeOpt = Annotated[str | None, typer.Option(help="Weight dtype: float32 (default), bfloat16 or float16.")]
DeviceOpt = Annotated[str | None, typer.Option(help="Device: cpu (default), cuda, cuda:N or mps.")]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
        force=True,
    )


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}")  # messages may contain [brackets]
    raise typer.Exit(code=2)


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


def _report_table(report) -> Table:  # noqa: ANN001 - an EvalReport
    """A rich table of an evaluation report: every measure before → after, CI and paired test."""
    table = Table(title=f"{' + '.join(report.edits)} — target {report.suite}, suites' {report.split} split ({report.seconds:.0f} s)")
    for col in ("measure", "data", "before", "after", "change [95% CI]", "p", "harm reduced"):
        table.add_column(col, overflow="fold")
    for m in report.measures:
        pct = m.name == "perplexity"
        change = f"{m.change:+.2%} [{m.ci_low:+.2%}, {m.ci_high:+.2%}]" if pct else f"{m.change:+.3f} [{m.ci_low:+.3f}, {m.ci_high:+.3f}]"
        reduced = f"{m.reduction:+.1%}" if m.kind == "harm" else ""
        table.add_row(f"{m.name} ({m.unit})", m.data, f"{m.before:.3f}", f"{m.after:.3f}", change, f"{m.p_value:.1e}", reduced)
    return table


def _print_verdict(report) -> None:  # noqa: ANN001 - an EvalReport
    ok = "[green]met[/]" if report.meets_target else "[yellow]not met[/]"
    console.print(
        f"{report.suite}: harm reduced {report.harm_reduction:+.1%} (paired p={report.primary.p_value:.1e}), "
        f"perplexity {report.perplexity_change:+.2%}; target (≥50% less harm, <5% perplexity, p<0.05) {ok}"
    )


def _check_model_options(dtype: str | None, device: str | None) -> None:
    """Check --dtype/--device before any work (exit 2 with one clear error)."""
    from circuits.model import ModelLoadError, resolve_device, resolve_dtype

    try:
        resolve_dtype(dtype)
        resolve_device(device)
    except ModelLoadError as e:
        _fail(str(e))


def _load(source: str, dtype: str | None = None, device: str | None = None):  # noqa: ANN202 - returns a HookedLM
    from circuits.model import ModelLoadError, ModelNotInstalledError, UnsupportedArchitecture, load_model, quiet_libraries

    quiet_libraries()
    with console.status(f"loading {source}…"):
        try:
            return load_model(source, dtype=dtype, device=device)
        except (ModelNotInstalledError, ModelLoadError, UnsupportedArchitecture) as e:
            _fail(str(e))


def _edit_model(edits, model: str | None) -> str:  # noqa: ANN001 - edits: list[Edit]
    """The model to load for edits: --model, else where the first edit's model came from."""
    if model:
        return model
    if not edits:
        return DEFAULT_MODEL
    return edits[0].model_source.get("source") or edits[0].model_name


@app.command()
def scan(
    out: Annotated[Path, typer.Option("-o", "--out", help="Where to write the atlas JSON.")],
    suite: Annotated[str, typer.Option(help="Behaviour suite (shipped as package data).")] = "gender-occupation",
    model: ModelOpt = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    split: Annotated[str, typer.Option(help="Suite split to scan: build or eval.")] = "build",
    max_pairs: Annotated[int | None, typer.Option(help="Word pairs per template (default: all).")] = None,
    threshold: Annotated[float, typer.Option(help="Flag components with mean normalised effect >= this.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="Per-layer checkpoints; an interrupted scan resumes. Default: the cache dir.")
    ] = None,
    executor: Annotated[str, typer.Option(help="Where sweep units run: inprocess, or ray (a Ray cluster; same atlas).")] = "inprocess",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: start a local cluster).")] = None,
    workers: Annotated[int, typer.Option(help="Ray actors, each holding one copy of the model.")] = 2,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Activation-patch every head and MLP on a suite and write a circuit atlas."""
    from circuits.atlas.build import scan as run_scan
    from circuits.suites import SuiteError, load_suite

    _setup_logging(verbose)
    try:
        s = load_suite(suite)
    except SuiteError as e:
        _fail(str(e))
    if split not in ("build", "eval"):
        _fail(f"--split must be build or eval, got {split!r}")
    if executor not in ("inprocess", "ray"):
        _fail(f"--executor must be inprocess or ray, got {executor!r}")
    runner = None
    if executor == "ray":
        from circuits.probing.executor import RayExecutor

        try:
            runner = RayExecutor(address=address, workers=workers)
        except ImportError as e:
            _fail(str(e))
    from circuits.model import cache_root

    _check_model_options(dtype, device)
    m = _load(model or DEFAULT_MODEL, dtype, device)
    command = "circuits " + shlex.join(sys.argv[1:])
    atlas = run_scan(
        m, s, split=split, max_pairs=max_pairs, threshold=threshold, seed=seed, command=command,  # type: ignore[arg-type]
        checkpoint_dir=checkpoint_dir or cache_root() / "checkpoints", executor=runner,
    )
    atlas.save(out)
    b = atlas.behaviours[0]
    table = Table(title=f"{b.name}: top components (normalised effect, 0 = corrupted, 1 = clean)")
    for col in ("component", "mean", "95% CI", "p", "flagged"):
        table.add_column(col)
    for c in b.top(10):
        e = c.effect
        table.add_row(c.id, f"{e.mean:+.3f}", f"[{e.ci_low:+.3f}, {e.ci_high:+.3f}]", f"{e.p_value:.1e}", "yes" if c.flagged else "")
    console.print(table)
    console.print(f"{len(b.flagged())} flagged of {len(b.components)}; atlas written to {out}")


@app.command()
def edit(
    atlas_path: Annotated[Path, typer.Argument(help="Atlas JSON made by `circuits scan`.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Edit manifest path (.json); tensors go beside it.")],
    kind: Annotated[str, typer.Option(help="Edit kind: " + ", ".join(RECIPE_KINDS) + ".")] = "ablation",
    k: Annotated[int, typer.Option(help="Number of components (flagged heads, or neurons with --granularity neuron).")] = 3,
    granularity: Annotated[str, typer.Option(help="head or neuron (neurons of the flagged MLP layers, by attribution).")] = "head",
    mode: Annotated[str, typer.Option(help="Ablation/pruning mode: zero, mean or resample.")] = "mean",
    alpha: Annotated[float | None, typer.Option(help="Scaling factor (scaling) or low-rank scale (low_rank, invariance).")] = None,
    layer: Annotated[int | None, typer.Option(help="Residual layer for steering / directional ablation (default: strongest flagged head's).")] = None,
    coefficient: Annotated[float, typer.Option(help="Steering coefficient (negative: away from the clean side).")] = -1.0,
    rank: Annotated[int, typer.Option(help="Rank of low-rank edits.")] = 4,
    steps: Annotated[int, typer.Option(help="Training steps (trained kinds).")] = 80,
    lr: Annotated[float, typer.Option(help="Learning rate (trained kinds).")] = 1e-2,
    preservation: Annotated[float, typer.Option(help="Weight of the KL-to-unedited term (trained kinds).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed (training, resampling).")] = 0,
    behaviour: Annotated[str | None, typer.Option(help="Behaviour in the atlas (default: its first).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP + " Default: where the atlas's model came from.")] = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    generations: Annotated[int, typer.Option(help="Eval-split prompt pairs to generate from, before and after.")] = 2,
    evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Evaluate on held-out data (as `circuits eval`) and record it.")] = True,
    max_tokens: Annotated[int | None, typer.Option(help="Evaluation-text tokens for capability measures (default: all, ≥20k).")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Build an edit of any kind from an atlas (on the build split), evaluate it on held-out data, and save it."""
    from circuits.atlas.build import package_versions
    from circuits.atlas.schema import Atlas, AtlasError
    from circuits.editing import EditError, apply_edit, save_edit
    from circuits.editing.recipes import EditRecipe, build_edit
    from circuits.editing.train import TrainConfig
    from circuits.evaluation import run as evaluation
    from circuits.model import generate
    from circuits.suites import SuiteError, load_suite

    _setup_logging(verbose)
    if granularity not in ("head", "neuron"):
        _fail(f"--granularity must be head or neuron, got {granularity!r}")
    try:
        atlas = Atlas.load(atlas_path)
        b = atlas.behaviour(behaviour) if behaviour else atlas.behaviours[0]
        suite = load_suite(b.suite.name)
    except (AtlasError, SuiteError) as e:
        _fail(str(e))
    if suite.content_hash != b.suite.content_hash:
        _fail(f"suite {suite.name!r} has changed since the atlas was made (content hash differs); rescan")
    recipe = EditRecipe(
        kind=kind, k=k, granularity=granularity, mode=mode, alpha=alpha, layer=layer, coefficient=coefficient, rank=rank,  # type: ignore[arg-type]
        train=TrainConfig(steps=steps, lr=lr, preservation=preservation, seed=seed),
    )
    _check_model_options(dtype, device)
    m = _load(model or atlas.model.source.get("source") or atlas.model.name, dtype, device)
    with console.status(f"building the {kind} edit on the build split"):
        try:
            e = build_edit(m, atlas, suite, recipe, behaviour=b.name)
        except (AtlasError, EditError, ValueError) as err:
            _fail(str(err))
    if evaluate:
        with console.status("evaluating on held-out data (every harm and capability measure)"):
            try:
                report = evaluation.evaluate(m, e, suite=suite, max_tokens=max_tokens, seed=seed)
            except ValueError as err:  # EditError: wrong model
                _fail(str(err))
        e = e.with_evaluation(report.flat())
        console.print(_report_table(report))
        _print_verdict(report)
    save_edit(e, out, packages=package_versions())
    if e.training:
        console.print(f"trained {e.training['steps_run']} steps in {e.training['seconds']} s (best step {e.training['best_step']})")
    # Both sides of the first eval pairs, so a reader sees each prompt's continuation change.
    prompts = [p for pair in suite.pairs("eval")[:generations] for p in (pair.clean, pair.corrupted)]
    for prompt in track(prompts, description="generating before/after", console=console, transient=True):
        before = generate(m, prompt, max_new_tokens=12)
        with apply_edit(m, e, check_fingerprint=False):
            after = generate(m, prompt, max_new_tokens=12)
        console.print(f"[bold]{prompt!r}[/]\n  before: {before!r}\n  after:  {after!r}")
    console.print(f"edit written to {out} (+ {out.with_suffix('.safetensors').name})")


@app.command()
def export(
    edit_paths: Annotated[list[Path], typer.Option("--edit", "-e", help="Edit manifest (repeatable; baked in order).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output directory (must not exist or be empty).")],
    peft: Annotated[bool, typer.Option("--peft", help="Write one low-rank edit as a PEFT LoRA adapter instead.")] = False,
    model: Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP + " Default: where the edits' model came from.")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Bake edits into a plain Hugging Face model directory (or write a PEFT adapter)."""
    from circuits.editing import EditError
    from circuits.editing.export import export_hf, export_peft

    _setup_logging(verbose)
    edits = _load_edits(edit_paths)
    if peft and len(edits) != 1:
        _fail("--peft exports exactly one low-rank edit")
    m = _load(_edit_model(edits, model))
    with console.status(f"writing {out}"):
        try:
            path = export_peft(m, edits[0], out) if peft else export_hf(m, edits, out)
        except (EditError, ValueError) as err:
            _fail(str(err))
    what = "PEFT LoRA adapter" if peft else f"Hugging Face model with {len(edits)} edit(s) baked in"
    console.print(f"{what} written to {path}")


@app.command(name="eval")
def eval_(
    edit_paths: Annotated[list[Path], typer.Option("--edit", "-e", help="Edit manifest (repeatable; applied together, in order).")],
    suite_name: Annotated[str | None, typer.Option("--suite", "-s", help="Target behaviour (default: the suite the first edit was built on).")] = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Report JSON path (default: beside the first edit, NAME.eval.json).")] = None,
    record: Annotated[bool, typer.Option("--record/--no-record", help="Record the result in the edit's manifest (one edit only).")] = True,
    max_pairs: Annotated[int | None, typer.Option(help="Word pairs per suite template (default: all).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Evaluation-text tokens for capability measures (default: all, ≥20k).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap/permutation resampling.")] = 0,
    model: Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP + " Default: where the edits' model came from.")] = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Evaluate saved edits on held-out data: harm reduced vs capability kept, with paired tests.

    Harm: every shipped suite's bias gap on its eval split, stereotype preference, toxicity propensity,
    spurious flip rate, demographic parity and equalized-odds differences, calibration error and
    worst-group accuracy. Capability: perplexity, next-token accuracy and KL on the ≥20k-token
    evaluation text, classification and multiple-choice accuracy.
    """
    from circuits.editing import EditError, record_evaluation
    from circuits.evaluation import run as evaluation
    from circuits.io import atomic_write_text
    from circuits.suites import SuiteError, load_suite

    _setup_logging(verbose)
    edits = _load_edits(edit_paths)
    try:
        suite = load_suite(suite_name) if suite_name else None
    except SuiteError as e:
        _fail(str(e))
    _check_model_options(dtype, device)
    m = _load(_edit_model(edits, model), dtype, device)
    with console.status("evaluating on held-out data"):
        try:
            report = evaluation.evaluate(m, *edits, suite=suite, max_pairs=max_pairs, max_tokens=max_tokens, seed=seed)
        except (EditError, SuiteError, ValueError) as e:
            _fail(str(e))
    console.print(_report_table(report))
    _print_verdict(report)
    out = out or edit_paths[0].with_suffix(".eval.json")
    atomic_write_text(out, json.dumps(report.as_dict(), indent=2) + "\n")
    console.print(f"report written to {out}")
    if record and len(edit_paths) == 1:
        record_evaluation(edit_paths[0], report.flat())
        console.print(f"evaluation recorded in {edit_paths[0]}")
    elif record:
        console.print("several edits: their combined result is in the report, not in any single manifest")


@app.command()
def trace(
    prompt: Annotated[str, typer.Option(help="Factual prompt.")] = "The Eiffel Tower is located in the city of",
    subject: Annotated[str, typer.Option(help="Substring whose tokens get noised.")] = "The Eiffel Tower",
    target: Annotated[str, typer.Option(help="Expected continuation (first token scored).")] = " Paris",
    kind: Annotated[str, typer.Option(help="What to restore: resid, mlp or attn.")] = "resid",
    window: Annotated[int, typer.Option(help="Layers restored per cell (mlp/attn).")] = 1,
    samples: Annotated[int, typer.Option(help="Noise draws.")] = 10,
    sever_mlp: Annotated[bool, typer.Option(help="Freeze later MLP outputs at corrupted values.")] = False,
    seed: Annotated[int, typer.Option(help="Noise seed.")] = 0,
    model: ModelOpt = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Write the grid as JSON.")] = None,
    atlas_path: Annotated[Path | None, typer.Option("--atlas", help="Add the grid to this atlas (same model).")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """ROME causal tracing: noise the subject, restore each (layer, token) state, report the grid."""
    from circuits.atlas.schema import Atlas, AtlasError, TraceRecord
    from circuits.io import atomic_write_text
    from circuits.probing.causal_tracing import causal_trace

    _setup_logging(verbose)
    if kind not in ("resid", "mlp", "attn"):
        _fail(f"--kind must be resid, mlp or attn, got {kind!r}")
    _check_model_options(dtype, device)
    m = _load(model or DEFAULT_MODEL, dtype, device)
    try:
        r = causal_trace(m, prompt, target, subject, kind=kind, window=window, n_samples=samples, seed=seed, sever_mlp=sever_mlp)  # type: ignore[arg-type]
    except ValueError as e:
        _fail(str(e))
    console.print(f"p({target!r}): clean {r.clean_prob:.3f}, corrupted {r.corrupted_prob:.3f} (noise std {r.noise_std:.3f})")
    table = Table(title=f"indirect effect of restoring {kind} (window {window}{', MLPs severed' if sever_mlp else ''}), best layer per token")
    for col in ("pos", "token", "subject", "best layer", "indirect effect"):
        table.add_column(col)
    ie = r.indirect_effect
    for pos, tok in enumerate(r.tokens):
        layer = int(ie[:, pos].argmax())
        table.add_row(str(pos), repr(tok), "yes" if pos in r.subject else "", str(layer), f"{float(ie[layer, pos]):+.3f}")
    console.print(table)
    record = TraceRecord(
        prompt=prompt, subject=subject, target=target, kind=r.kind, window=window, severed=sever_mlp, n_samples=samples,
        seed=seed, noise_std=r.noise_std, clean_prob=r.clean_prob, corrupted_prob=r.corrupted_prob, tokens=r.tokens,
        subject_positions=r.subject, probs=r.probs.tolist(),
    )
    if out is not None:
        atomic_write_text(out, record.model_dump_json(indent=1))
        console.print(f"grid written to {out}")
    if atlas_path is not None:
        from circuits.model import fingerprint

        try:
            atlas = Atlas.load(atlas_path)
        except AtlasError as e:
            _fail(str(e))
        if atlas.model.fingerprint != fingerprint(m):
            _fail(f"{atlas_path} was made for another model ({atlas.model.fingerprint[:19]}…)")
        kept = [t for t in atlas.traces if (t.prompt, t.kind, t.window, t.severed) != (prompt, kind, window, sever_mlp)]
        atlas.model_copy(update={"traces": [*kept, record]}).save(atlas_path)
        console.print(f"grid added to {atlas_path}")


atlas_app = typer.Typer(no_args_is_help=True, help="Atlas files: JSON Schema, merging.")
app.add_typer(atlas_app, name="atlas")


@atlas_app.command("schema")
def atlas_schema(out: Annotated[Path | None, typer.Option("-o", "--out", help="Write here instead of stdout.")] = None) -> None:
    """Print (or write) the JSON Schema of atlas files."""
    import json

    from circuits.atlas.schema import Atlas
    from circuits.io import atomic_write_text

    text = json.dumps(Atlas.json_schema(), indent=2)
    if out is None:
        typer.echo(text)
    else:
        atomic_write_text(out, text + "\n")
        console.print(f"schema written to {out}")


@atlas_app.command("merge")
def atlas_merge(
    atlases: Annotated[list[Path], typer.Argument(help="Atlases of one model.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Merged atlas path.")],
) -> None:
    """Merge atlases of the same model (refused across weight fingerprints)."""
    from circuits.atlas.schema import Atlas, AtlasError, merge

    try:
        loaded = [Atlas.load(p) for p in atlases]
        merged = loaded[0]
        for a in loaded[1:]:
            merged = merge(merged, a)
    except AtlasError as e:
        _fail(str(e))
    merged.save(out)
    console.print(f"{len(merged.behaviours)} behaviours, {len(merged.traces)} traces → {out}")


@app.command()
def report(
    atlas_path: Annotated[Path, typer.Argument(help="Atlas JSON.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="HTML report path.")],
) -> None:
    """Render an atlas as a self-contained HTML report (plotly heatmaps, tables, tracing grids)."""
    from circuits.atlas.report import write_report
    from circuits.atlas.schema import Atlas, AtlasError

    try:
        atlas = Atlas.load(atlas_path)
    except AtlasError as e:
        _fail(str(e))
    write_report(atlas, out)
    console.print(f"report written to {out}")


@app.command()
def generate(
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="Prompt (repeatable).")],
    edit_paths: Annotated[list[Path] | None, typer.Option("--edit", "-e", help="Edit manifest (repeatable; applied in order).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP + " Default: the edits' model, else smollm2-135m.")] = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate (greedy).")] = 20,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Generate greedily from prompts, before and after applying saved edits."""
    from circuits.editing import EditError, apply_edit
    from circuits.model import generate as gen

    _setup_logging(verbose)
    edits = _load_edits(edit_paths or [])
    if max_new_tokens < 0:
        _fail(f"--max-new-tokens must be ≥ 0, got {max_new_tokens}")
    _check_model_options(dtype, device)
    m = _load(_edit_model(edits, model), dtype, device)
    for p in track(prompt, description="generating", console=console, transient=True):
        console.print(f"[bold]{p!r}[/]")
        console.print(f"  before: {gen(m, p, max_new_tokens=max_new_tokens)!r}")
        if edits:
            try:
                with apply_edit(m, *edits):
                    console.print(f"  after:  {gen(m, p, max_new_tokens=max_new_tokens)!r}")
            except EditError as e:
                _fail(str(e))


if __name__ == "__main__":
    app()
