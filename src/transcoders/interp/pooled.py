"""Texts in, one row per text out: each dictionary's features pooled over the text's tokens (maximum and mean) and
the raw activation it reads, mean-pooled (what a dense probe sees). One forward serves every dictionary, and it
stops at the highest layer needed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data.activations import special_token_ids
from ..data.packing import text_ids
from ..dictionary import Dictionary
from ..errors import InterpError
from ..models import LoadedModel, capture

__all__ = ["Pooled", "pooled_codes"]


@dataclass
class Pooled:
    max: Tensor  # [n_texts, width]: each feature's largest activation in the text
    mean: Tensor  # [n_texts, width]: its mean over the text's tokens
    raw: Tensor  # [n_texts, d_in]: the dictionary's input, mean over the text's tokens


def pooled_codes(lm: LoadedModel, dicts: Sequence[Dictionary], texts: Sequence[str], *, ctx_len: int = 128,
                 batch: int = 8, progress: bool = False, desc: str = "texts") -> list[Pooled]:
    """:class:`Pooled` per dictionary for ``texts`` (each cut to ``ctx_len`` tokens, BOS first as in training;
    special tokens are left out of the pooling)."""
    if lm.tokenizer is None:
        raise InterpError(f"model {lm.name!r} has no tokenizer: texts cannot be read")
    ids = [text_ids(lm.tokenizer, t, ctx_len) for t in texts]
    special = torch.tensor(sorted(special_token_ids(lm.tokenizer)), dtype=torch.long)
    names = list(dict.fromkeys(d.cfg.hook_in for d in dicts))
    n = len(ids)
    out = [Pooled(torch.zeros(n, d.width), torch.zeros(n, d.width), torch.zeros(n, d.cfg.d_in)) for d in dicts]
    order = sorted(range(n), key=lambda i: len(ids[i]))  # similar lengths together: less padding
    bar = tqdm(total=n, desc=desc, unit="text", disable=not progress)
    for b0 in range(0, n, batch):
        rows = order[b0:b0 + batch]
        T = max(len(ids[i]) for i in rows)
        x = torch.zeros(len(rows), T, dtype=torch.long)
        valid = torch.zeros(len(rows), T, dtype=torch.bool)
        for r, i in enumerate(rows):  # right padding: causal attention keeps it out of the real tokens
            x[r, :len(ids[i])] = torch.tensor(ids[i])
            valid[r, :len(ids[i])] = True
        valid &= ~torch.isin(x, special)
        m, count, idx = valid.flatten(), valid.sum(1).clamp(min=1).float(), torch.tensor(rows)
        with torch.inference_mode():
            acts = capture(lm, x.to(lm.device), names)
            for d, p in zip(dicts, out):
                a = acts[d.cfg.hook_in].to(d.W_enc.dtype).cpu()
                flat = a.reshape(-1, d.cfg.d_in)
                rows_i, feats, vals = d.encode_sparse(flat).entries()
                keep = m[rows_i]
                rows_i, feats, vals = rows_i[keep], feats[keep], vals[keep].float()
                text_of = torch.div(rows_i, T, rounding_mode="floor")
                key = text_of * d.width + feats
                mx = torch.zeros(len(rows) * d.width).scatter_reduce_(0, key, vals, "amax").view(len(rows), d.width)
                sm = torch.zeros(len(rows) * d.width).index_add_(0, key, vals).view(len(rows), d.width)
                p.max[idx] = mx
                p.mean[idx] = sm / count[:, None]
                p.raw[idx] = (a.float() * valid[..., None]).sum(1) / count[:, None]
        bar.update(len(rows))
    bar.close()
    return out
