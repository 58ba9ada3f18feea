"""Loading causal LMs and naming their parts.

- :func:`load_model` gives a frozen :class:`LoadedModel` (the embedded default, a local folder or a HF id);
- its :class:`Adapter` (one per architecture family, see ``SUPPORTED_FAMILIES``) names the hook points
  (``blocks.{L}.mlp.in``, ``blocks.{L}.mlp.out``, ...), norms, OV weights, embeddings and unembedding;
- :func:`capture` reads activations at hook points, stopping the forward after the last one it needs;
- :func:`patch_mlp` replaces one MLP's output (splicing a transcoder in, ablations).
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .adapters import HOOK_POINTS, SUPPORTED_FAMILIES, Adapter, adapter_for
    from .hooks import StopForward, capture, patch_mlp
    from .loading import LoadedModel, load_model, model_layer_count

__all__ = ["HOOK_POINTS", "SUPPORTED_FAMILIES", "Adapter", "LoadedModel", "StopForward", "adapter_for", "capture",
           "load_model", "model_layer_count", "patch_mlp"]
__getattr__, __dir__ = lazy_exports(__name__, {
    ".adapters": ("HOOK_POINTS", "SUPPORTED_FAMILIES", "Adapter", "adapter_for"),
    ".hooks": ("StopForward", "capture", "patch_mlp"),
    ".loading": ("LoadedModel", "load_model", "model_layer_count"),
})
