"""Sweeps: grids of dictionaries trained from one harvest and evaluated alike, with a report and Pareto plots."""

from .report import results_rows, write_report
from .sweep import SweepGrid, grid_configs, run_sweep

__all__ = ["SweepGrid", "grid_configs", "results_rows", "run_sweep", "write_report"]
