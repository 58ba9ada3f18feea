"""``transcoders concepts``: which features tell two sets of texts apart ("which feature is my concept?").

Each text is read by the model (BOS first, cut to the run's context length); a feature's score on a text is its
largest activation there. Features are ranked by AUROC (the chance that a positive text scores above a negative
one, ties counting half; 1 = fires on every positive above every negative), then by the gap between the mean
scores. Each comes with how often it fires in either set and, where the run has a feature store, its strongest
stored example and its explanation or label.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..dictionary.runs import open_runs
from ..errors import InterpError
from ..features import store as S
from ..models import LoadedModel, load_model
from .examples import StoredContexts, render
from .pooled import pooled_codes
from .scoring import auroc

__all__ = ["Concept", "concepts", "feature_notes"]


@dataclass
class Concept:
    feature: int
    auroc: float
    mean_pos: float
    mean_neg: float
    fires_pos: float  # fraction of positive texts where it fires
    fires_neg: float
    label: str = ""  # a person's label, else an LLM's explanation, else ""
    example: str = ""  # its strongest stored example, the activating token marked

    def to_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def concepts(runs: Sequence[str | Path], positive: Sequence[str], negative: Sequence[str], *, top: int = 20,
             lm: LoadedModel | None = None, batch: int = 8, progress: bool = True) -> dict[Path, list[Concept]]:
    """The ``top`` features of each run that best separate ``positive`` from ``negative`` texts."""
    if len(positive) < 1 or len(negative) < 1:
        raise InterpError("concepts need at least one positive and one negative text")
    opened = open_runs(runs, what="rank", clt=True)
    lm = lm or load_model(opened.model, n_layers=max(opened.layers) + 1)
    dicts = opened.load(expect_model=lm.name)
    texts = list(positive) + list(negative)
    pooled = pooled_codes(lm, dicts, texts, ctx_len=opened.ctx_len or 128, batch=batch, progress=progress,
                          desc="concepts")
    n_pos = len(positive)
    out = {}
    for run, p in zip(opened.dirs, pooled):
        pos, neg = p.max[:n_pos], p.max[n_pos:]
        score = auroc(pos, neg)
        gap = pos.mean(0) - neg.mean(0)
        order = sorted(range(score.numel()), key=lambda f: (-float(score[f]), -float(gap[f])))[:top]
        rows = [Concept(f, float(score[f]), float(pos[:, f].mean()), float(neg[:, f].mean()),
                        float((pos[:, f] > 0).float().mean()), float((neg[:, f] > 0).float().mean())) for f in order]
        notes = feature_notes(run, [c.feature for c in rows])
        for c in rows:
            c.label, c.example = notes.get(c.feature, ("", ""))
        out[run] = rows
    return out


def feature_notes(run: Path, features: Sequence[int], left: int = 12, right: int = 3) -> dict[int, tuple[str, str]]:
    """``{feature: (label or explanation, strongest stored example)}`` from the run's store ({} without one)."""
    path = S.store_path(run)
    if not path.is_file():
        return {}
    con = S.connect(path, readonly=True)
    try:
        return _notes(con, features, left, right)
    finally:
        con.close()


def _notes(con: sqlite3.Connection, features: Sequence[int], left: int, right: int) -> dict[int, tuple[str, str]]:
    width = int(S.get_meta(con).get("width") or 0)
    tables = {t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    ctxs = StoredContexts(con, width)
    vocab: dict[int, str] = {}
    out = {}
    for f in features:
        label = con.execute("SELECT label FROM labels WHERE feature = ? AND label != ''", (f,)).fetchone()
        if label is None and "interp" in tables:
            label = con.execute("SELECT explanation FROM interp WHERE feature = ? ORDER BY updated DESC", (f,)).fetchone()
        best = con.execute("SELECT context, pos FROM examples WHERE feature = ? AND kind = 'top' ORDER BY act DESC "
                           "LIMIT 1", (f,)).fetchone()
        text = ""
        if best is not None and (w := ctxs.window(best[0], f, best[1], left, right)) is not None:
            missing = [t for t in w.tokens if t not in vocab]
            if missing:
                q = ",".join("?" * len(missing))
                vocab.update(con.execute(f"SELECT id, text FROM vocab WHERE id IN ({q})", missing))
            text = render(w, vocab)
        out[f] = (label[0] if label else "", text)
    return out
