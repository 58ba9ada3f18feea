"""The settings of ``transcoders eval``: a module that imports nothing heavy, so the command line can build its
parser without torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..flags import opt


@dataclass
class EvalConfig:
    """The settings of ``transcoders eval`` (its flags)."""

    corpus: str = opt("default", "held-out text from this corpus")
    text_column: str = opt("text", "text column for .jsonl/.parquet/HF corpora")
    tokens: int = opt(32768, "held-out tokens to evaluate on")
    batch: int = opt(8, "contexts per forward pass")
    each: bool = opt(False, "also splice each run in alone: a per-layer table beside the all-at-once figures")
    each_only: bool = opt(False, "only splice each run in alone (runs may then share a layer, e.g. to compare candidates)")
    threads: int = opt(0, "CPU threads (0: torch's default)")
    full_forwards: bool = opt(False, "run every spliced and ablated pass from the embeddings (the same numbers, more "
                              "compute; by default they start at the lowest replaced layer from the clean pass's "
                              "residual stream)")

    @property
    def together(self) -> bool:
        """Splice every run in at once (one per layer)."""
        return not self.each_only

    @property
    def alone(self) -> bool:
        """Splice each run in by itself."""
        return self.each or self.each_only
