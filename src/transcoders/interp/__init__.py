"""Interpretability, measured: LLM explanations scored by detection and fuzzing, sparse probing, weights-based
prediction (``transcoders interp``), and features that separate two sets of texts (``transcoders concepts``)."""

from .autointerp import DEFAULT_LLM, InterpConfig, feature_order, interp, interp_summary
from .concepts import Concept, concepts
from .llm import EndpointLLM, LocalLLM, open_llm
from .run import read_results, run_interp

__all__ = ["DEFAULT_LLM", "Concept", "EndpointLLM", "InterpConfig", "LocalLLM", "concepts", "feature_order", "interp",
           "interp_summary", "open_llm", "read_results", "run_interp"]
