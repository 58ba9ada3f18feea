"""Evaluation: sparsity, reconstruction and spliced-in fidelity on held-out text."""

from ..dictionary.runs import METRICS_FILE
from .evaluate import EvalConfig, evaluate, format_table

__all__ = ["METRICS_FILE", "EvalConfig", "evaluate", "format_table"]
