"""``transcoders features``: one pass over held-out text that fills each run's feature store.

For every feature: how often it fires and how strongly (count, sum, max, a log-scale histogram), the contexts
where it is strongest (top-k by its maximum in the context), a uniform sample of the contexts where it fires
(bottom-k by a hash of (context, feature): mergeable across chunks and reproducible on resume, so no random state
is saved), and weights-only tables (logit effects, de-embeddings). Several runs of one model share the forward
pass, which stops after the highest layer needed.

State lives in the store itself; every chunk of contexts is one transaction (see :mod:`.store`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data.activations import special_token_ids
from ..data.packing import Contexts, load_split
from ..dictionary import Dictionary
from ..dictionary import directions as W
from ..dictionary.runs import open_runs
from ..errors import CheckpointError
from ..models import Adapter, LoadedModel, capture, load_model
from . import store as S
from .config import FeaturesConfig

_MASK = 0xFFFFFFFF


def sample_priority(ctx: Tensor, feat: Tensor, seed: int = 0) -> Tensor:
    """A hash of (context, feature) in [0, 1): the ``n`` smallest per feature are a uniform sample of its contexts."""
    h = (ctx * 0x9E3779B1 + feat * 0x85EBCA77 + seed) & _MASK
    h = ((h ^ (h >> 16)) * 0x7FEB352D) & _MASK
    h = ((h ^ (h >> 15)) * 0x846CA68B) & _MASK
    h = h ^ (h >> 16)
    return h.double() / 2**32


@dataclass
class Accumulator:
    """Per-feature statistics and example slots of one dictionary, ``[slots, width]`` arrays."""

    width: int
    top_k: int
    n_samples: int

    def __post_init__(self):
        W_, K, N = self.width, self.top_k, self.n_samples
        self.fires = torch.zeros(W_, dtype=torch.int64)
        self.act_sum = torch.zeros(W_, dtype=torch.float64)
        self.act_max = torch.zeros(W_)
        self.hist = torch.zeros(W_, S.HIST_BINS, dtype=torch.int64)
        self.top = (torch.full((K, W_), -float("inf")), torch.full((K, W_), -1), torch.zeros(K, W_, dtype=torch.int64))
        self.smp = (torch.full((N, W_), float("inf"), dtype=torch.float64), torch.zeros(N, W_),
                    torch.full((N, W_), -1), torch.zeros(N, W_, dtype=torch.int64))

    def add(self, rows: Tensor, feats: Tensor, vals: Tensor, n_tokens: int, ctx_ids: Tensor) -> None:
        """Entries (token row, feature, activation > 0) of ``len(ctx_ids)`` contexts of ``n_tokens`` tokens each."""
        W_, B = self.width, ctx_ids.numel()
        self.fires += torch.bincount(feats, minlength=W_)
        self.act_sum.index_add_(0, feats, vals.double())
        self.act_max = torch.maximum(self.act_max, torch.zeros(W_).scatter_reduce_(0, feats, vals, "amax"))
        b = ((vals.log10() - S.HIST_LO) / S.HIST_STEP).floor().long().clamp_(0, S.HIST_BINS - 1)
        self.hist += torch.bincount(feats * S.HIST_BINS + b, minlength=W_ * S.HIST_BINS).view(W_, S.HIST_BINS)
        # each feature's maximum in each context, and the token where it is reached
        key = torch.div(rows, n_tokens, rounding_mode="floor") * W_ + feats
        cmax = torch.zeros(B * W_).scatter_reduce_(0, key, vals, "amax")
        win = vals == cmax[key]
        cpos = torch.zeros(B * W_, dtype=torch.int64)
        cpos[key[win]] = rows[win] % n_tokens
        cmax, cpos = cmax.view(B, W_), cpos.view(B, W_)
        ctx = ctx_ids[:, None].expand(B, W_)
        # top contexts: merge this batch's maxima with the kept ones
        val = torch.cat([self.top[0], cmax.masked_fill(cmax <= 0, -float("inf"))])
        c_all, p_all = torch.cat([self.top[1], ctx]), torch.cat([self.top[2], cpos])
        keep = val.topk(self.top_k, dim=0).indices
        val = val.gather(0, keep)
        self.top = (val, c_all.gather(0, keep).masked_fill(val == -float("inf"), -1), p_all.gather(0, keep))
        # uniform sample of firing contexts: the smallest hash priorities
        prio = sample_priority(ctx, torch.arange(W_)[None].expand(B, W_)).masked_fill(cmax <= 0, float("inf"))
        prio = torch.cat([self.smp[0], prio])
        s_val, s_ctx, s_pos = (torch.cat([a, b]) for a, b in zip(self.smp[1:], (cmax, ctx, cpos)))
        keep = (-prio).topk(self.n_samples, dim=0).indices
        prio = prio.gather(0, keep)
        self.smp = (prio, s_val.gather(0, keep), s_ctx.gather(0, keep).masked_fill(prio == float("inf"), -1),
                    s_pos.gather(0, keep))

    def example_rows(self) -> list[tuple]:
        out: list[tuple] = []
        for kind, (val, ctx, pos) in (("top", self.top), ("sample", self.smp[1:])):
            slot, feat = torch.nonzero(ctx >= 0, as_tuple=True)
            out += zip(feat.tolist(), [kind] * feat.numel(), slot.tolist(), ctx[slot, feat].tolist(),
                       pos[slot, feat].tolist(), val[slot, feat].tolist())
        return out

    def load(self, con) -> None:
        """Rebuild the state from a store (resume)."""
        for fid, fires, s, m, hist in con.execute("SELECT id, fires, act_sum, act_max, hist FROM features"):
            self.fires[fid], self.act_sum[fid], self.act_max[fid] = fires, s, m
            if hist:
                self.hist[fid] = torch.frombuffer(bytearray(hist), dtype=torch.int64)
        for feat, kind, slot, ctx, pos, act in con.execute("SELECT feature, kind, slot, context, pos, act FROM examples"):
            if kind == "top" and slot < self.top_k:
                self.top[0][slot, feat], self.top[1][slot, feat], self.top[2][slot, feat] = act, ctx, pos
            elif kind == "sample" and slot < self.n_samples:
                p = sample_priority(torch.tensor(ctx), torch.tensor(feat))
                for arr, v in zip(self.smp, (p, act, ctx, pos)):
                    arr[slot, feat] = v


def sparse_codes(d: Dictionary, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(rows, features, values)`` of the active entries of ``x [N, d_in]``'s codes, sorted by row."""
    rows, feats, vals = d.encode_sparse(x).entries()
    return rows, feats, vals.float()


