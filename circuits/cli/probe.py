"""``circuits scan`` and ``circuits trace``: probe a model, write an atlas."""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, get_args

import typer
from pydantic import ValidationError
from rich.table import Table

from circuits.cli.common import (
    DEFAULT_MODEL,
    DEFAULT_SUITE,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    PrependBosOpt,
    _check_count,
    _check_finite,
    _check_model,
    _check_output,
    _check_split,
    _fail,
    _inputs,
    _load,
    _model_source,
    _say_default,
    _setup_logging,
    _writing,
    app,
    choice,
    console,
)
from circuits.io import validation_message
from circuits.probing.causal_tracing import TraceKind
from circuits.suites.core import MetricName

MetricChoice = choice("MetricChoice", get_args(MetricName))
SplitChoice = choice("SplitChoice", ("build", "eval"))
ExecutorChoice = choice("ExecutorChoice", ("inprocess", "ray"))
TraceKindChoice = choice("TraceKindChoice", get_args(TraceKind))


@app.command()
def scan(
    out: Annotated[Path, typer.Option("-o", "--out", help="Where to write the atlas JSON.")],
    suite: Annotated[
        str | None,
        typer.Option(metavar="<suite>", help="Behaviour suite: a shipped name, or a .jsonl / .json / .csv file of pairs (clean, corrupted, answer, wrong_answer). Default (said when used): gender-occupation."),
    ] = None,
    metric: Annotated[MetricChoice | None, typer.Option(help="Override the suite's metric.", show_default=False)] = None,
    only_correct: Annotated[bool, typer.Option("--only-correct", help="Keep only the pairs the model gets right (its greedy next token on the clean prompt starts the answer).")] = False,
    model: ModelOpt = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    prepend_bos: PrependBosOpt = None,
    split: Annotated[SplitChoice, typer.Option(help="Suite split to scan.")] = SplitChoice.build,
    max_pairs: Annotated[int | None, typer.Option(help="Pairs per template or group (default: all).")] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Flag components whose mean primary effect is >= this (default: 0.05 of the normalised effect; for spurious suites 10% of the behaviour's KL)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="Per-layer checkpoints; an interrupted scan resumes. Default: the cache dir.")
    ] = None,
    executor: Annotated[ExecutorChoice, typer.Option(help="Where sweep units run: inprocess, or ray (a Ray cluster; same atlas).")] = ExecutorChoice.inprocess,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: start a local cluster).")] = None,
    workers: Annotated[int, typer.Option(help="Ray actors, each holding one copy of the model.")] = 2,
    edges: Annotated[bool, typer.Option("--edges", help="Also score every edge (EAP-IG) and record the smallest top-n circuit reaching --edge-target as the behaviour's circuit graph.")] = False,
    edge_target: Annotated[float, typer.Option(help="Faithfulness the --edges circuit must reach (rest ablated with corrupted writes).")] = 0.8,
    max_edges: Annotated[int | None, typer.Option(help="Largest top-n circuit tried with --edges (default: every edge).")] = None,
    ig_steps: Annotated[int, typer.Option(help="EAP-IG steps for --edges.")] = 5,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Activation-patch every head and MLP on a suite and write a circuit atlas."""
    from circuits.atlas.build import scan as run_scan
    from circuits.suites import MetricSpec, SuiteError, load_suite

    _setup_logging(verbose)
    source = _model_source(model, DEFAULT_MODEL)
    given_suite, suite = suite, (suite if suite is not None else DEFAULT_SUITE)
    split, executor = str(split), str(executor)  # plain strings from here on (the enums only validate)
    metric = None if metric is None else str(metric)
    _check_output(out, inputs=_inputs(suite, source, checkpoint_dir))
    if checkpoint_dir is not None and checkpoint_dir.exists() and not checkpoint_dir.is_dir():
        _fail(f"--checkpoint-dir {checkpoint_dir}: is a file; a directory is expected")
    _check_finite("--threshold", threshold)
    _check_count("--workers", workers)
    _check_count("--ig-steps", ig_steps)
    _check_count("--seed", seed, minimum=0)
    _check_finite("--edge-target", edge_target)
    if not 0 < edge_target <= 1:
        _fail(f"--edge-target must be in (0, 1], got {edge_target}")
    if max_edges is not None:
        _check_count("--max-edges", max_edges)
    try:
        s = load_suite(suite)
        if metric is not None:
            s = replace(s, metric=MetricSpec.model_validate({**s.metric.model_dump(), "name": metric}))
    except SuiteError as e:
        _fail(str(e))
    except ValueError as e:  # pydantic: an unknown metric name
        _fail(f"--metric: {str(e).splitlines()[-1].strip()}")
    if max_pairs is not None and max_pairs < 1:
        _fail(f"--max-pairs must be >= 1, got {max_pairs}")
    _check_split("--suite", s, split, given=suite)
    runner = None
    if executor == "ray":
        from circuits.probing.executor import RayExecutor

        try:
            runner = RayExecutor(address=address, workers=workers)
        except ImportError as e:
            _fail(str(e))
    from circuits.model import cache_root

    checked = _check_model(source, dtype, device)
    _say_default("--suite", given_suite, DEFAULT_SUITE)
    m = _load(checked, dtype, device, prepend_bos)
    from circuits.suites import bind_model

    if edges:
        from circuits.model import edge_support

        if (reason := edge_support(m)) is not None:
            _fail(f"--edges: edge-level probing is not supported on this model: {reason}")
    s = bind_model(s, m)
    command = "circuits " + shlex.join(sys.argv[1:])
    from circuits.probing.pairs import PairError

    try:
        with _writing(checkpoint_dir or cache_root() / "checkpoints"):
            atlas = run_scan(
                m, s, split=split, max_pairs=max_pairs, threshold=threshold, seed=seed, command=command, only_correct=only_correct,  # type: ignore[arg-type]
                checkpoint_dir=checkpoint_dir or cache_root() / "checkpoints", executor=runner,
            )
    except (PairError, SuiteError) as e:
        _fail(str(e))
    except ValidationError as e:  # e.g. a non-finite effect: refused rather than written unreadable
        _fail(f"the atlas cannot be recorded: {validation_message(e)}")
    if edges:
        from circuits.atlas.circuit import find_circuit

        try:
            graph = find_circuit(m, s, split=split, max_pairs=max_pairs, ig_steps=ig_steps, target=edge_target, max_edges=max_edges)  # type: ignore[arg-type]
        except (PairError, SuiteError, ValueError) as e:
            _fail(f"--edges: {e}")
        atlas = atlas.model_copy(update={"behaviours": [atlas.behaviours[0].model_copy(update={"circuit": graph})]})
    from circuits.atlas.schema import AtlasError

    try:
        with _writing(out):
            atlas.save(out)
    except AtlasError as e:
        _fail(f"the atlas cannot be recorded: {e}")
    b = atlas.behaviours[0]
    table = Table(title=f"{b.name}: top components (normalised effect, 0 = corrupted, 1 = clean)")
    for col in ("component", "mean", "95% CI", "p", "flagged"):
        table.add_column(col)
    for c in b.top(10):
        e = c.effect
        table.add_row(c.id, f"{e.mean:+.3f}", f"[{e.ci_low:+.3f}, {e.ci_high:+.3f}]", f"{e.p_value:.1e}", "yes" if c.flagged else "")
    console.print(table)
    console.print(f"{len(b.flagged())} flagged of {len(b.components)}; atlas written to {out}")
    if b.circuit is not None:
        c = b.circuit
        console.print(f"circuit: {len(c.edges)} of {c.n_edges_total} edges ({c.selection}), faithfulness {c.faithfulness:.3f}, completeness {c.completeness:.3f}")


@app.command()
def trace(
    prompt: Annotated[str, typer.Option(help="Factual prompt.")] = "The Eiffel Tower is located in the city of",
    subject: Annotated[str, typer.Option(help="Substring whose tokens get noised.")] = "The Eiffel Tower",
    target: Annotated[str, typer.Option(help="Expected continuation (first token scored).")] = " Paris",
    kind: Annotated[TraceKindChoice, typer.Option(help="What to restore: the residual stream, MLP outputs or attention outputs.")] = TraceKindChoice.resid,
    window: Annotated[int, typer.Option(help="Layers restored per cell (mlp/attn).")] = 1,
    samples: Annotated[int, typer.Option(help="Noise draws.")] = 10,
    sever_mlp: Annotated[bool, typer.Option(help="Freeze later MLP outputs at corrupted values.")] = False,
    seed: Annotated[int, typer.Option(help="Noise seed.")] = 0,
    facts: Annotated[int | None, typer.Option(help="Instead of one prompt: average over this many facts the model knows (ROME Figure 1's token categories).")] = None,
    model: ModelOpt = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    prepend_bos: PrependBosOpt = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Write the grid as JSON.")] = None,
    atlas_path: Annotated[Path | None, typer.Option("--atlas", help="Add the grid to this atlas (same model).")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """ROME causal tracing: noise the subject, restore each (layer, token) state, report the grid."""
    from circuits.atlas.build import trace_record
    from circuits.atlas.schema import Atlas, AtlasError
    from circuits.io import atomic_write_text
    from circuits.model import subject_positions, token_strings
    from circuits.probing.causal_tracing import (
        CATEGORIES,
        causal_trace,
        trace_facts,
        trace_grid,
    )

    kind = str(kind)  # type: ignore[assignment]
    _setup_logging(verbose)
    if samples < 1 or window < 1 or (facts is not None and facts < 1):
        _fail(f"--samples, --window and --facts must be >= 1, got {samples}, {window}, {facts}")
    _check_count("--seed", seed, minimum=0)
    source = _model_source(model, DEFAULT_MODEL)
    if out is not None:
        _check_output(out, inputs=_inputs(atlas_path, source))
    if kind == "resid" and window != 1:
        _fail(f"--window must be 1 with --kind resid (a residual state is one layer), got {window}")
    if facts is None and (not subject or subject not in prompt):
        _fail(f"--subject {subject!r} does not occur in --prompt {prompt!r}")
    if facts is None and not target:
        _fail("--target must hold a token to score, got an empty string")
    atlas = None
    if atlas_path is not None:  # read (and check writable) before the trace, not after it
        _check_output(atlas_path, option="--atlas", inputs=_inputs(source))  # the atlas itself is updated in place, by design
        try:
            atlas = Atlas.load(atlas_path)
        except AtlasError as e:
            _fail(str(e))
    m = _load(_check_model(source, dtype, device), dtype, device, prepend_bos)
    if atlas is not None:
        from circuits.model import fingerprint

        if atlas.model.fingerprint != fingerprint(m):
            _fail(f"{atlas_path} was made for another model ({atlas.model.fingerprint[:19]}…)")
    try:
        if facts is None:
            r = causal_trace(m, prompt, target, subject, kind=kind, window=window, n_samples=samples, seed=seed, sever_mlp=sever_mlp)  # type: ignore[arg-type]
            tokens, noised = token_strings(m, prompt), subject_positions(m, prompt, subject)
        else:
            from circuits.suites.tasks import known_facts

            chosen = known_facts(m)[:facts]
            r = trace_facts(m, chosen, kind=kind, window=window, n_samples=samples, seed=seed)  # type: ignore[arg-type]
            prompt, subject, target = f"average over {len(chosen)} known facts", "(each fact's subject)", "(each fact's answer)"
            tokens, noised = list(CATEGORIES), [0, 1, 2]
    except ValueError as e:
        _fail(str(e))
    clean, corrupted = float(r.clean_metric[0]), float(r.corrupted_metric[0])  # type: ignore[index]
    console.print(f"p({target!r}): clean {clean:.3f}, corrupted {corrupted:.3f} (noise std {r.method.noise_std:.3f})")
    table = Table(title=f"indirect effect of restoring {kind} (window {window}{', MLPs severed' if sever_mlp else ''}), best layer per token")
    for col in ("pos", "token", "subject", "best layer", "indirect effect"):
        table.add_column(col)
    ie = trace_grid(r, restored=False)
    for pos, tok in enumerate(tokens):
        layer = int(ie[:, pos].argmax())
        table.add_row(str(pos), repr(tok), "yes" if pos in noised else "", str(layer), f"{float(ie[layer, pos]):+.3f}")
    console.print(table)
    try:  # validated (finite numbers) before anything is written
        record = trace_record(r, tokens=tokens, subject_positions=noised, prompt=prompt, subject=subject, target=target, n_samples=samples)
    except AtlasError as e:
        _fail(f"the trace cannot be recorded: {e}")
    except ValidationError as e:  # e.g. a non-finite probability: never written into a file
        _fail(f"the trace cannot be recorded: {validation_message(e)}")
    if out is not None:
        with _writing(out):
            atomic_write_text(out, record.model_dump_json(indent=1))
        console.print(f"grid written to {out}")
    if atlas is not None:
        kept = [t for t in atlas.traces if (t.prompt, t.kind, t.window, t.severed) != (prompt, kind, window, sever_mlp)]
        try:
            with _writing(atlas_path):
                atlas.model_copy(update={"traces": [*kept, record]}).save(atlas_path)
        except AtlasError as e:
            _fail(f"{atlas_path} left unchanged: {e}")
        console.print(f"grid added to {atlas_path}")


