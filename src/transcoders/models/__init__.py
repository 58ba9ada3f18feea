"""Loading causal LMs and naming their parts.

- :func:`load_model` gives a frozen :class:`LoadedModel` (the embedded default, a local folder or a HF id);
- its :class:`Adapter` (one per architecture family, see ``SUPPORTED_FAMILIES``) names the hook points
  (``blocks.{L}.mlp.in``, ``blocks.{L}.mlp.out``, ...), norms, OV weights, embeddings and unembedding;
- :func:`capture` reads activations at hook points, stopping the forward after the last one it needs;
- :func:`patch_mlp` replaces one MLP's output (splicing a transcoder in, ablations).
"""

from transcoders.models.adapters import HOOK_POINTS, SUPPORTED_FAMILIES, Adapter, adapter_for
from transcoders.models.hooks import StopForward, capture, patch_mlp
from transcoders.models.loading import LoadedModel, load_model, model_layer_count

__all__ = [
    "HOOK_POINTS",
    "SUPPORTED_FAMILIES",
    "Adapter",
    "LoadedModel",
    "StopForward",
    "adapter_for",
    "capture",
    "load_model",
    "model_layer_count",
    "patch_mlp",
]
