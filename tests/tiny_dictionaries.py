"""Small dictionaries with every parameter non-trivial (biases, skip, thresholds), for format and interop tests."""

import torch

from transcoders.dictionary import Dictionary, DictionaryConfig

D, F = 16, 48


def make(kind, activation, layer=3, seed=0):
    hin, hout = f"blocks.{layer}.mlp.in", f"blocks.{layer}.mlp.out"
    if kind == "sae":
        hin = hout
    cfg = DictionaryConfig(d_in=D, d_out=D, width=F, kind=kind, activation=activation, k=5 if "topk" in activation else None,
                           model="tiny-model", model_type="llama", layer=layer, hook_in=hin, hook_out=hout)
    d = Dictionary(cfg)
    g = torch.Generator().manual_seed(seed)
    d.reset_parameters(g)
    with torch.no_grad():
        d.b_enc.normal_(0, 0.05, generator=g)
        d.b_dec.normal_(0, 0.1, generator=g)
        if d.W_skip is not None:
            d.W_skip.normal_(0, 0.1, generator=g)
        if activation == "jumprelu":
            d.threshold.uniform_(0.0, 0.05, generator=g)
        if activation == "batchtopk":
            d.threshold.fill_(0.02)
    return d


def perfect_sae(d_model: int, layer: int, site: str, model: str, model_type: str = "") -> Dictionary:
    """An SAE on ``blocks.{layer}.{site}`` that reconstructs exactly: relu(x) - relu(-x) = x (width 2 x d_model)."""
    cfg = DictionaryConfig(d_in=d_model, d_out=d_model, width=2 * d_model, kind="sae", activation="relu", model=model,
                           model_type=model_type, layer=layer, hook_in=f"blocks.{layer}.{site}",
                           hook_out=f"blocks.{layer}.{site}")
    d = Dictionary(cfg)
    eye = torch.eye(d_model)
    with torch.no_grad():
        d.W_enc.copy_(torch.cat([eye, -eye]))
        d.W_dec.copy_(torch.cat([eye, -eye]))
        d.b_enc.zero_()
        d.b_dec.zero_()
    return d
