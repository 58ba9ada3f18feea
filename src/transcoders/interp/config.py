"""The settings of ``transcoders interp``: a module that imports nothing heavy, so the command line can build its
parser without torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..flags import opt

DEFAULT_LLM = "qwen2.5-coder-1.5b-instruct"
SCORES = ("llm", "probing", "absorption", "weights")


@dataclass
class InterpConfig:
    scores: str = opt("llm,probing,absorption,weights", "which scores, comma-separated: llm (explanations, detection "
                      "and fuzzing; slow on a CPU), probing (sparse probes on labelled texts), absorption (first-letter "
                      "features), weights (de-embeddings against the tokens features fire on)")
    features: int = opt(100, "features to explain and score per run: a seeded sample of the live features, "
                             "stratified by firing density (a rerun with more continues the same sample)")
    llm: str = opt(DEFAULT_LLM, "explainer and scorer: a named model (`transcoders models`), a local model folder, a "
                                "Hugging Face id, or with --llm-url the model name the endpoint serves")
    llm_url: str | None = opt(None, "an OpenAI-compatible API base (e.g. http://localhost:8000/v1) to use instead of "
                                    "a local model")
    llm_key_env: str = opt("OPENAI_API_KEY", "environment variable that holds the endpoint's key (read per request, "
                                             "never stored)")
    seed: int = opt(0, "sampling seed (features, silent windows, wrong marks)")
    top: int = opt(10, "strongest examples shown to the explainer")
    quantiles: int = opt(5, "more examples shown to the explainer, spread over the activation range")
    test: int = opt(10, "held-out activating windows scored (and as many silent ones)")
    left: int = opt(16, "tokens shown before the activating token")
    right: int = opt(4, "tokens shown after it")
    batch: int = opt(16, "scoring prompts per forward of a local LLM")
    labelled: str | None = opt(None, "a .jsonl of texts with labels to probe on (default: the default corpus's news "
                                     "topics and document sources)")
    label_column: str = opt("label", "label field of --labelled")
    text_column: str = opt("text", "text field of --labelled")
    probe_texts: int = opt(600, "texts per probing task at most")
    device: str = opt("cpu", "device of a local LLM (cpu, cuda, ...)")
    threads: int = opt(0, "CPU threads for torch (0 = torch's default)")
