"""The feature store: one SQLite file (``features.sqlite``) in a run folder, readable with any SQLite client.

Tables (``feature`` is the feature's index; ``context`` a held-out context's number):

- ``meta(key, value)``: JSON values: how the store was made (corpus, context length, tokens wanted), progress
  (``contexts_done``, ``tokens_done``), ``complete``.
- ``features(id, fires, act_sum, act_max, hist, top_logits, bottom_logits, top_deembed, bottom_deembed)``: firing
  count (tokens with activation > 0), sum and maximum of the activation, a histogram of log10(activation) (int64
  counts over ``HIST_BINS`` bins from ``HIST_LO``, ``HIST_STEP`` wide), and weights-only tables as JSON
  ``[[token_id, score], ...]``.
- ``examples(feature, kind, slot, context, pos, act)``: ``kind`` = ``top`` (the contexts where the feature is
  strongest) or ``sample`` (a uniform sample of the contexts where it fires, to be grouped by activation quantile);
  ``pos`` is the feature's strongest token in that context.
- ``contexts(id, tokens, spans, codes)``: a context's token ids (int32), its document pieces (JSON
  ``[[start, source, doc_id], ...]``) and every feature's activations there, sparse (``codes``: see
  :func:`pack_codes`). Only contexts some example points at are kept.
- ``labels(feature, label, note, updated)``: names people give features (the viewer writes these).
- ``vocab(id, text)``: every token's text, so that readers (the viewer) need no tokenizer.
- ``interp(feature, llm, explanation, detection, fuzzing, prompt, details, seconds, updated, detection_auroc,
  fuzzing_auroc)``: an LLM's explanation of a feature, its detection and fuzzing balanced accuracies and the AUROC
  of the scorer's P(yes) in each (``transcoders interp``); ``details`` is JSON with every scored text, its truth and
  the scorer's P(yes).

Every update is one transaction: a store killed mid-way holds the last complete chunk, and a rerun resumes.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..dictionary.runs import STORE_FILE, store_path

__all__ = ["FORMAT", "HIST_BINS", "HIST_LO", "HIST_STEP", "STORE_FILE", "connect", "feature_acts_in_context", "get_meta",
           "pack_codes", "set_meta", "store_path", "unpack_codes"]

FORMAT = 1
HIST_LO, HIST_STEP, HIST_BINS = -4.0, 0.1, 70  # log10(activation) from 1e-4 to 1e3

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS features (
    id INTEGER PRIMARY KEY, fires INTEGER NOT NULL, act_sum REAL NOT NULL, act_max REAL NOT NULL, hist BLOB,
    top_logits TEXT, bottom_logits TEXT, top_deembed TEXT, bottom_deembed TEXT);
CREATE TABLE IF NOT EXISTS examples (
    feature INTEGER NOT NULL, kind TEXT NOT NULL, slot INTEGER NOT NULL, context INTEGER NOT NULL,
    pos INTEGER NOT NULL, act REAL NOT NULL, PRIMARY KEY (feature, kind, slot));
CREATE TABLE IF NOT EXISTS contexts (id INTEGER PRIMARY KEY, tokens BLOB NOT NULL, spans TEXT NOT NULL, codes BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS labels (feature INTEGER PRIMARY KEY, label TEXT NOT NULL DEFAULT '', note TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS vocab (id INTEGER PRIMARY KEY, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS interp (
    feature INTEGER NOT NULL, llm TEXT NOT NULL, explanation TEXT NOT NULL, detection REAL, fuzzing REAL,
    prompt TEXT NOT NULL, details TEXT NOT NULL, seconds REAL NOT NULL, updated REAL NOT NULL,
    detection_auroc REAL, fuzzing_auroc REAL, PRIMARY KEY (feature, llm));
CREATE INDEX IF NOT EXISTS examples_by_context ON examples (context);
"""


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        con = sqlite3.connect(path, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")  # readers (the viewer) never block the writer
        con.executescript(SCHEMA)
        cols = {r[1] for r in con.execute("PRAGMA table_info(interp)")}
        for col in ("detection_auroc", "fuzzing_auroc"):  # stores made before these columns
            if col not in cols:
                con.execute(f"ALTER TABLE interp ADD COLUMN {col} REAL")
    return con


def get_meta(con: sqlite3.Connection) -> dict:
    return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}


def set_meta(con: sqlite3.Connection, **items) -> None:
    con.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in items.items()])


# ------------------------------------------------------------------------------------------------ sparse codes
def pack_codes(rows: Tensor, feats: Tensor, vals: Tensor, n_tokens: int, width: int) -> bytes:
    """Sparse activations of one context: entry ``i`` is token ``rows[i]``, feature ``feats[i]``, value ``vals[i]``
    (rows sorted). Stored as ``[n_entries: int32][row offsets: int32 x (n_tokens + 1)][features][values: float16]``
    with features as uint16 when the width allows, else int32."""
    counts = torch.bincount(rows, minlength=n_tokens)
    offsets = torch.zeros(n_tokens + 1, dtype=torch.int64)
    offsets[1:] = counts.cumsum(0)
    fdtype = np.uint16 if width <= 65536 else np.int32
    parts = [np.array([rows.numel()], dtype=np.int32).tobytes(), offsets.numpy().astype(np.int32).tobytes(),
             feats.numpy().astype(fdtype).tobytes(), vals.numpy().astype(np.float16).tobytes()]
    return b"".join(parts)


def unpack_codes(blob: bytes, n_tokens: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(offsets [n_tokens + 1], features [n], values [n] float32)``; token t's entries are
    ``offsets[t]:offsets[t + 1]``."""
    n = int(np.frombuffer(blob, dtype=np.int32, count=1)[0])
    o = 4
    offsets = np.frombuffer(blob, dtype=np.int32, count=n_tokens + 1, offset=o)
    o += 4 * (n_tokens + 1)
    fdtype = np.uint16 if width <= 65536 else np.int32
    feats = np.frombuffer(blob, dtype=fdtype, count=n, offset=o)
    o += feats.itemsize * n
    vals = np.frombuffer(blob, dtype=np.float16, count=n, offset=o).astype(np.float32)
    return offsets, feats.astype(np.int64), vals


def feature_acts_in_context(blob: bytes, n_tokens: int, width: int, feature: int) -> np.ndarray:
    """``[n_tokens]`` activations of one feature across a stored context (zeros where it is silent)."""
    offsets, feats, vals = unpack_codes(blob, n_tokens, width)
    out = np.zeros(n_tokens, dtype=np.float32)
    hit = np.nonzero(feats == feature)[0]
    if hit.size:
        tok = np.searchsorted(offsets, hit, side="right") - 1
        out[tok] = vals[hit]
    return out
