"""``circuits edit``, ``export``, ``eval`` and ``generate``: atlases become edits, measured and used."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Annotated, get_args

import typer
from rich.markup import escape
from rich.progress import track
from rich.table import Table

from circuits.cli.benchmarks import (
    BenchmarkLimitOpt,
    BenchmarkOpt,
    BenchmarkSamplesOpt,
    check_benchmarks,
    run_benchmarks,
)
from circuits.cli.common import (
    MODEL_HELP,
    BaselineCacheOpt,
    DeviceOpt,
    DtypeOpt,
    PrependBosOpt,
    _check_count,
    _check_model,
    _check_output,
    _check_split,
    _edit_model,
    _fail,
    _inputs,
    _load,
    _load_edits,
    _model_source,
    _setup_logging,
    _writing,
    app,
    choice,
    console,
)
from circuits.editing.build import Granularity, Selector
from circuits.editing.kinds import FORMS, KINDS
from circuits.editing.recipes import OBJECTIVES, PRESETS
from circuits.editing.registry_docs import cli_help

# The choices of `circuits edit`, from the registry (click lists them in --help and refuses anything else).
KindChoice = choice("KindChoice", KINDS)
PresetChoice = choice("PresetChoice", PRESETS)
FormChoice = choice("FormChoice", FORMS)
ObjectiveChoice = choice("ObjectiveChoice", OBJECTIVES)
GranularityChoice = choice("GranularityChoice", get_args(Granularity))
ModeChoice = choice("ModeChoice", ("zero", "mean", "resample"))
SelectChoice = choice("SelectChoice", get_args(Selector))

EDIT_HELP = (
    "Build an edit from an atlas (on the build split), evaluate it on held-out data, and save it.\n\n"
    "A recipe is (kind, form, objective) plus the method's options: --kind with --form/--objective (each defaults to the "
    "kind's first), or a --preset. Options a recipe does not take are refused.\n\n" + cli_help()
)


def _baseline_dir(use: bool) -> Path | None:
    """Where ``--baseline-cache`` keeps the unedited model's measurements (``None``: do not cache)."""
    from circuits.model import cache_root

    return cache_root() / "measurements" if use else None


def _report_table(report) -> Table:
    """A rich table of an evaluation report: every measure before → after, CI, paired test, and its verdict."""
    table = Table(title=f"{' + '.join(report.edits)} — target {report.suite}, suites' {report.split} split ({report.seconds:.0f} s)")
    for col in ("measure", "data", "before", "after", "change [95% CI]", "p (test)", "harm reduced", "capability"):
        table.add_column(col, overflow="fold")
    for m in report.measures:
        pct = m.name == "perplexity"
        fmt = "+.2%" if pct else "+.3f"
        ci = f" [{m.ci_low:{fmt}}, {m.ci_high:{fmt}}]" if math.isfinite(m.ci_low) else ""
        reduced = ""
        if m.kind == "harm" and math.isfinite(m.reduction):
            reduced = f"{m.reduction:+.1%}" + (f" (overshoot {m.overshoot:.0%})" if m.overshoot > 0 else "")
        elif m.kind == "harm":
            reduced = "no harm before" if m.reference is not None else ""
        cap = ""
        if m.verdict is not None:
            det = f"{m.detectable:.1%}" if pct or m.unit == "fraction" else f"{m.detectable:.2f}"
            cap = f"{m.verdict} (detects ≥ {det})"
        data = escape(m.data + (f" [{m.group}]" if m.group else ""))
        p = f"{m.p_value:.1e} ({m.test})" if math.isfinite(m.p_value) else "—"
        table.add_row(escape(f"{m.name} ({m.unit})"), data, f"{m.before:.3f}", f"{m.after:.3f}", f"{m.change:{fmt}}{ci}", p, reduced, cap)
    return table