def weight_tables(adapter: Adapter, d: Dictionary, k: int = 10, batch: int = 512) -> list[tuple[str, str, str, str]]:
    """Per feature, JSON ``[[token, score], ...]`` of its top and bottom logit effects and de-embeddings."""
    out: list[tuple[str, str, str, str]] = []
    for i in range(0, d.width, batch):
        idx = torch.arange(i, min(i + batch, d.width))
        tables = [W.top_bottom(W.logit_effects(adapter, W.decoder_directions(adapter, d, idx)), k),
                  W.top_bottom(W.deembeddings(adapter, W.encoder_directions(adapter, d, idx)), k)]
        def pairs(ids: Tensor, vals: Tensor) -> str:
            return json.dumps([[int(a), round(float(b), 4)] for a, b in zip(ids, vals)])

        (lti, ltv, lbi, lbv), (dti, dtv, dbi, dbv) = tables
        out += [(pairs(lti[r], ltv[r]), pairs(lbi[r], lbv[r]), pairs(dti[r], dtv[r]), pairs(dbi[r], dbv[r]))
                for r in range(idx.numel())]
    return out


def vocab_texts(lm: LoadedModel) -> list[tuple[int, str]]:
    """``(id, text)`` of every token the unembedding knows (``#id`` where there is no tokenizer)."""
    n = lm.adapter.unembed().shape[1]
    tok = lm.tokenizer
    if tok is None:
        return [(i, f"#{i}") for i in range(n)]
    return list(enumerate(tok.batch_decode([[i] for i in range(n)])))


