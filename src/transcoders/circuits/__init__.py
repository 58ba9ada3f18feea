"""Feature circuits with a transcoder set: the frozen-linear replacement of a prompt, exact attributions,
path search, attribution graphs, weights-only analysis and interventions."""

from .replacement import Contributions, Edges, FrozenNorm, FrozenPrompt, Replacement
from .transcoder_set import TranscoderSet

__all__ = ["Contributions", "Edges", "FrozenNorm", "FrozenPrompt", "Replacement", "TranscoderSet"]
