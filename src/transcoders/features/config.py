"""The settings of ``transcoders features``: a module that imports nothing heavy, so the command line can build its
parser without torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..flags import opt


@dataclass
class FeaturesConfig:
    tokens: int = opt(65536, "held-out tokens to read (a rerun with more tokens continues where the last one stopped)")
    corpus: str = opt("default", "text to read: the default corpus, a local folder/file, or an HF dataset (its held-out split)")
    text_column: str = opt("text", "text column for .jsonl/.parquet/HF corpora")
    batch: int = opt(8, "contexts per forward pass")
    top: int = opt(20, "top-activating contexts kept per feature")
    samples: int = opt(40, "contexts sampled per feature across its activation range")
    commit_every: float = opt(30.0, "seconds between writes to the store (each write is atomic)")
    fresh: bool = opt(False, "start the stores again instead of continuing them")
    threads: int = opt(0, "CPU threads for torch (0: torch's default)")
