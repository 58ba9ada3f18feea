"""Weights-based prediction: does a feature's de-embedding (its encoder direction read against every token's
embedding, an input-invariant quantity) predict the tokens it actually fires on?

An automatic version of the paper's blind case studies, which guessed features from weights before looking at
examples. Per sampled feature (the same sample as ``transcoders interp``), over its stored examples' activating
tokens (the token where it is strongest in each context): how many are among its top-10 de-embedding tokens
(``hit@10``), and the mean percentile of their de-embedding score among the whole vocabulary (1 = the best token,
0.5 = chance). Also the share of single-token features: those whose examples peak on one token 90% of the time
(the paper's "context-free" features).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import numpy as np
import torch

from ..dictionary import Dictionary
from ..dictionary import directions as W
from ..models import Adapter
from .scoring import mean_ci

__all__ = ["SINGLE_TOKEN", "activating_tokens", "weights_prediction"]

SINGLE_TOKEN = 0.9  # a feature is single-token when this share of its examples peak on one token


def activating_tokens(con: sqlite3.Connection, feature: int) -> list[int]:
    """The token at the strongest position of each stored example of ``feature``."""
    out = []
    for ctx, pos in con.execute("SELECT context, pos FROM examples WHERE feature = ?", (feature,)):
        rec = con.execute("SELECT tokens FROM contexts WHERE id = ?", (ctx,)).fetchone()
        if rec is not None:
            out.append(int(np.frombuffer(rec[0], dtype=np.int32)[pos]))
    return out


def weights_prediction(con: sqlite3.Connection, adapter: Adapter, d: Dictionary, features: Sequence[int],
                       k: int = 10, batch: int = 256) -> dict:
    """``hit@k`` and mean percentile per feature and their means with 95% intervals (see the module docstring)."""
    per: dict[int, dict] = {}
    feats = list(features)
    for i in range(0, len(feats), batch):
        idx = feats[i:i + batch]
        scores = W.deembeddings(adapter, W.encoder_directions(adapter, d, idx))  # [n, vocab]
        topk = scores.topk(k, dim=-1).indices
        for r, f in enumerate(idx):
            toks = activating_tokens(con, f)
            if not toks:
                continue
            t = torch.tensor(toks)
            s = scores[r]
            pct = ((s[None, :] < s[t][:, None]).double().mean(1) + 0.5 * (s[None, :] == s[t][:, None]).double().mean(1))
            share = max(toks.count(x) for x in set(toks)) / len(toks)
            per[f] = {"hit": float(torch.isin(t, topk[r]).double().mean()), "percentile": float(pct.mean()),
                      "top_token_share": share}
    return {"features": len(per), f"hit@{k}": mean_ci([v["hit"] for v in per.values()]),
            "percentile": mean_ci([v["percentile"] for v in per.values()]),
            "single_token": mean_ci([float(v["top_token_share"] >= SINGLE_TOKEN) for v in per.values()]),
            "per_feature": per}
