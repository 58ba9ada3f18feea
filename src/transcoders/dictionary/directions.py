"""Feature directions in the model's residual stream, and the weights-only tables read along them: what each
feature writes and what excites it, whatever the input. Feature collection (dashboards' tables) and circuits
(de-embeddings through heads, pullbacks, connections between layers) both read directions from here.

Norm *gains* are folded in (each norm multiplies by a fixed vector); norm *denominators* are not (they depend on
the input), so a score is exact up to one positive factor per norm: read the rankings.

- logit effects: which next tokens a feature promotes and suppresses, ``f_dec W_U`` (through the final norm's gain);
- de-embeddings: which tokens excite it directly, ``W_E f_enc`` (the direct path from the token embedding).

A dictionary reading the MLP input (``blocks.L.mlp.in``, the normalised residual stream) has the pre-MLP norm's
gain folded into its encoder; one writing the MLP output has any post-MLP norm's gain (Gemma 2/3) folded into
its decoder. Every decoder row is treated as a residual-stream direction; a cross-layer transcoder's row, one
block per layer it writes to, as the sum of its blocks (each reaches the unembedding along the residual stream).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..models import Adapter
from ..models.adapters import NormParams
from .module import Dictionary


def center(v: Tensor, norm: NormParams) -> Tensor:
    """LayerNorms subtract the mean first: the part of a direction along (1, ..., 1) is invisible to them."""
    return v - v.mean(-1, keepdim=True) if norm.centered else v


def read_through(v: Tensor, norm: NormParams) -> Tensor:
    """A direction ``v [..., d]`` read from a norm's output, as a direction in the norm's input (gain folded in,
    the denominator left out)."""
    return center(v * norm.gain.float(), norm)


def write_through(v: Tensor, norm: NormParams | None) -> Tensor:
    """A direction ``v [..., d]`` written into a norm's input (a post-MLP or post-attention norm), as what reaches
    the residual stream (gain folded in, the denominator left out)."""
    return v if norm is None else v * norm.gain.float()


def _rows(W: Tensor, idx: Tensor | list[int] | None) -> Tensor:
    W = W.detach().float()
    return W if idx is None else W[torch.as_tensor(idx)]


def encoder_directions(adapter: Adapter, d: Dictionary, idx: Tensor | list[int] | None = None) -> Tensor:
    """``[n, d_model]``: the features' encoder rows as residual-stream directions (all features if ``idx`` is None)."""
    W = _rows(d.W_enc, idx)
    if d.cfg.hook_in.endswith("mlp.in"):
        W = read_through(W, adapter.norm_params(adapter.mlp_in_norm(d.cfg.layer)))
    return W


def decoder_directions(adapter: Adapter, d: Dictionary, idx: Tensor | list[int] | None = None, *,
                       below: int | None = None) -> Tensor:
    """``[n, d_model]``: what the features write into the residual stream (a cross-layer transcoder's features:
    the sum of what they write at each layer they write to, each block through that layer's post-MLP norm; only
    into the MLP outputs of layers ``< below`` when given, which is what layer ``below``'s MLP reads of them)."""
    W = _rows(d.W_dec, idx)
    if d.cfg.kind == "clt":
        blocks = W.reshape(W.shape[0], len(d.cfg.targets), -1)
        out = torch.zeros(W.shape[0], blocks.shape[-1])
        for j, m in enumerate(d.cfg.targets):
            if below is not None and m >= below:
                continue
            post = adapter.mlp_out_norm(m)
            out += write_through(blocks[:, j], None if post is None else adapter.norm_params(post))
        return out
    post = adapter.mlp_out_norm(d.cfg.layer) if d.cfg.hook_out.endswith("mlp.out") else None
    return write_through(W, None if post is None else adapter.norm_params(post))


def embedding_matrix(adapter: Adapter) -> Tensor:
    return adapter.embed().weight.detach().float() * adapter.embed_scale


def logit_effects(adapter: Adapter, directions: Tensor) -> Tensor:
    """``[n, vocab]`` for residual directions ``[n, d_model]``."""
    final = adapter.norm_params(adapter.final_norm())
    return (center(directions, final) * final.gain.float()) @ adapter.unembed().float()


def deembeddings(adapter: Adapter, directions: Tensor) -> Tensor:
    """``[n, vocab]``: each token's embedding read along each encoder direction ``[n, d_model]``."""
    return directions @ embedding_matrix(adapter).T


def top_bottom(scores: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per row of ``scores [n, V]``: ``(top_idx, top_val, bottom_idx, bottom_val)``, each ``[n, k]``, strongest first."""
    k = min(k, scores.shape[-1])
    t, b = scores.topk(k, dim=-1), (-scores).topk(k, dim=-1)
    return t.indices, t.values, b.indices, -b.values
