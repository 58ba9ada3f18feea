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
