"""What the explainer and the scorer see of a feature: windows of stored contexts, split into examples to explain
from and held-out examples to score on, and non-activating windows to score against.

From the feature store (:mod:`transcoders.features.store`): a feature's ``top`` examples (its strongest contexts)
and ``sample`` examples (a uniform sample of the contexts where it fires). The samples, ranked by activation, are
dealt alternately into an explanation pool and a test pool, so both span every activation quantile. The
explainer sees the strongest top examples and a quantile-spread pick from its pool; the scorer sees a
quantile-spread pick from the test pool (topped up from the remaining top examples), never a context the
explainer saw, and as many windows where the feature is silent (random windows of stored contexts).
"""

from __future__ import annotations

import random
import re
import sqlite3
from dataclasses import dataclass

import numpy as np

from ..features import store as S

__all__ = ["FeatureExamples", "StoredContexts", "Window", "feature_examples", "render", "spread"]


@dataclass
class Window:
    """A stretch of one stored context: its tokens' ids and the feature's activation at each."""

    context: int
    start: int
    tokens: list[int]
    acts: list[float]

    @property
    def act(self) -> float:
        return max(self.acts, default=0.0)

    def active(self) -> list[int]:
        return [i for i, a in enumerate(self.acts) if a > 0]


@dataclass
class FeatureExamples:
    explain: list[Window]
    test: list[Window]  # activating, held out
    silent: list[Window]  # where the feature does not fire


def spread(items: list, n: int) -> list:
    """``n`` items evenly spaced through ``items`` (all of them when there are no more than ``n``)."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / max(1, n - 1))] for i in range(n)] if n > 1 else [items[0]]


class StoredContexts:
    """Stored contexts, read once each."""

    def __init__(self, con: sqlite3.Connection, width: int):
        self.con, self.width = con, width
        self._cache: dict[int, tuple[np.ndarray, bytes]] = {}
        self._ids: list[int] | None = None

    def get(self, ctx: int) -> tuple[np.ndarray, bytes] | None:
        if ctx not in self._cache:
            rec = self.con.execute("SELECT tokens, codes FROM contexts WHERE id = ?", (ctx,)).fetchone()
            if rec is None:
                return None
            self._cache[ctx] = (np.frombuffer(rec[0], dtype=np.int32), rec[1])
        return self._cache[ctx]

    def ids(self) -> list[int]:
        if self._ids is None:
            self._ids = [c for (c,) in self.con.execute("SELECT id FROM contexts ORDER BY id")]
        return self._ids

    def window(self, ctx: int, feature: int, pos: int, left: int, right: int) -> Window | None:
        got = self.get(ctx)
        if got is None:
            return None
        toks, codes = got
        acts = S.feature_acts_in_context(codes, toks.size, self.width, feature)
        a, b = max(0, pos - left), min(toks.size, pos + right + 1)
        return Window(ctx, a, toks[a:b].tolist(), [float(v) for v in acts[a:b]])


def feature_examples(con: sqlite3.Connection, feature: int, width: int, *, n_top: int = 10, n_quantile: int = 5,
                     n_test: int = 10, left: int = 16, right: int = 4, seed: int = 0,
                     contexts: StoredContexts | None = None) -> FeatureExamples:
    """The feature's explanation, test and silent windows (see the module docstring); deterministic in ``seed``."""
    ctxs = contexts or StoredContexts(con, width)
    rows = {kind: con.execute("SELECT context, pos, act FROM examples WHERE feature = ? AND kind = ? "
                              "ORDER BY act DESC, context", (feature, kind)).fetchall() for kind in ("top", "sample")}
    top = [w for c, p, _ in rows["top"] if (w := ctxs.window(c, feature, p, left, right)) is not None]
    sample = [w for c, p, _ in rows["sample"] if (w := ctxs.window(c, feature, p, left, right)) is not None]
    explain = top[:n_top]
    used = {w.context for w in explain}
    pool_explain = [w for w in sample[0::2] if w.context not in used]
    explain += spread(pool_explain, n_quantile)
    used |= {w.context for w in explain}
    test = spread([w for w in sample[1::2] if w.context not in used], n_test)
    used |= {w.context for w in test}
    for w in top[n_top:] + sample[0::2]:  # too few samples: top up from what the explainer did not see
        if len(test) >= n_test:
            break
        if w.context not in used:
            test.append(w)
            used.add(w.context)
    silent = silent_windows(ctxs, feature, len(test), left + right + 1, seed=seed, avoid=used)
    return FeatureExamples(explain, test, silent)


def silent_windows(ctxs: StoredContexts, feature: int, n: int, length: int, *, seed: int = 0,
                   avoid: set[int] | None = None, tries: int = 20) -> list[Window]:
    """``n`` random windows of stored contexts in which ``feature`` is zero throughout (fewer if it is rarely
    silent for ``length`` tokens)."""
    rng = random.Random(seed * 1_000_003 + feature)
    ids = [c for c in ctxs.ids() if not avoid or c not in avoid]
    out: list[Window] = []
    for _ in range(n * tries):
        if len(out) >= n or not ids:
            break
        ctx = rng.choice(ids)
        toks, _ = ctxs.get(ctx) or (np.zeros(0), b"")
        if toks.size == 0:
            continue
        start = rng.randrange(0, max(1, toks.size - length + 1))
        w = ctxs.window(ctx, feature, start, 0, length - 1)
        if w is not None and w.act <= 0 and len(w.tokens) > 1:
            out.append(w)
            ids.remove(ctx)
    return out


_SPECIAL = re.compile(r"^(<\|[^|]*\|>|</?s>|<unk>|<pad>)$")


def render(window: Window, vocab: dict[int, str], marks: list[int] | None = None, *, values: bool = False,
           top: float | None = None) -> str:
    """The window's text with the ``marks`` positions (default: where the feature fires) as ``<<token>>``; runs of
    marked tokens share one pair of brackets. ``values``: a 0-9 strength after each run, relative to ``top`` (the
    feature's largest activation among the examples shown; default the window's own).
    Special tokens (document separators in packed contexts) read as a line break; line breaks as ``\\n``."""
    marks = window.active() if marks is None else marks
    marked, top = set(marks), top or window.act or 1.0
    texts = ["\n" if _SPECIAL.match(vocab.get(t, "")) else vocab.get(t, "") for t in window.tokens]
    out, i, n = [], 0, len(window.tokens)
    while i < n:
        if i in marked:
            j = i
            while j + 1 < n and j + 1 in marked:
                j += 1
            text = "".join(texts[i:j + 1]).replace("\n", "\\n")
            lead = text[: len(text) - len(text.lstrip())]
            strength = f"({min(9, round(9 * max(window.acts[i:j + 1]) / top))})" if values else ""
            out.append(f"{lead}<<{text.lstrip() or text}>>{strength}")
            i = j + 1
        else:
            out.append(texts[i])
            i += 1
    return "".join(out).strip().replace("\n", "\\n")
