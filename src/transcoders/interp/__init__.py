"""Interpretability, measured: LLM explanations scored by detection and fuzzing, sparse probing, weights-based
prediction (``transcoders interp``), and features that separate two sets of texts (``transcoders concepts``)."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .autointerp import feature_order, interp, interp_summary
    from .config import DEFAULT_LLM, InterpConfig
    from .contrast import Concept, concepts
    from .llm import EndpointLLM, LocalLLM, open_llm
    from .run import read_results, run_interp

__all__ = ["DEFAULT_LLM", "Concept", "EndpointLLM", "InterpConfig", "LocalLLM", "concepts", "feature_order", "interp",
           "interp_summary", "open_llm", "read_results", "run_interp"]
__getattr__, __dir__ = lazy_exports(__name__, {
    ".autointerp": ("feature_order", "interp", "interp_summary"), ".config": ("DEFAULT_LLM", "InterpConfig"),
    ".contrast": ("Concept", "concepts"), ".llm": ("EndpointLLM", "LocalLLM", "open_llm"),
    ".run": ("read_results", "run_interp"),
})
