"""A grid of edits: behaviours × recipes (kinds, presets, strengths) × seeds, built, evaluated and tabulated.

Each **cell** is one (suite, row, seed): the row's recipe (:func:`circuits.editing.recipes.recipe`) is
built from the atlas on the suite's *build* split and evaluated on held-out data with
:func:`circuits.evaluation.run.evaluate`. Its report is written to
``{out}/reports/{suite}.{row}.seed{seed}.json`` (``{"cost": …, "report": …}``) the moment it is
measured, so an interrupted run resumes: a cell whose file exists is read back, not rebuilt. Seeds vary
the seeded rows only (the trained ones); the others are built once, with the first seed. The unedited
model is measured once per setting and reused (``baseline_cache``).

:func:`remeasure` replaces some measure groups in written reports after their measuring code changed,
and checks first that the rebuilt edit reproduces the report's harm. :func:`aggregate` gives one row per
(suite, row) with mean ± std over seeds (:func:`circuits.evaluation.run.seed_table`), the data of a
results table. A strength sweep is several rows of one recipe (:func:`sweep`), from which trade-off
curves (harm reduced against a capability cost) are read.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from circuits.atlas.build import package_versions
from circuits.atlas.schema import Atlas
from circuits.editing import Edit, EditError, load_edit, record_evaluation, save_edit
from circuits.editing.recipes import EditRecipe, build_edit, recipe
from circuits.evaluation.run import EvalReport, evaluate, seed_table
from circuits.experiments.selection import choose_direction_layer
from circuits.io import atomic_write_text
from circuits.model import HookedLM
from circuits.suites import Suite


@dataclass(frozen=True)
class Row:
    """One row of a grid: a recipe with options, under a name used in file names and tables.

    Attributes:
        name: The row's name (``"low_rank"``, ``"ablation.k6"``); unique in a grid.
        recipe: A kind or preset of :mod:`circuits.editing.recipes`.
        options: The recipe's options beyond the registry's defaults (``{"k": 3}``).
        seeded: Build it once per seed of the grid (trained methods); else once, with the first seed.
        baseline: An unrestricted baseline (``lora_all``, ``full_ft``), marked so in tables.
    """

    name: str
    recipe: str
    options: Mapping[str, Any] = field(default_factory=dict)
    seeded: bool = False
    baseline: bool = False

    def make(self, seed: int, shared: Mapping[str, Any]) -> EditRecipe:
        """Its recipe for ``seed``: the row's options, then the grid's shared options the method takes.

        Raises:
            EditError: An unknown recipe or a bad option.
        """
        r = recipe(self.recipe, **self.options)
        return r.with_shared(**shared, **({"seed": seed} if self.seeded else {}))


def sweep(name: str, recipe_name: str, option: str, values: Sequence[Any], **row: Any) -> tuple[Row, ...]:
    """Rows of one recipe at several strengths (``sweep("ablation", "ablation", "k", [1, 3, 6])``).

    Returns:
        One :class:`Row` per value, named ``{name}.{option}{value}``.
    """
    base = dict(row.pop("options", {}))
    return tuple(Row(f"{name}.{option}{v}", recipe_name, {**base, option: v}, **row) for v in values)


@dataclass(frozen=True)
class Grid:
    """What to run.

    Attributes:
        suites: The behaviours (suites scanned in the atlas).
        rows: The recipes.
        seeds: Seeds of the seeded rows (the first also builds the unseeded ones).
        shared: Options given to every recipe that takes them (``steps``, ``progress``).
        direction_layers: Candidate layers of ``directional_ablation`` rows without a ``layer``, chosen
            on the build split (:func:`circuits.experiments.choose_direction_layer`).
        save_edits_mb: The first seed's edit of each row is saved under ``edits/`` unless larger.
        evaluate: Keyword arguments of :func:`circuits.evaluation.run.evaluate` (``groups``, ``max_tokens``…).
    """

    suites: tuple[str, ...]
    rows: tuple[Row, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    shared: Mapping[str, Any] = field(default_factory=dict)
    direction_layers: tuple[int, ...] = ()
    save_edits_mb: float = 50.0
    evaluate: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [r.name for r in self.rows]
        if len(set(names)) != len(names):
            raise ValueError(f"row names repeat: {names}")
        if not self.seeds:
            raise ValueError("a grid needs at least one seed")

    def seeds_of(self, row: Row) -> tuple[int, ...]:
        """The seeds ``row`` is built with."""
        return self.seeds if row.seeded else self.seeds[:1]


@dataclass(frozen=True)
class Cell:
    """One measured (suite, row, seed).

    Attributes:
        suite: Suite name.
        row: Row name.
        seed: Seed.
        report: Its evaluation on held-out data.
        cost: Build seconds (wall, as measured then), parameters changed, components, edit size (MB) and
            what the method recorded (a layer sweep, CARE's front).
        path: The report file.
        reused: Read back from ``path`` rather than measured in this run.
    """

    suite: str
    row: str
    seed: int
    report: EvalReport
    cost: dict[str, Any]
    path: Path
    reused: bool


def cell_path(out: Path, suite: str, row: str, seed: int) -> Path:
    """Where a cell's report is written."""
    return Path(out) / "reports" / f"{suite}.{row}.seed{seed}.json"


def _edit_path(out: Path, suite: str, row: str) -> Path:
    """Where the first seed's edit of a (suite, row) is saved."""
    return Path(out) / "edits" / f"{suite}.{row}.json"


def _cells(grid: Grid, out: Path) -> Iterator[tuple[str, Row, int, Path]]:
    """Every cell of ``grid`` in order: ``(suite, row, seed, report path)``."""
    for suite_name in grid.suites:
        for row in grid.rows:
            for seed in grid.seeds_of(row):
                yield suite_name, row, seed, cell_path(out, suite_name, row.name, seed)


def skip_path(out: Path, suite: str, row: str) -> Path:
    """Where a row that cannot be built from a suite's data records why (read back by later runs and tables)."""
    return Path(out) / "reports" / f"{suite}.{row}.skipped.json"


def _read(path: Path, suite: str, row: str, seed: int) -> Cell:
    raw = json.loads(path.read_text(encoding="utf-8"))
    return Cell(suite, row, seed, EvalReport.from_dict(raw), raw["cost"], path, reused=True)


def build_cell(model: HookedLM, atlas: Atlas, suite: Suite, row: Row, seed: int, grid: Grid) -> tuple[Edit, dict[str, Any]]:
    """Build one cell's edit and its cost record (no evaluation).

    Returns:
        ``(edit, cost)``.

    Raises:
        EditError, AtlasError: The recipe cannot be built from this atlas and suite.
    """
    t = time.perf_counter()
    r = row.make(seed, grid.shared)
    extra: dict[str, Any] = {}
    if r.kind == "directional_ablation" and r.options().get("layer") is None and grid.direction_layers:
        layer, extra["layer_sweep"] = choose_direction_layer(model, suite, grid.direction_layers, form=r.form)  # type: ignore[arg-type]
        r = r.with_options(layer=layer)
    edit = build_edit(model, atlas, suite, r)
    cost = {"build_seconds": round(time.perf_counter() - t, 1), "parameters_changed": edit.n_parameters, "components": [str(c) for c in edit.components]}
    cost.update(extra)
    if r.objective == "care":  # ACE of the repaired neurons before/after, unfairness and accuracy on the build pairs
        cost["care"] = dict(edit.evaluation or {})
    cost["edit_mb"] = round(sum(x.numel() * x.element_size() for x in edit.tensors.values()) / 2**20, 1)
    return edit, cost


def run_grid(
    model: HookedLM | None,
    atlas: Atlas,
    grid: Grid,
    out: Path | str,
    *,
    suites: Callable[[str], Suite],
    measure: bool = True,
    on_cell: Callable[[Cell], None] | None = None,
) -> tuple[list[Cell], list[str]]:
    """Run every cell of ``grid`` not yet written under ``out``, and read back the others.

    Args:
        model: The model the atlas was measured on (``None`` with ``measure=False``).
        atlas: The atlas the edits are built from.
        grid: What to run.
        out: The experiment's directory (``reports/``, ``edits/`` and the measurement cache's key live there).
        suites: Suite name → the suite (e.g. ``lambda n: load_suite(n, model=model)``).
        measure: ``False``: build and measure nothing, only read the cells already written (tables).
        on_cell: Called with each cell as it is measured or read.

    Returns:
        ``(cells, skipped)``: the cells in grid order, and one line per (suite, row) that cannot be
        built from this data (e.g. CARE on pairs without labels), with the reason (recorded in
        ``reports/{suite}.{row}.skipped.json``, so a later run or table says it too).

    Raises:
        EditError: A row that does not name a recipe or has a bad option (before anything runs).
        ValueError: ``measure=True`` without a model.
    """
    if measure and model is None:
        raise ValueError("run_grid needs the model to measure (measure=False reads the written cells only)")
    out = Path(out)
    for row in grid.rows:
        row.make(grid.seeds[0], grid.shared)  # every recipe and option checked before the first build
    cells: list[Cell] = []
    skipped: dict[tuple[str, str], str] = {}  # (suite, row) → the reason it cannot be built
    loaded: dict[str, Suite] = {}  # each suite loaded once, and only when a cell of it is built
    for suite_name, row, seed, path in _cells(grid, out):
        if (suite_name, row.name) in skipped:
            continue
        skip = skip_path(out, suite_name, row.name)
        if skip.exists():  # recorded when the row could not be built from this data
            skipped[suite_name, row.name] = json.loads(skip.read_text(encoding="utf-8"))["reason"]
            continue
        if path.exists():
            cell = _read(path, suite_name, row.name, seed)
        elif not measure:
            continue
        else:
            assert model is not None
            suite = loaded[suite_name] = loaded.get(suite_name) or suites(suite_name)
            try:
                edit, cost = build_cell(model, atlas, suite, row, seed, grid)
            except EditError as e:  # data the method cannot use: no other seed can either
                atomic_write_text(skip, json.dumps({"reason": str(e)}, indent=1) + "\n")
                skipped[suite_name, row.name] = str(e)
                continue
            report = evaluate(model, edit, suite=suite, seed=seed, **grid.evaluate)
            atomic_write_text(path, json.dumps({"cost": cost, "report": report.as_dict()}, indent=1) + "\n")
            if seed == grid.seeds[0] and cost["edit_mb"] <= grid.save_edits_mb:
                save_edit(edit.with_evaluation({**(edit.evaluation or {}), **report.flat()}), _edit_path(out, suite_name, row.name), packages=package_versions())
            del edit  # large deltas: free before the next seed trains
            cell = Cell(suite_name, row.name, seed, report, cost, path, reused=False)
        cells.append(cell)
        if on_cell is not None:
            on_cell(cell)
    return cells, [f"{row} on {suite} ({reason})" for (suite, row), reason in skipped.items()]


def remeasure(
    model: HookedLM, atlas: Atlas, grid: Grid, out: Path | str, groups: Sequence[str], *, suites: Callable[[str], Suite],
) -> list[Cell]:
    """Re-measure ``groups`` (e.g. ``["factual_qa"]``, after its measuring code changed) in the written cells.

    The first seed's saved edit is loaded from ``edits/`` (other seeds are rebuilt from their seed); the
    target harm must reproduce the report's (relative 1e-4) before anything is replaced, and only the
    groups' measures are replaced (or added, if the report had none of them); the file records what was re-measured, when, and the check.

    Returns:
        The cells changed.

    Raises:
        RuntimeError: A rebuilt edit does not reproduce its report (rerun that cell instead).
    """
    out, changed = Path(out), []
    loaded: dict[str, Suite] = {}
    for suite_name, row, seed, path in _cells(grid, out):
        if not path.exists():
            continue
        raw = json.loads(path.read_text(encoding="utf-8"))
        if set(groups) <= {g for r in raw.get("remeasured", []) for g in r["groups"]}:
            continue
        suite = loaded[suite_name] = loaded.get(suite_name) or suites(suite_name)
        saved = _edit_path(out, suite_name, row.name)
        from_saved = seed == grid.seeds[0] and saved.exists()
        edit = load_edit(saved) if from_saved else build_cell(model, atlas, suite, row, seed, grid)[0]
        part = evaluate(model, edit, suite=suite, seed=seed, **{**grid.evaluate, "groups": ("suites", *groups)})
        old = EvalReport.from_dict(raw)
        target = old.primary.name
        was, now = old.get(target).after, part.get(target).after
        if not math.isclose(was, now, rel_tol=1e-4, abs_tol=1e-5):
            raise RuntimeError(f"{path.name}: the rebuilt edit does not reproduce the report ({target} after {now:.6f}, report {was:.6f}); rerun it")
        new = {m.name: m for m in part.measures if m.name != target and not m.name.startswith("bias_gap.")}
        had = {m.name for m in old.measures}  # replaced in place; measures the report did not have are added
        report = replace(old, measures=(*(new.get(m.name, m) for m in old.measures), *(m for n, m in new.items() if n not in had)))
        record = {"groups": list(groups), "date": time.strftime("%Y-%m-%d"), "edit": "saved seed-0 edit" if from_saved else f"rebuilt from seed {seed}",
                  "check": f"{target} after reproduced: {now:.6f} (report {was:.6f})", "measures": sorted(new)}
        raw = {"cost": raw["cost"], "report": report.as_dict(), "remeasured": [*raw.get("remeasured", []), record]}
        atomic_write_text(path, json.dumps(raw, indent=1) + "\n")
        if from_saved:  # the manifest's numbers follow the report; its tensors are untouched
            record_evaluation(saved, {**(edit.evaluation or {}), **report.flat()})
        changed.append(Cell(suite_name, row.name, seed, report, raw["cost"], path, reused=False))
    return changed


def aggregate(grid: Grid, cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """One record per (suite, row) with cells: mean ± std over seeds of every measure, and the costs.

    Returns:
        Records with ``suite``, ``kind`` (the row's name), ``seeds``, ``components`` (of the first seed),
        ``build_seconds_mean``, ``parameters_changed``, ``baseline``, ``edit_mb``, ``meets_target`` (per
        seed), ``capability_failures``, ``p_max`` (largest p of the primary harm over seeds) and
        ``measures`` (:func:`circuits.evaluation.run.seed_table`, as records).
    """
    out = []
    for suite_name in grid.suites:
        for row in grid.rows:
            group = [c for c in cells if c.suite == suite_name and c.row == row.name]
            if not group:
                continue
            reports, costs = [c.report for c in group], [c.cost for c in group]
            comps = costs[0]["components"]
            out.append({
                "suite": suite_name,
                "kind": row.name,
                "seeds": len(group),
                "components": ", ".join(comps[:3]) + (f" +{len(comps) - 3}" if len(comps) > 3 else ""),
                "build_seconds_mean": sum(c["build_seconds"] for c in costs) / len(costs),
                "parameters_changed": costs[0]["parameters_changed"],
                "baseline": row.baseline,
                "edit_mb": costs[0].get("edit_mb", 0.0),
                "meets_target": [r.meets_target for r in reports],
                "capability_failures": sorted({f for r in reports for f in r.capability_failures}),
                "p_max": max(r.primary.p_value for r in reports),
                "measures": seed_table(reports).to_dict(orient="records"),
            })
    return out
