"""Feature circuits with a transcoder set: the frozen-linear replacement of a prompt, exact attributions,
path search, attribution graphs, weights-only analysis and interventions."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .replacement import Contributions, Edges, FrozenNorm, FrozenPrompt, Replacement
    from .transcoder_set import TranscoderSet

__all__ = ["Contributions", "Edges", "FrozenNorm", "FrozenPrompt", "Replacement", "TranscoderSet"]
__getattr__, __dir__ = lazy_exports(__name__, {
    ".replacement": ("Contributions", "Edges", "FrozenNorm", "FrozenPrompt", "Replacement"),
    ".transcoder_set": ("TranscoderSet",),
})
