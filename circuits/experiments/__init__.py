"""Experiments: grids of behaviours × edit kinds × strengths × seeds, run resumably, and the choices they make on build data."""

from circuits.experiments.selection import choose_direction_layer

__all__ = ["choose_direction_layer"]
