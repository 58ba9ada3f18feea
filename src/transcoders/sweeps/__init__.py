"""Sweeps: grids of dictionaries trained from one harvest and evaluated alike, with a report and Pareto plots;
``tune`` searches one for the smallest L0 and width that reach a target."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .config import SweepGrid, TuneTarget
    from .report import results_rows, write_report
    from .sweep import grid_configs, run_sweep
    from .tune import run_tune

__all__ = ["SweepGrid", "TuneTarget", "grid_configs", "results_rows", "run_sweep", "run_tune", "write_report"]
__getattr__, __dir__ = lazy_exports(__name__, {
    ".config": ("SweepGrid", "TuneTarget"), ".report": ("results_rows", "write_report"),
    ".sweep": ("grid_configs", "run_sweep"), ".tune": ("run_tune",),
})
