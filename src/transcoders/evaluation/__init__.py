"""Evaluation: sparsity, reconstruction and spliced-in fidelity on held-out text."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from ..dictionary.runs import METRICS_FILE
    from .config import EvalConfig
    from .measure import evaluate, format_table

__all__ = ["METRICS_FILE", "EvalConfig", "evaluate", "format_table"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "..dictionary.runs": ("METRICS_FILE",), ".config": ("EvalConfig",), ".measure": ("evaluate", "format_table"),
})
