"""Weights-only tables of a dictionary's features: what each one writes and what excites it, whatever the input.

Norm *gains* are folded in (each norm multiplies by a fixed vector); norm *denominators* are not (they depend on
the input), so a score is exact up to one positive factor per norm: read the rankings.

- logit effects: which next tokens a feature promotes and suppresses, ``f_dec W_U`` (through the final norm's gain);
- de-embeddings: which tokens excite it directly, ``W_E f_enc`` (the direct path from the token embedding).

A dictionary reading the MLP input (``blocks.L.mlp.in``, the normalised residual stream) has the pre-MLP norm's
gain folded into its encoder; one writing the MLP output has any post-MLP norm's gain (Gemma 2/3) folded into
its decoder. Every decoder row is treated as a residual-stream direction.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..dictionary import Dictionary


def center(v: Tensor, norm) -> Tensor:
    """LayerNorms subtract the mean first: the part of a direction along (1, ..., 1) is invisible to them."""
    return v - v.mean(-1, keepdim=True) if norm.centered else v


def encoder_directions(adapter, d: Dictionary, idx: Tensor | list[int] | None = None) -> Tensor:
    """``[n, d_model]``: the features' encoder rows as residual-stream directions (all features if ``idx`` is None)."""
    W = d.W_enc.detach().float()
    W = W if idx is None else W[torch.as_tensor(idx)]
    if d.cfg.hook_in.endswith("mlp.in"):
        norm = adapter.norm_params(adapter.mlp_in_norm(d.cfg.layer))
        W = center(W * norm.gain.float(), norm)
    return W


def decoder_directions(adapter, d: Dictionary, idx: Tensor | list[int] | None = None) -> Tensor:
    """``[n, d_model]``: what the features write into the residual stream."""
    W = d.W_dec.detach().float()
    W = W if idx is None else W[torch.as_tensor(idx)]
    post = adapter.mlp_out_norm(d.cfg.layer) if d.cfg.hook_out.endswith("mlp.out") else None
    return W if post is None else W * adapter.norm_params(post).gain.float()


def embedding_matrix(adapter) -> Tensor:
    return adapter.embed().weight.detach().float() * adapter.embed_scale


def logit_effects(adapter, directions: Tensor) -> Tensor:
    """``[n, vocab]`` for residual directions ``[n, d_model]``."""
    final = adapter.norm_params(adapter.final_norm())
    return (center(directions, final) * final.gain.float()) @ adapter.unembed().float()


def deembeddings(adapter, directions: Tensor) -> Tensor:
    """``[n, vocab]``: each token's embedding read along each encoder direction ``[n, d_model]``."""
    return directions @ embedding_matrix(adapter).T


def top_bottom(scores: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per row of ``scores [n, V]``: ``(top_idx, top_val, bottom_idx, bottom_val)``, each ``[n, k]``, strongest first."""
    k = min(k, scores.shape[-1])
    t, b = scores.topk(k, dim=-1), (-scores).topk(k, dim=-1)
    return t.indices, t.values, b.indices, -b.values
