"""``transcoders interp``: an LLM explains sampled features from their examples and is scored on held-out ones.

For each run (a set stands for its layers), from its feature store:

1. a sample of live features: sorted by firing density, cut into equal strata, shuffled within each (seeded) and
   dealt round-robin, so that the first N of the order are a density-stratified uniform sample for every N. The
   order is saved in the store, so a rerun with more ``--features`` extends the same sample;
2. per feature, an explanation from its strongest and quantile-spread examples (:mod:`.examples`);
3. *detection*: is each held-out window (activating, or one where the feature is silent) one it fires on?
   *fuzzing*: are the marked tokens of each held-out activating window the ones it fires on (the true ones, or as
   many wrong ones)? Each scored as balanced accuracy at P(yes) > 1/2, as published, and as the AUROC of the
   scorer's P(yes), which a scorer's bias towards one answer does not hide (:mod:`.scoring`).

Every feature's prompt, explanation, answers and scores go into the store's ``interp`` table in one transaction
(keyed by feature and LLM, so explainers can be compared): a killed run keeps what it scored, and a rerun skips it.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..dictionary.runs import run_dirs
from ..errors import InterpError
from ..features import store as S
from . import prompts as P
from .config import DEFAULT_LLM, InterpConfig
from .examples import StoredContexts, feature_examples, render
from .llm import LLM, open_llm
from .scoring import answer_auroc, balanced_accuracy, mean_ci, wrong_marks

__all__ = ["DEFAULT_LLM", "InterpConfig", "feature_order", "interp", "interp_summary", "open_store"]

STRATA = 10


def open_store(run: Path) -> sqlite3.Connection:
    path = S.store_path(run)
    if not path.is_file():
        raise InterpError(f"{run} has no feature store: run `transcoders features {run}` first")
    con = S.connect(path)
    if not S.get_meta(con).get("tokens_done"):
        con.close()
        raise InterpError(f"{path} holds no examples yet: run `transcoders features {run}` first")
    return con


def feature_order(con: sqlite3.Connection, seed: int = 0, min_examples: int = 4) -> list[int]:
    """The store's live features in sampling order (saved in the store on first use, reused after)."""
    key = f"interp_order_{seed}"
    meta = S.get_meta(con)
    if key in meta:
        return list(meta[key])
    counts = dict(con.execute("SELECT feature, COUNT(*) FROM examples GROUP BY feature"))
    live = [(fires, fid) for fid, fires in con.execute("SELECT id, fires FROM features WHERE fires > 0")
            if counts.get(fid, 0) >= min_examples]
    if not live:
        raise InterpError("no feature of this store fires on enough examples: collect more with "
                          "`transcoders features RUN --tokens N`")
    live.sort()
    rng = random.Random(seed)
    n = len(live)
    strata = [[fid for _, fid in live[n * s // STRATA: n * (s + 1) // STRATA]] for s in range(STRATA)]
    for s in strata:
        rng.shuffle(s)
    order = [s[i] for i in range(max(map(len, strata))) for s in strata if i < len(s)]
    with con:
        S.set_meta(con, **{key: order})
    return order


def score_feature(llm: LLM, con: sqlite3.Connection, feature: int, width: int, vocab: dict[int, str],
                  cfg: InterpConfig, contexts: StoredContexts | None = None) -> dict:
    """Explain one feature and score the explanation; returns the ``interp`` row's fields."""
    t0 = time.perf_counter()
    ex = feature_examples(con, feature, width, n_top=cfg.top, n_quantile=cfg.quantiles, n_test=cfg.test,
                          left=cfg.left, right=cfg.right, seed=cfg.seed, contexts=contexts)
    peaks = Counter(vocab.get(w.tokens[max(range(len(w.acts)), key=w.acts.__getitem__)], "") for w in ex.explain)
    top = max(w.act for w in ex.explain)
    user = P.explain_user([render(w, vocab, values=True, top=top) for w in ex.explain], peaks.most_common(5))
    reply = llm.generate(P.EXPLAIN_SYSTEM, user, max_tokens=32, shots=P.EXPLAIN_SHOTS)
    explanation = P.clean_explanation(reply) or "(no explanation)"
    # detection: activating and silent windows, unmarked
    det_items = [render(w, vocab, marks=[]) for w in ex.test + ex.silent]
    det_truth = [True] * len(ex.test) + [False] * len(ex.silent)
    det_p = _rounded(llm.yes_probabilities(P.SCORE_SYSTEM, P.detection_prefix(explanation), det_items))
    # fuzzing: each activating window marked right, and marked wrong where that is possible
    rng = random.Random(cfg.seed * 7919 + feature)
    fuzz_items, fuzz_truth = [], []
    for w in ex.test:
        wrong = wrong_marks(w, rng)
        if wrong is None:
            continue
        fuzz_items += [render(w, vocab), render(w, vocab, marks=wrong)]
        fuzz_truth += [True, False]
    fuzz_p = _rounded(llm.yes_probabilities(P.SCORE_SYSTEM, P.fuzzing_prefix(explanation), fuzz_items))
    details = {"explain": [[w.context, w.start] for w in ex.explain], "reply": reply,
               "detection": [[t, p, s] for t, p, s in zip(det_truth, det_p, det_items)],
               "fuzzing": [[t, p, s] for t, p, s in zip(fuzz_truth, fuzz_p, fuzz_items)]}
    return {"explanation": explanation, "prompt": user, "detection": balanced_accuracy(det_truth, det_p),
            "fuzzing": balanced_accuracy(fuzz_truth, fuzz_p), "detection_auroc": answer_auroc(det_truth, det_p),
            "fuzzing_auroc": answer_auroc(fuzz_truth, fuzz_p), "details": json.dumps(details),
            "seconds": time.perf_counter() - t0}


def _rounded(p: list[float]) -> list[float]:
    """P(yes) as stored (6 decimals): the scores are computed from what the store keeps, so they can be checked."""
    return [round(float(v), 6) for v in p]


def _save(con: sqlite3.Connection, feature: int, llm_name: str, row: dict) -> None:
    with con:
        con.execute("INSERT OR REPLACE INTO interp (feature, llm, explanation, detection, fuzzing, prompt, details, "
                    "seconds, updated, detection_auroc, fuzzing_auroc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (feature, llm_name, row["explanation"], row["detection"], row["fuzzing"], row["prompt"],
                     row["details"], row["seconds"], time.time(), row["detection_auroc"], row["fuzzing_auroc"]))


def interp(runs: Sequence[str | Path], cfg: InterpConfig, *, llm: LLM | None = None,
           progress: bool = True) -> dict[Path, dict]:
    """Explain and score ``cfg.features`` features of each run; returns :func:`interp_summary` per run."""
    dirs = run_dirs(runs)
    if not dirs:
        raise InterpError("no runs given")
    cons = {r: open_store(r) for r in dirs}  # every store checked before the LLM loads
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    llm = llm or open_llm(cfg.llm, url=cfg.llm_url, key_env=cfg.llm_key_env, device=cfg.device, batch=cfg.batch)
    out = {}
    try:
        for run, con in cons.items():
            width = int(S.get_meta(con)["width"])
            order = feature_order(con, cfg.seed)[: cfg.features]
            done = {f for (f,) in con.execute("SELECT feature FROM interp WHERE llm = ?", (llm.name,))}
            todo = [f for f in order if f not in done]
            vocab = dict(con.execute("SELECT id, text FROM vocab"))
            contexts = StoredContexts(con, width)
            bar = tqdm(total=len(order), initial=len(order) - len(todo), desc=f"interp {run.name}", unit="feature",
                       disable=not progress)
            t0 = time.perf_counter()
            for i, f in enumerate(todo, start=1):
                _save(con, f, llm.name, score_feature(llm, con, f, width, vocab, cfg, contexts))
                bar.update(1)
                bar.set_postfix_str(f"{60 * i / (time.perf_counter() - t0):.1f} features/min")
            bar.close()
            out[run] = interp_summary(con, llm.name, order)
    finally:
        for con in cons.values():
            con.close()
    return out


def interp_summary(con: sqlite3.Connection, llm_name: str, features: Sequence[int] | None = None) -> dict:
    """Mean detection and fuzzing balanced accuracy (with 95% bootstrap intervals) over the scored features."""
    rows = con.execute("SELECT feature, detection, fuzzing, seconds, detection_auroc, fuzzing_auroc FROM interp "
                       "WHERE llm = ?", (llm_name,)).fetchall()
    if features is not None:
        keep = set(features)
        rows = [r for r in rows if r[0] in keep]
    secs = sum(r[3] for r in rows)
    return {"llm": llm_name, "features": len(rows), "detection": mean_ci([r[1] for r in rows]),
            "fuzzing": mean_ci([r[2] for r in rows]), "detection_auroc": mean_ci([r[4] for r in rows]),
            "fuzzing_auroc": mean_ci([r[5] for r in rows]), "features_per_minute": 60 * len(rows) / secs if secs else None}