def collect(runs: Sequence[str | Path], cfg: FeaturesConfig, *, lm: LoadedModel | None = None,
            progress: bool = True) -> dict[Path, dict]:
    """Fill ``features.sqlite`` in each run folder; returns each store's meta."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    opened = open_runs(runs, what="collect", clt=True)
    done = None if cfg.fresh else _complete(opened.dirs, cfg, opened.ctx_len or 128)
    if done is not None:  # nothing to read: say so without loading the model
        _say(progress, f"every store already holds {cfg.tokens:,} tokens (--tokens more to extend them, --fresh to "
                       "start again)")
        return done
    # the forward stops at the highest layer read: only the blocks up to it are built (the unembedding stays)
    if lm is None:
        _say(progress, f"loading {opened.model} (blocks 0-{max(opened.layers)})...")
        lm = load_model(opened.model, n_layers=max(opened.layers) + 1)
    dicts = opened.load(expect_model=lm.name)
    ctx_len = opened.ctx_len or 128
    n_ctx = max(1, cfg.tokens // ctx_len)
    settings = {"format": S.FORMAT, "corpus": cfg.corpus, "text_column": cfg.text_column, "ctx_len": ctx_len,
                "top": cfg.top, "samples": cfg.samples, "model": lm.name}
    stores = []
    for r, d in zip(opened.dirs, dicts):
        _say(progress, f"{r}: opening its store (a new one starts with each feature's logit effects and "
                       "de-embeddings)...")
        stores.append(_RunStore.open(r, d, cfg, settings, n_ctx, lm))
    _say(progress, f"reading {n_ctx * ctx_len:,} held-out tokens of the {cfg.corpus} corpus...")
    contexts = load_split(cfg.corpus, lm.tokenizer, "eval", ctx_len=ctx_len, max_tokens=n_ctx * ctx_len,
                          text_column=cfg.text_column)
    t0 = time.perf_counter()
    done_tokens = _read(lm, stores, contexts, min(n_ctx, len(contexts)), cfg, progress)
    elapsed = time.perf_counter() - t0
    return {s.run: s.close(elapsed, done_tokens) for s in stores}


def _complete(dirs: Sequence[Path], cfg: FeaturesConfig, ctx_len: int) -> dict[Path, dict] | None:
    """Each run's store meta when every store is complete for these settings (else None: there is reading to do)."""
    want = {"corpus": cfg.corpus, "text_column": cfg.text_column, "ctx_len": ctx_len, "top": cfg.top,
            "samples": cfg.samples, "tokens_wanted": max(1, cfg.tokens // ctx_len) * ctx_len, "complete": True}
    metas = {}
    for r in dirs:
        path = S.store_path(r)
        if not path.is_file():
            return None
        con = S.connect(path, readonly=True)
        try:
            meta = S.get_meta(con)
        finally:
            con.close()
        if any(meta.get(k) != v for k, v in want.items()):
            return None
        metas[r] = meta
    return metas


class _RunStore:
    """One run's store while a pass fills it: its connection, its accumulator, where it starts, and the contexts
    read since its last write."""

    def __init__(self, run: Path, d: Dictionary, con, acc: Accumulator, start: int):
        self.run, self.d, self.con, self.acc, self.start = run, d, con, acc, start
        self.pending: list[tuple] = []

    @classmethod
    def open(cls, run: Path, d: Dictionary, cfg: FeaturesConfig, settings: dict, n_ctx: int,
             lm: LoadedModel) -> _RunStore:
        """Continue the store (its settings must match) or start it: weights-only tables and the vocabulary first."""
        path = S.store_path(run)
        if cfg.fresh:
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        con = S.connect(path)
        meta = S.get_meta(con)
        acc = Accumulator(d.width, cfg.top, cfg.samples)
        tokens_wanted = n_ctx * settings["ctx_len"]
        if meta:
            old = {k: meta.get(k) for k in settings}
            if old != settings:
                diff = ", ".join(f"{k}: {old[k]!r} -> {v!r}" for k, v in settings.items() if old[k] != v)
                raise CheckpointError(f"{path} was made with other settings ({diff}): add --fresh to start it again")
            acc.load(con)
            if meta["tokens_wanted"] != tokens_wanted:  # more (or fewer) tokens than last time: extend the store
                with con:
                    S.set_meta(con, tokens_wanted=tokens_wanted, complete=meta["contexts_done"] >= n_ctx)
        else:
            with con:
                S.set_meta(con, **settings, contexts_done=0, tokens_done=0, tokens_wanted=tokens_wanted,
                           complete=False, width=d.width, layer=d.cfg.layer, started=time.time())
                con.executemany("INSERT INTO features (id, fires, act_sum, act_max, hist, top_logits, bottom_logits, "
                                "top_deembed, bottom_deembed) VALUES (?, 0, 0, 0, NULL, ?, ?, ?, ?)",
                                [(i, *t) for i, t in enumerate(weight_tables(lm.adapter, d))])
                con.executemany("INSERT OR REPLACE INTO vocab (id, text) VALUES (?, ?)", vocab_texts(lm))
            meta = S.get_meta(con)
        return cls(run, d, con, acc, int(meta["contexts_done"]))

    def add(self, b0: int, ids: Tensor, mlp_in: Tensor, valid: Tensor, contexts: Contexts) -> None:
        """The codes of contexts ``b0..`` (``ids [B, T]``, their MLP inputs, which tokens count)."""
        d, T = self.d, ids.shape[1]
        x = mlp_in.reshape(-1, d.cfg.d_in).to(d.W_enc.dtype)
        with torch.inference_mode():
            rows, feats, vals = sparse_codes(d, x)
        keep = valid[rows]
        rows, feats, vals = rows[keep], feats[keep], vals[keep]
        self.acc.add(rows, feats, vals, T, torch.arange(b0, b0 + ids.shape[0]))
        per_ctx = torch.bincount(torch.div(rows, T, rounding_mode="floor"), minlength=ids.shape[0]).tolist()
        for j, (r, f, v) in enumerate(zip(rows.split(per_ctx), feats.split(per_ctx), vals.split(per_ctx))):
            c = b0 + j
            self.pending.append((c, ids[j].numpy().astype("int32").tobytes(), json.dumps(contexts.spans[c]),
                                 S.pack_codes(r % T, f, v, T, d.width)))

    def write(self, contexts_done: int, ctx_len: int, complete: bool) -> None:
        _write(self.con, self.acc, self.pending, contexts_done, ctx_len, complete)
        self.pending = []

    def close(self, elapsed: float, done_tokens: int) -> dict:
        with self.con:
            S.set_meta(self.con, seconds=elapsed, tokens_per_second=done_tokens / elapsed if done_tokens else None)
        meta = S.get_meta(self.con)
        self.con.close()
        return meta


def _read(lm: LoadedModel, stores: list[_RunStore], contexts: Contexts, n_ctx: int, cfg: FeaturesConfig,
          progress: bool) -> int:
    """One pass over contexts ``[min start, n_ctx)`` feeding every store from where it stands; writes every
    ``commit_every`` seconds and at the end. Returns the tokens read."""
    ctx_len = contexts.tokens.shape[1]
    start = min(s.start for s in stores)
    special = torch.tensor(sorted(special_token_ids(lm.tokenizer)), dtype=torch.long)
    names = [s.d.cfg.hook_in for s in stores]
    bar = tqdm(total=n_ctx * ctx_len, initial=start * ctx_len, desc="features", unit="tok", unit_scale=True,
               disable=not progress)
    last_write, done_tokens = time.perf_counter(), 0
    for b0 in range(start, n_ctx, cfg.batch):
        b1 = min(b0 + cfg.batch, n_ctx)
        ids = contexts.tokens[b0:b1]
        with torch.inference_mode():
            acts = capture(lm, ids.to(lm.device), names)
        valid = ~torch.isin(ids, special).flatten()
        for s in stores:
            if b0 >= s.start:
                s.add(b0, ids, acts[s.d.cfg.hook_in], valid, contexts)
        bar.update((b1 - b0) * ctx_len)
        done_tokens += (b1 - b0) * ctx_len
        if time.perf_counter() - last_write >= cfg.commit_every or b1 == n_ctx:
            for s in stores:
                s.write(b1, ctx_len, b1 == n_ctx)
            last_write = time.perf_counter()
    bar.close()
    return done_tokens


def _write(con, acc: Accumulator, new_contexts: list[tuple], contexts_done: int, ctx_len: int, complete: bool) -> None:
    """One transaction: statistics, example slots, the contexts they point at, progress."""
    with con:
        con.executemany("UPDATE features SET fires = ?, act_sum = ?, act_max = ?, hist = ? WHERE id = ?",
                        zip(acc.fires.tolist(), acc.act_sum.tolist(), acc.act_max.tolist(),
                            (h.numpy().tobytes() for h in acc.hist), range(acc.width)))
        con.execute("DELETE FROM examples")
        con.executemany("INSERT INTO examples (feature, kind, slot, context, pos, act) VALUES (?, ?, ?, ?, ?, ?)",
                        acc.example_rows())
        con.executemany("INSERT OR REPLACE INTO contexts (id, tokens, spans, codes) VALUES (?, ?, ?, ?)", new_contexts)
        con.execute("DELETE FROM contexts WHERE id NOT IN (SELECT DISTINCT context FROM examples)")
        S.set_meta(con, contexts_done=contexts_done, tokens_done=contexts_done * ctx_len, complete=complete,
                   updated=time.time())


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)
