"""Evaluation: sparsity, reconstruction and spliced-in fidelity on held-out text."""

from .evaluate import METRICS_FILE, evaluate, expand_runs, format_table

__all__ = ["METRICS_FILE", "evaluate", "expand_runs", "format_table"]
