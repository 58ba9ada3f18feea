"""Tiny random models of every family with random transcoder sets (or cross-layer transcoders), for the circuits
tests.

Weights are scaled up from the tiny configs' 0.02 initialisation so that MLP and attention outputs are of order
one, as in trained models: Gemma 2/3 normalise those outputs, and a norm over a near-zero vector would amplify
float32 rounding by ~1000x and hide real mistakes behind loose tolerances.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))

import torch
from tiny_models import make_tiny_lm

from transcoders.circuits import TranscoderSet
from transcoders.dictionary import Dictionary, DictionaryConfig


def random_set(lm, *, width: int = 64, k: int = 8, skip_layers=(1,), layers=None, activation="topk", seed=0):
    a = lm.adapter
    tcs = {}
    for L in layers if layers is not None else range(a.n_layers):
        cfg = DictionaryConfig(
            d_in=a.d_model, d_out=a.d_model, width=width, activation=activation, k=k if activation == "topk" else None,
            kind="skip-transcoder" if L in skip_layers else "transcoder", layer=L, model=lm.name,
            hook_in=f"blocks.{L}.mlp.in", hook_out=f"blocks.{L}.mlp.out",
        )  # fmt: skip
        tcs[L] = _random(cfg, seed + L)
    return TranscoderSet(tcs, model=lm.name)


def _random(cfg: DictionaryConfig, seed: int) -> Dictionary:
    """A dictionary with random weights and biases (and skip path), frozen."""
    torch.manual_seed(seed)
    d = Dictionary(cfg)
    d.reset_parameters()
    with torch.no_grad():
        d.b_enc.normal_(0, 0.5 if cfg.activation == "topk" else 0.1)
        d.b_dec.normal_(0, 0.5)
        if d.W_skip is not None:
            d.W_skip.normal_(0, 0.1)
    return d.eval().requires_grad_(False)


def random_clt(lm, *, width: int = 48, k: int = 6, layers=None, activation="topk", seed=0):
    """A random cross-layer transcoder: layer i's features write one block to each of layers i, i+1, ... (of
    ``layers``); every block and bias non-trivial."""
    a = lm.adapter
    layers = list(range(a.n_layers)) if layers is None else list(layers)
    tcs = {}
    for L in layers:
        targets = [m for m in layers if m >= L]
        cfg = DictionaryConfig(
            d_in=a.d_model, d_out=a.d_model * len(targets), width=width, activation=activation,
            k=k if activation == "topk" else None, kind="clt", layer=L, model=lm.name,
            hook_in=f"blocks.{L}.mlp.in", hook_out=f"blocks.{L}.mlp.out",
            extra={"targets": targets, "clt_layers": layers},
        )  # fmt: skip
        tcs[L] = _random(cfg, seed + L)
    return TranscoderSet(tcs, model=lm.name)


def replacement_for(param: str, **set_kw):
    """``"FAMILY"``: a per-layer set on the family's tiny model (``random_set(**set_kw)``); ``"FAMILY+clt"``: a
    cross-layer transcoder."""
    from transcoders.circuits import Replacement

    family, _, kind = param.partition("+")
    lm = scaled_tiny_lm(family)
    return Replacement(lm, random_clt(lm) if kind == "clt" else random_set(lm, **set_kw))


def scaled_tiny_lm(kind: str):
    lm = make_tiny_lm(kind)
    with torch.no_grad():
        for name, p in lm.model.named_parameters():
            if p.ndim == 2 and not any(s in name for s in ("embed", "wte", "wpe")):
                p.mul_(3)
    return lm