def _print_verdict(report) -> None:
    colour = {"met": "green", "not met": "yellow", "not decidable": "yellow"}[report.verdict]
    over = f", overshoot {report.overshoot:.0%}" if report.overshoot > 0 else ""
    parts = [f"failing: {', '.join(report.capability_failures)}"] if report.capability_failures else []
    parts += [f"not decidable: {', '.join(report.not_decidable)}"] if report.not_decidable else []
    console.print(
        f"{report.suite}: harm reduced {report.harm_reduction:+.1%}{over} (paired p={report.primary.p_value:.1e}), "
        f"perplexity {report.perplexity_change:+.2%}; target (≥50% less harm with p<0.05, <5% loss on every capability measure) "
        f"[{colour}]{report.verdict}[/]" + (f" ({'; '.join(parts)})" if parts else ""),
        highlight=False,
    )


def _progress(name: str, seconds: float) -> None:
    """One line per measure as it finishes (shown on a terminal and when output goes to a file)."""
    console.print(f"  measured {escape(name)} in {seconds:.1f} s", highlight=False)


@app.command(help=EDIT_HELP)
def edit(
    atlas_path: Annotated[Path, typer.Argument(help="Atlas JSON made by `circuits scan`.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Edit manifest path (.json); tensors go beside it.")],
    kind: Annotated[KindChoice | None, typer.Option(help="Edit kind (default: ablation, unless --preset).", show_default=False)] = None,
    form: Annotated[FormChoice | None, typer.Option(help="The edit's default form (default: the kind's first).", show_default=False)] = None,
    objective: Annotated[ObjectiveChoice | None, typer.Option(help="How its tensors are found (default: the kind's first).", show_default=False)] = None,
    preset: Annotated[PresetChoice | None, typer.Option(help="A named recipe (fixes kind, form and objective).", show_default=False)] = None,
    k: Annotated[int | None, typer.Option(help="Components: flagged heads, or neurons with --granularity neuron (default 3).")] = None,
    granularity: Annotated[GranularityChoice | None, typer.Option(help="Heads, or neurons of the flagged MLP layers (by attribution); default head.", show_default=False)] = None,
    mode: Annotated[ModeChoice | None, typer.Option(help="Ablation mode (default mean).", show_default=False)] = None,
    select: Annotated[SelectChoice, typer.Option(help="Components: those the atlas flags, the top by effect flagged or not (a first look at a scan of few pairs), by ICP's R score, or flagged by tracing.")] = SelectChoice("flagged"),  # type: ignore[call-arg]
    alpha: Annotated[float | None, typer.Option(help="Scaling factor (scaling), low-rank scale (low_rank) or AIFS's α.")] = None,
    layer: Annotated[int | None, typer.Option(help="Layer of steering / directional ablation / AIFS (default: strongest flagged head's).")] = None,
    coefficient: Annotated[float | None, typer.Option(help="Steering coefficient (default -1: away from the clean side).")] = None,
    rank: Annotated[int | None, typer.Option(help="Rank of low-rank edits (default 4).")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps (gap/invariance objectives; default 80).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (trained objectives; default: the method's).")] = None,
    preservation: Annotated[float | None, typer.Option(help="Weight of the KL-to-unedited term (gap/invariance; default 1).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the method (training, resampling, PSO, AIFS) and of the evaluation (default 0).")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Any other option of the recipe, NAME=VALUE (repeatable; listed below).")
    ] = None,
    behaviour: Annotated[str | None, typer.Option(help="Behaviour in the atlas (default: its first).")] = None,
    suite_file: Annotated[
        str | None, typer.Option("--suite", "-s", metavar="<suite>", help="The behaviour's suite, if it was scanned from your own file (default: the shipped suite the atlas names).")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", metavar="<model>", help=MODEL_HELP + " Default: where the atlas's model came from.")] = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    prepend_bos: PrependBosOpt = None,
    generations: Annotated[int, typer.Option(help="Eval-split prompt pairs to generate from, before and after.")] = 2,
    evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Evaluate on held-out data (as `circuits eval`) and record it.")] = True,
    baseline_cache: BaselineCacheOpt = True,
    max_tokens: Annotated[int | None, typer.Option(help="Evaluation-text tokens for capability measures (default: all, ≥20k).")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    from circuits.atlas.build import package_versions
    from circuits.atlas.schema import Atlas, AtlasError
    from circuits.editing import EditError, apply_edit, save_edit
    from circuits.editing.build import check_atlas
    from circuits.editing.recipes import build_edit
    from circuits.editing.recipes import recipe as make_recipe
    from circuits.evaluation import run as evaluation
    from circuits.model import generate
    from circuits.suites import (
        SuiteError,
        bind_model,
        load_suite,
        made_per_model,
        shipped_suite,
    )

    _setup_logging(verbose)
    given = _inputs(atlas_path, suite_file, model)
    _check_output(out, suffix=".json", inputs=given)
    _check_output(out.with_suffix(".safetensors"), inputs=given)
    _check_count("--generations", generations, minimum=0)
    _check_count("--max-tokens", max_tokens)
    _check_count("--seed", seed, minimum=0)
    if preset is not None and kind is not None:
        _fail("--kind and --preset each name a recipe; give one")
    options = {"k": k, "granularity": None if granularity is None else str(granularity), "mode": None if mode is None else str(mode), "alpha": alpha, "layer": layer, "coefficient": coefficient, "rank": rank,
               "steps": steps, "lr": lr, "preservation": preservation, "seed": seed}
    try:
        recipe = make_recipe(
            preset.value if preset is not None else (kind.value if kind is not None else "ablation"),
            form=None if form is None else form.value, objective=None if objective is None else objective.value,  # type: ignore[arg-type]
            select=select.value,  # type: ignore[arg-type]
        )
        if "seed" not in recipe.options():
            options.pop("seed")  # a method without randomness: --seed is the evaluation's only
        recipe = recipe.with_options(**{name: v for name, v in options.items() if v is not None})
        recipe = recipe.with_assignments(param or [])
    except EditError as e:
        _fail(str(e))
    layer = recipe.options().get("layer")
    try:
        atlas = Atlas.load(atlas_path)
        b = atlas.behaviour(behaviour) if behaviour else atlas.behaviours[0]
        # The suite name inside an atlas is data from a file: shipped names only, never a path.
        suite = load_suite(suite_file) if suite_file else shipped_suite(b.suite.name, recorded_in=str(atlas_path))
    except (AtlasError, SuiteError) as e:
        _fail(str(e))
    if suite.content_hash != b.suite.content_hash and not made_per_model(suite):  # else compared once the model is loaded
        _fail(f"suite {suite.name!r} has changed since the atlas was made (content hash differs); rescan")
    _check_split("--suite", suite, "build", given=suite_file)
    if evaluate or generations:
        _check_split("--suite", suite, "eval", given=suite_file)
    if layer is not None and not 0 <= layer < atlas.model.n_layers:
        _fail(f"--layer {layer} does not exist in {atlas.model.name} ({atlas.model.n_layers} layers, 0-{atlas.model.n_layers - 1})")
    source = _model_source(model, atlas.model.source.get("source") or atlas.model.name)
    _check_output(out, suffix=".json", inputs=_inputs(source))
    m = _load(_check_model(source, dtype, device), dtype, device, prepend_bos)
    try:
        check_atlas(m, atlas)  # never stamp an edit for this model from an atlas of other weights
    except EditError as err:
        _fail(str(err))
    suite = bind_model(suite, m)  # suites generated with the model's tokenizer: compare hashes now
    if suite.content_hash != b.suite.content_hash:
        _fail(f"suite {suite.name!r} has changed since the atlas was made (content hash differs); rescan")
    with console.status(f"building the {recipe} edit on the build split"):
        try:
            e = build_edit(m, atlas, suite, recipe, behaviour=b.name)
        except (AtlasError, EditError, ValueError) as err:
            _fail(str(err))
    if evaluate:
        console.print("evaluating on held-out data (every harm and capability measure):")
        try:
            report = evaluation.evaluate(m, e, suite=suite, max_tokens=max_tokens, seed=seed or 0, baseline_cache=_baseline_dir(baseline_cache), on_measure=_progress)
        except ValueError as err:  # EditError: wrong model
            _fail(str(err))
        e = e.with_evaluation(report.flat())
        console.print(_report_table(report))
        _print_verdict(report)
    with _writing(out):
        save_edit(e, out, packages=package_versions())
    if e.training and "steps_run" in e.training:  # the gradient-trained objectives
        console.print(f"trained {e.training['steps_run']} steps in {e.training['seconds']} s (best step {e.training['best_step']})")
    elif e.training:  # CARE's swarm, AIFS's epochs
        console.print(f"{e.objective} ran in {e.training.get('seconds', '?')} s")
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
    model: Annotated[str | None, typer.Option("--model", "-m", metavar="<model>", help=MODEL_HELP + " Default: where the edits' model came from.")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Bake edits into a plain Hugging Face model directory (or write a PEFT adapter)."""
    from circuits.editing import EditError
    from circuits.editing.export import export_hf, export_peft

    _setup_logging(verbose)
    _check_output(out, directory=True, inputs=_inputs(model, edits=edit_paths))
    edits = _load_edits(edit_paths)
    if peft and (len(edits) != 1 or edits[0].kind != "low_rank"):
        _fail(f"--peft exports exactly one low_rank edit, got {', '.join(e.kind for e in edits)}")
    source = _edit_model(edits, model)
    _check_output(out, directory=True, inputs=_inputs(source))
    m = _load(_check_model(source))
    with console.status(f"writing {out}"):
        try:
            with _writing(out):
                path = export_peft(m, edits[0], out) if peft else export_hf(m, edits, out)
        except (EditError, ValueError) as err:
            _fail(str(err))
    what = "PEFT LoRA adapter" if peft else f"Hugging Face model with {len(edits)} edit(s) baked in"
    console.print(f"{what} written to {path}")


@app.command(name="eval")
def eval_(
    edit_paths: Annotated[list[Path], typer.Option("--edit", "-e", help="Edit manifest (repeatable; applied together, in order).")],
    suite_name: Annotated[str | None, typer.Option("--suite", "-s", metavar="<suite>", help="Target behaviour (default: the suite the first edit was built on).")] = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Report JSON path (default: beside the first edit, NAME.eval.json).")] = None,
    record: Annotated[bool, typer.Option("--record/--no-record", help="Record the result in the edit's manifest (one edit only).")] = True,
    max_pairs: Annotated[int | None, typer.Option(help="Word pairs per suite template (default: all).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Evaluation-text tokens for capability measures (default: all, ≥20k).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap/permutation resampling.")] = 0,
    benchmark: BenchmarkOpt = None,
    benchmark_limit: BenchmarkLimitOpt = None,
    benchmark_samples: BenchmarkSamplesOpt = 25,
    baseline_cache: BaselineCacheOpt = True,
    model: Annotated[str | None, typer.Option("--model", "-m", metavar="<model>", help=MODEL_HELP + " Default: where the edits' model came from.")] = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    prepend_bos: PrependBosOpt = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Evaluate saved edits on held-out data: harm reduced vs capability kept, with paired tests.

    ``--benchmark NAME=PATH`` adds a standard benchmark file you bring (CrowS-Pairs, StereoSet, BBQ,
    WinoBias, ToxiGen, RealToxicityPrompts), scored with its own published rule before and after.

    Harm: every shipped suite's bias gap (signed and mean absolute) on its eval split, stereotype
    preference, toxicity propensity, spurious flip rate, demographic parity and equalized-odds
    differences, calibration error and worst-group accuracy, each against the value that means "no
    harm". Capability: perplexity, next-token accuracy and KL on the ≥20k-token evaluation text,
    classification, multiple-choice and factual-QA accuracy, each with the smallest loss its data can
    detect; the target is met, not met or not decidable. The report (one JSON, benchmarks included)
    reads back with ``EvalReport.load``.
    """
    from circuits.editing import EditError, record_evaluation
    from circuits.evaluation import run as evaluation
    from circuits.suites import SuiteError, bind_model, load_suite, shipped_suite

    _setup_logging(verbose)
    _check_count("--max-pairs", max_pairs)
    _check_count("--max-tokens", max_tokens)
    _check_count("--benchmark-limit", benchmark_limit)
    _check_count("--benchmark-samples", benchmark_samples)
    _check_count("--seed", seed, minimum=0)
    benchmarks = check_benchmarks(benchmark)
    out = out or edit_paths[0].with_suffix(".eval.json")
    given = _inputs(suite_name, model, *(path for _, path in benchmarks), edits=edit_paths)
    _check_output(out, inputs=given)
    edits = _load_edits(edit_paths)
    try:
        suite = load_suite(suite_name) if suite_name else shipped_suite(str(edits[0].suite.get("name", "")), recorded_in=str(edit_paths[0]))
    except SuiteError as e:
        _fail(str(e))
    _check_split("--suite", suite, "eval", given=suite_name)
    source = _edit_model(edits, model)
    _check_output(out, inputs=_inputs(source))
    m = _load(_check_model(source, dtype, device), dtype, device, prepend_bos)
    suite = bind_model(suite, m)
    console.print("evaluating on held-out data:")
    try:
        report = evaluation.evaluate(m, *edits, suite=suite, max_pairs=max_pairs, max_tokens=max_tokens, seed=seed, baseline_cache=_baseline_dir(baseline_cache),
                                     on_measure=_progress)
    except (EditError, SuiteError, ValueError) as e:
        _fail(str(e))
    if benchmarks:
        changes = run_benchmarks(m, edits, benchmarks, limit=benchmark_limit, samples=benchmark_samples, seed=seed,
                                 baseline_cache=_baseline_dir(baseline_cache), on_measure=_progress)
        report = replace(report, measures=report.measures + tuple(changes))
    console.print(_report_table(report))
    _print_verdict(report)
    with _writing(out):
        report.save(out)
    console.print(f"report written to {out}")
    if record and len(edit_paths) == 1:
        try:
            with _writing(edit_paths[0]):
                record_evaluation(edit_paths[0], report.flat())
        except EditError as e:
            _fail(f"the evaluation cannot be recorded: {e}")
        console.print(f"evaluation recorded in {edit_paths[0]}")
    elif record:
        console.print("several edits: their combined result is in the report, not in any single manifest")


@app.command()
def generate(
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="Prompt (repeatable).")],
    edit_paths: Annotated[list[Path] | None, typer.Option("--edit", "-e", help="Edit manifest (repeatable; applied in order).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", metavar="<model>", help=MODEL_HELP + " Default: the edits' model, else smollm2-135m.")] = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    prepend_bos: PrependBosOpt = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate (greedy).")] = 20,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Generate greedily from prompts, before and after applying saved edits."""
    from circuits.editing import EditError, apply_edit
    from circuits.model import generate as gen

    _setup_logging(verbose)
    _check_count("--max-new-tokens", max_new_tokens, minimum=0)
    if any(not p for p in prompt):
        _fail("--prompt must not be empty")
    edits = _load_edits(edit_paths or [])
    m = _load(_check_model(_edit_model(edits, model), dtype, device), dtype, device, prepend_bos)
    for p in track(prompt, description="generating", console=console, transient=True):
        # soft_wrap: a generation is one line however long, so it can be read back (and copied) as printed.
        console.print(f"[bold]{escape(repr(p))}[/]", soft_wrap=True)
        console.print(f"  before: {escape(repr(gen(m, p, max_new_tokens=max_new_tokens)))}", soft_wrap=True, highlight=False)
        if edits:
            try:
                with apply_edit(m, *edits):
                    console.print(f"  after:  {escape(repr(gen(m, p, max_new_tokens=max_new_tokens)))}", soft_wrap=True, highlight=False)
            except EditError as e:
                _fail(str(e))

