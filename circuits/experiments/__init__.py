"""Experiments: grids of behaviours × edit kinds × strengths × seeds, run resumably, and the choices they make on build data."""

from circuits.experiments.grid import Cell, Grid, Row, aggregate, build_cell, cell_path, remeasure, run_grid, sweep
from circuits.experiments.selection import choose_direction_layer

__all__ = ["Cell", "Grid", "Row", "aggregate", "build_cell", "cell_path", "choose_direction_layer", "remeasure", "run_grid", "sweep"]
