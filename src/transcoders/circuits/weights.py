"""Input-invariant (weights-only) analysis: what a feature reads and writes, whatever the prompt.

Norm *gains* are folded in (each norm multiplies by a fixed vector), norm *denominators* are not (they depend on
the input), so scores are exact up to one positive factor per norm: rankings are what to read.

- :func:`deembedding`: which tokens directly excite a feature, ``W_E f̃_enc`` (the direct path from the token
  embedding), or through one attention head's OV circuit, ``W_E W_OV f̃_enc`` (a token elsewhere in the context);
- :func:`logit_effects`: which next tokens a feature promotes and suppresses, ``f_dec W_U``;
- :func:`pullback`: which earlier features connect most strongly to a later one, ``W_dec^(l) f̃_enc^(l')`` (a
  cross-layer transcoder's: the decoder blocks written below layer l', summed);
- :func:`top_connections`: the strongest weights between all features of two layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..dictionary import directions as D
from ..errors import CircuitError
from .replacement import Replacement


@dataclass
class Ranked:
    """Top and bottom entries of a score vector: ``[(index, score)]``, strongest first."""

    top: list[tuple[int, float]]
    bottom: list[tuple[int, float]]


def _ranked(scores: Tensor, k: int) -> Ranked:
    ti, tv, bi, bv = (t[0].tolist() for t in D.top_bottom(scores[None], k))
    return Ranked(list(zip(ti, tv)), list(zip(bi, bv)))


def _check(rep: Replacement, layer: int, feature: int | None = None) -> None:
    if layer not in rep.tset:
        raise CircuitError(f"the transcoder set has no layer {layer} (it has {rep.tset.layers[0]}-{rep.tset.layers[-1]})")
    if feature is not None and not 0 <= feature < rep.tset[layer].width:
        raise CircuitError(f"feature {feature} does not exist: layer {layer} has features 0-{rep.tset[layer].width - 1}")


def encoder_direction(rep: Replacement, layer: int, feature: int) -> Tensor:
    """The feature's encoder row pulled back through the pre-MLP norm's gain: a residual-stream direction."""
    _check(rep, layer, feature)
    return D.encoder_directions(rep.adapter, rep.tset[layer], [feature])[0]


def decoder_direction(rep: Replacement, layer: int, feature: int) -> Tensor:
    """What the feature writes into the residual stream (through any post-MLP norm's gain)."""
    _check(rep, layer, feature)
    return D.decoder_directions(rep.adapter, rep.tset[layer], [feature])[0]


def ov_back(rep: Replacement, layer: int, head: int, direction: Tensor) -> Tensor:
    """The direction in head ``(layer, head)``'s *input* residual stream whose OV output moves ``direction``."""
    if not 0 <= layer < rep.n_layers or not 0 <= head < rep.n_heads:
        raise CircuitError(f"head {layer}.{head} does not exist: layers 0-{rep.n_layers - 1}, heads 0-{rep.n_heads - 1}")
    lw = rep.layers[layer]
    u = lw.W_V[head] @ (lw.W_O[head] @ D.write_through(direction, lw.attn_out_norm))
    return D.read_through(u, lw.attn_norm)


def deembedding(rep: Replacement, layer: int, feature: int, *, head: tuple[int, int] | None = None, k: int = 10) -> Ranked:
    """Token scores for feature ``(layer, feature)``: direct, or through ``head = (layer, head)``'s OV circuit."""
    v = encoder_direction(rep, layer, feature)
    if head is not None:
        if head[0] > layer:
            raise CircuitError(f"head {head[0]}.{head[1]} runs after layer {layer}'s MLP: pick a head in layers 0-{layer}")
        v = ov_back(rep, head[0], head[1], v)
    return _ranked(D.embedding_matrix(rep.adapter) @ v, k)


def logit_effects(rep: Replacement, layer: int, feature: int, k: int = 10) -> Ranked:
    return _ranked(D.logit_effects(rep.adapter, decoder_direction(rep, layer, feature)[None])[0], k)


def pullback(rep: Replacement, layer: int, feature: int, onto: int, k: int = 10) -> Ranked:
    """Scores of every feature of the earlier layer ``onto`` for reaching ``(layer, feature)`` directly."""
    _check(rep, onto)
    if onto >= layer:
        raise CircuitError(f"--onto {onto} must be an earlier layer than {layer}")
    v = encoder_direction(rep, layer, feature)
    return _ranked(D.decoder_directions(rep.adapter, rep.tset[onto], below=layer) @ v, k)


def top_connections(rep: Replacement, src: int, dst: int, k: int = 20) -> list[tuple[int, int, float]]:
    """The ``k`` strongest direct weights (by magnitude, sign kept) from features of layer ``src`` to ``dst``."""
    _check(rep, src)
    _check(rep, dst)
    if src >= dst:
        raise CircuitError(f"connections run upwards: the source layer ({src}) must be below the destination ({dst})")
    W = D.decoder_directions(rep.adapter, rep.tset[src], below=dst)
    E = D.encoder_directions(rep.adapter, rep.tset[dst])
    M = W @ E.T  # [F_src, F_dst]
    top = M.flatten().abs().topk(min(k, M.numel())).indices
    return [(int(i) // M.shape[1], int(i) % M.shape[1], float(M.flatten()[i])) for i in top]
