"""First-letter absorption, after SAEBench's task (Chanin et al. 2024, "A is for Absorption"), simplified.

Words from the tokenizer's vocabulary (single tokens: a space, then 3+ lowercase letters) are read by the model
after a short fixed prefix, and the dictionary's input at the word's token is kept. Per first letter:

- a logistic probe on that input (one letter against the rest) says whether the model represents the letter there;
- the letter's *main feature* is the one feature that best predicts the letter by firing (highest F1 on the training
  words);
- on held-out words of that letter that the probe gets right, the main feature's *recall* is how often it fires,
  and the *absorption rate* how often it is silent while another firing feature reads along the probe's direction
  (encoder cosine with the probe >= ``cos_threshold``): the letter is there, but another feature took it.

Reported as means over letters with enough words. Lower absorption and higher recall mean features that keep a
clean, general meaning. Differences from SAEBench: one prefix instead of in-context examples, one main feature per
letter (no feature-split search), and features' encoder rows (what they read) in place of decoder rows, which a
transcoder writes into another space.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from typing import Any

import torch

from ..data.packing import bos_token_id
from ..dictionary import Dictionary
from ..errors import InterpError
from ..models import LoadedModel, capture
from .probing import fit_logistic, split

__all__ = ["first_letter_absorption", "letter_words"]

PREFIX = "Spell the word:"


def letter_words(tokenizer, n: int = 3000, seed: int = 0) -> list[tuple[int, str]]:
    """Up to ``n`` ``(token id, first letter)`` of vocabulary tokens that are a space and 3+ lowercase letters."""
    vocab = tokenizer.get_vocab()
    texts = tokenizer.batch_decode([[i] for i in sorted(vocab.values())])
    out = []
    for i, t in zip(sorted(vocab.values()), texts):
        w = t[1:] if t.startswith(" ") else ""
        if len(w) >= 3 and w.isascii() and w.isalpha() and w.islower():
            out.append((i, w[0]))
    random.Random(seed).shuffle(out)
    return out[:n]


def _f1(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per column of ``pred [n, F]`` (bool), F1 against ``y [n]``."""
    tp = (pred & y[:, None]).sum(0).float()
    fp = (pred & ~y[:, None]).sum(0).float()
    fn = (~pred & y[:, None]).sum(0).float()
    return 2 * tp / (2 * tp + fp + fn).clamp(min=1)


def first_letter_absorption(lm: LoadedModel, dicts: Sequence[Dictionary], *, n_words: int = 3000, seed: int = 0,
                            cos_threshold: float = 0.1, min_words: int = 20, batch: int = 256) -> list[dict]:
    """Per dictionary: mean absorption rate, main-feature recall and F1, probe accuracy (see the module docstring)."""
    tok = lm.tokenizer
    if tok is None:
        raise InterpError(f"model {lm.name!r} has no tokenizer: first-letter absorption needs one")
    words = letter_words(tok, n_words, seed)
    if len(words) < 100:
        raise InterpError(f"the tokenizer has only {len(words)} whole-word tokens: too few for first-letter absorption")
    bos = bos_token_id(tok)
    prefix = ([bos] if bos is not None else []) + list(tok(PREFIX, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([prefix + [w] for w, _ in words])
    names = list(dict.fromkeys(d.cfg.hook_in for d in dicts))
    xs: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    with torch.inference_mode():
        for b in range(0, len(ids), batch):
            acts = capture(lm, ids[b:b + batch].to(lm.device), names)
            for n in names:
                xs[n].append(acts[n][:, -1].float().cpu())
    x_of = {n: torch.cat(v) for n, v in xs.items()}
    letters = [c for _, c in words]
    train, test = split(letters, 0.3, seed)
    out = []
    for d in dicts:
        x = x_of[d.cfg.hook_in]
        with torch.inference_mode():
            z = d.encode(x.to(d.W_enc.dtype)).float()
        enc = torch.nn.functional.normalize(d.W_enc.detach().float(), dim=1)
        rows: list[dict[str, Any]] = []
        for c in string.ascii_lowercase:
            y = torch.tensor([v == c for v in letters])
            if int(y[train].sum()) < min_words or int(y[test].sum()) < 3:
                continue
            w, bias, mu, std = fit_logistic(x[train], y[train])
            probe_says = (((x[test].double() - mu) / std) @ w + bias > 0)
            direction = torch.nn.functional.normalize((w / std).float(), dim=0)
            fires = z > 0
            main = int(_f1(fires[train], y[train]).argmax())
            yt, ft = y[test], fires[test]
            known = yt & probe_says  # words of this letter whose letter the probe finds
            if not known.any():
                continue
            reads = (enc @ direction >= cos_threshold)
            reads[main] = False
            silent = ~ft[:, main]
            absorbed = silent & (ft & reads[None, :]).any(1)
            rows.append({"letter": c, "words": int(yt.sum()), "probe_recall": float(known.sum() / yt.sum()),
                         "main_feature": main, "main_f1": float(_f1(ft[:, main:main + 1], yt)[0]),
                         "main_recall": float((~silent & known).sum() / known.sum()),
                         "absorption": float((absorbed & known).sum() / known.sum())})
        if not rows:
            raise InterpError("no letter has enough words for first-letter absorption")
        means = {k: sum(r[k] for r in rows) / len(rows)
                 for k in ("absorption", "main_recall", "main_f1", "probe_recall")}
        out.append({"letters": len(rows), "words": len(words), "mean": means, "per_letter": rows})
    return out
