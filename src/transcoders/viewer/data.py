"""What the viewer shows, read from a runs folder: runs, sweeps, feature stores (with LLM explanations), graph
JSON, labels, ratings, and what it computes on request: circuits for a typed prompt, concepts for typed texts.

Plain functions returning JSON-ready dicts; the server (:mod:`.server`) only routes. Every path from a request
goes through :func:`resolve` and never leaves the runs folder. Pages read no model: token texts come from each
store's ``vocab`` table; only the two computations load one (kept for the next request).
"""

from __future__ import annotations

import csv
import json
import math
import random
import secrets
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ..circuits import Replacement
from ..circuits import graph_json as GJ
from ..circuits.api import CircuitConfig, load_replacement, run_circuit
from ..data.activations import special_token_ids
from ..data.packing import text_ids
from ..dictionary import CONFIG_FILE, WEIGHTS_FILE, load_dictionary
from ..dictionary import runs as R
from ..errors import TranscodersError
from ..features import FeaturesConfig, collect
from ..features import store as S
from ..interp import concepts as find_concepts
from ..interp import read_results
from ..models import LoadedModel, capture, load_model
from ..paths import atomic_write_json


class BadRequest(ValueError):
    """A malformed or impossible request: the server answers 400 (or 404 with ``missing``)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def resolve(root: Path, rel: str, *, must_exist: bool = True) -> Path:
    """``root / rel``, refusing anything that would leave ``root`` (``..``, absolute paths, symlinks out)."""
    if not isinstance(rel, str) or "\x00" in rel or rel.startswith(("/", "\\")) or ":" in rel[:3]:
        raise BadRequest(f"bad path {rel!r}: give a path relative to the runs folder")
    path = (root / rel).resolve()
    if path != root and root not in path.parents:
        raise BadRequest(f"path {rel!r} is outside the runs folder", 403)
    if must_exist and not path.exists():
        raise BadRequest(f"{rel!r} does not exist in the runs folder", 404)
    return path


def rel_of(root: Path, path: Path) -> str:
    return path.resolve().relative_to(root).as_posix()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------ runs
def list_runs(root: Path) -> dict:
    """Every run, sweep (with results), set (complete or partial: any ``layer_NN`` runs) and graph under ``root``."""
    runs, sweeps, sets = [], [], []
    for folder in R.walk(root):
        if R.is_run(folder):
            runs.append(run_summary(root, folder))
        if R.has_sweep_results(folder):
            sweeps.append(sweep_summary(root, folder))
        if R.is_set(folder):
            sets.append(rel_of(root, folder))
    return {"root": str(root), "runs": runs, "sweeps": sweeps, "sets": sets, "graphs": list_graphs(root)}


def run_summary(root: Path, folder: Path) -> dict:
    cfg = _read_json(folder / CONFIG_FILE) or {}
    metrics = _read_json(folder / R.METRICS_FILE) or {}
    out = {"path": rel_of(root, folder), "layer": cfg.get("layer"), "kind": cfg.get("kind"),
           "activation": cfg.get("activation"), "width": cfg.get("width"), "k": cfg.get("k"), "model": cfg.get("model"),
           "l0": metrics.get("l0"), "fvu": metrics.get("fvu"), "store": None}
    fid = metrics.get("fidelity") or metrics.get("alone") or {}
    out["ce_recovered"] = fid.get("ce_recovered_mean") if isinstance(fid, dict) else None
    if S.store_path(folder).is_file():
        with _store(folder) as con:
            meta = S.get_meta(con)
        out["store"] = {k: meta.get(k) for k in ("tokens_done", "tokens_wanted", "complete")}
    return out


def run_detail(root: Path, rel: str) -> dict:
    folder = resolve(root, rel)
    if not R.is_run(folder):
        raise BadRequest(f"{rel!r} is not a run folder (no {CONFIG_FILE} and weights)", 404)
    out = run_summary(root, folder)
    out.update(config=_read_json(folder / CONFIG_FILE), metrics=_read_json(folder / R.METRICS_FILE),
               train_config=R.train_settings(folder))
    if out["store"]:
        with _store(folder) as con:
            rows = con.execute("SELECT id, fires, act_max FROM features ORDER BY fires DESC").fetchall()
            tokens = max(1, S.get_meta(con).get("tokens_done") or 1)
        dens = [r[1] / tokens for r in rows]
        out["density_hist"] = _log_hist([d for d in dens if d > 0], lo=-7, hi=0, step=0.25)
        out["dead"] = sum(1 for d in dens if d == 0)
        out["densest"] = [{"id": r[0], "density": r[1] / tokens} for r in rows[:10]]
        with _store(folder) as con:
            if _has_table(con, "interp"):
                out["explained"] = [{"id": f, "llm": llm, "explanation": e, "detection": d, "fuzzing": z} for f, llm, e, d, z in
                                    con.execute("SELECT feature, llm, explanation, detection, fuzzing FROM interp "
                                                "ORDER BY detection DESC LIMIT 30")]
    scores = read_results(folder)
    out["interp"] = {"weights": {k: v for k, v in scores.get("weights", {}).items() if k != "per_feature"},
                     "probing": {t: {"mean": v["mean"], "texts": v["texts"], "classes": v["classes"]}
                                 for t, v in scores.get("probing", {}).items()},
                     "absorption": (scores.get("absorption") or {}).get("mean"),  # None where skipped
                     "llm": scores.get("llm", {})} if scores else None
    return out


def _has_table(con: sqlite3.Connection, name: str) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _explanations(con: sqlite3.Connection, fid: int) -> list[dict]:
    if not _has_table(con, "interp"):
        return []
    return [{"llm": llm, "explanation": e, "detection": d, "fuzzing": z, "updated": u} for llm, e, d, z, u in
            con.execute("SELECT llm, explanation, detection, fuzzing, updated FROM interp WHERE feature = ? "
                        "ORDER BY updated DESC", (fid,))]


def sweep_summary(root: Path, folder: Path) -> dict:
    with open(folder / R.RESULTS_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    plots = [name for name in (R.PLOT_CE, R.PLOT_FVU) if (folder / name).is_file()]
    return {"path": rel_of(root, folder), "rows": rows, "plots": plots}


def _log_hist(values, lo: float, hi: float, step: float) -> dict:
    n = int(round((hi - lo) / step))
    counts = [0] * n
    for v in values:
        i = min(n - 1, max(0, int((math.log10(v) - lo) / step)))
        counts[i] += 1
    return {"lo": lo, "step": step, "counts": counts}


# ------------------------------------------------------------------------------------------------ features
_LOCK = threading.Lock()
_POOL: dict[Path, list[sqlite3.Connection]] = {}  # idle read-only connections per store: warm page caches
_VOCAB: dict[Path, dict[int, str]] = {}


class _store:
    """A connection to a run's store as a context manager; read-only ones come from (and go back to) a pool."""

    def __init__(self, folder: Path, write: bool = False):
        self.path = S.store_path(folder)
        if not self.path.is_file():
            raise BadRequest(f"{folder.name} has no feature store: run `transcoders features {folder}`", 404)
        self.write = write
        with _LOCK:
            idle = _POOL.get(self.path)
            pooled = idle.pop() if idle and not write else None
        self.con: sqlite3.Connection = pooled or S.connect(self.path, readonly=not write)

    def __enter__(self) -> sqlite3.Connection:
        return self.con

    def __exit__(self, *exc):
        if self.write:
            self.con.close()
            return
        with _LOCK:
            idle = _POOL.setdefault(self.path, [])
            if len(idle) < 16:
                idle.append(self.con)
                return
        self.con.close()


def _texts(con, ids) -> dict[int, str]:
    path = Path(con.execute("PRAGMA database_list").fetchone()[2])
    vocab = _VOCAB.get(path)
    if vocab is None:
        vocab = dict(con.execute("SELECT id, text FROM vocab"))
        with _LOCK:
            _VOCAB[path] = vocab
    return {int(i): vocab.get(int(i), f"#{int(i)}") for i in ids}


def _width(con: sqlite3.Connection) -> int:
    return int(S.get_meta(con).get("width") or con.execute("SELECT COUNT(*) FROM features").fetchone()[0])


def _feature_id(con, fid) -> int:
    try:
        fid = int(fid)
    except (TypeError, ValueError):
        raise BadRequest(f"feature {fid!r} is not a number") from None
    width = _width(con)
    if not 0 <= fid < width:
        raise BadRequest(f"feature {fid} does not exist: this run has features 0-{width - 1}", 404)
    return fid


def _examples(con, fid: int, kind: str, width: int, left: int, right: int, show_values: bool = True) -> list[dict]:
    rows = con.execute("SELECT context, pos, act FROM examples WHERE feature = ? AND kind = ? ORDER BY act DESC",
                       (fid, kind)).fetchall()
    out, want = [], set()
    raw = []
    for ctx, pos, act in rows:
        rec = con.execute("SELECT tokens, spans, codes FROM contexts WHERE id = ?", (ctx,)).fetchone()
        if rec is None:
            continue
        toks = np.frombuffer(rec[0], dtype=np.int32)
        acts = S.feature_acts_in_context(rec[2], toks.size, width, fid)
        a, b = max(0, pos - left), min(toks.size, pos + right + 1)
        spans = json.loads(rec[1])
        source = next((s[1] for s in reversed(spans) if s[0] <= pos), spans[0][1] if spans else "")
        raw.append((ctx, pos, act, toks[a:b].tolist(), acts[a:b].tolist(), pos - a, source))
        want.update(toks[a:b].tolist())
    texts = _texts(con, want)
    for ctx, pos, act, ids, acts, at, source in raw:
        ex = {"context": ctx, "pos": pos, "at": at, "source": source, "tokens": [texts[i] for i in ids],
              "acts": [round(v, 4) for v in acts]}
        if show_values:
            ex["act"] = round(act, 4)
        else:  # blind rating: relative highlighting only, no numbers
            m = max(acts) or 1.0
            ex["acts"] = [round(v / m, 2) for v in acts]
        out.append(ex)
    return out


def feature_page(root: Path, rel: str, fid, *, left: int = 24, right: int = 6, bands: int = 5) -> dict:
    folder = resolve(root, rel)
    with _store(folder) as con:
        fid = _feature_id(con, fid)
        meta = S.get_meta(con)
        width = _width(con)
        fires, act_sum, act_max, hist, tl, bl, td, bd = con.execute(
            "SELECT fires, act_sum, act_max, hist, top_logits, bottom_logits, top_deembed, bottom_deembed "
            "FROM features WHERE id = ?", (fid,)).fetchone()
        tables = {name: json.loads(v) if v else [] for name, v in
                  (("top_logits", tl), ("bottom_logits", bl), ("top_deembed", td), ("bottom_deembed", bd))}
        texts = _texts(con, [t for rows in tables.values() for t, _ in rows])
        for name, rows in tables.items():
            tables[name] = [{"token": texts[t], "id": t, "value": v} for t, v in rows]
        counts = np.frombuffer(hist, dtype=np.int64).tolist() if hist else [0] * S.HIST_BINS
        nz = [i for i, c in enumerate(counts) if c]
        a, b = (nz[0], nz[-1] + 1) if nz else (0, 0)
        top = _examples(con, fid, "top", width, left, right)
        sample = sorted(_examples(con, fid, "sample", width, left, right), key=lambda e: -e["act"])
        groups = []
        if sample:
            per = math.ceil(len(sample) / min(bands, len(sample)))
            for i in range(0, len(sample), per):
                g = sample[i:i + per]
                groups.append({"range": [g[-1]["act"], g[0]["act"]], "examples": g})
        label = con.execute("SELECT label, note FROM labels WHERE feature = ?", (fid,)).fetchone()
        explanations = _explanations(con, fid)
        frequent = _frequent_tokens(con, fid)
    tokens = max(1, meta.get("tokens_done") or 1)
    return {"run": rel_of(root, folder), "id": fid, "width": width, "layer": meta.get("layer"),
            "similar": similar_features(folder, fid), "frequent_tokens": frequent,
            "graphs": graphs_with_feature(root, folder, meta.get("layer"), fid),
            "density": fires / tokens, "fires": fires, "tokens": tokens, "mean_act": act_sum / fires if fires else 0.0,
            "max_act": act_max, "hist": {"lo": S.HIST_LO + a * S.HIST_STEP, "step": S.HIST_STEP, "counts": counts[a:b]},
            **tables, "top": top, "quantiles": groups,
            "label": label[0] if label else "", "note": label[1] if label else "", "explanations": explanations,
            "auto_label": explanations[0]["explanation"] if explanations else ""}


def feature_brief(root: Path, rel: str, fid, n: int = 5) -> dict:
    """What a graph's side panel shows for a feature without leaving the graph: its label or explanation, density
    and strongest examples (no similar-feature or graph search, which the full page does)."""
    folder = resolve(root, rel)
    with _store(folder) as con:
        fid = _feature_id(con, fid)
        fires, act_max = con.execute("SELECT fires, act_max FROM features WHERE id = ?", (fid,)).fetchone()
        tokens = max(1, S.get_meta(con).get("tokens_done") or 1)
        top = _examples(con, fid, "top", _width(con), 16, 4)[:n]
        label = con.execute("SELECT label FROM labels WHERE feature = ?", (fid,)).fetchone()
        explanations = _explanations(con, fid)
    return {"run": rel_of(root, folder), "id": fid, "density": fires / tokens, "max_act": act_max, "top": top,
            "label": label[0] if label else "", "auto_label": explanations[0]["explanation"] if explanations else ""}


def _frequent_tokens(con: sqlite3.Connection, fid: int, n: int = 10) -> list[dict]:
    """The tokens a feature fires on most often among its stored examples (top and sampled), with counts."""
    counts: dict[int, int] = {}
    for ctx, pos in con.execute("SELECT context, pos FROM examples WHERE feature = ?", (fid,)):
        row = con.execute("SELECT tokens FROM contexts WHERE id = ?", (ctx,)).fetchone()
        if row is not None:
            t = int(np.frombuffer(row[0], dtype=np.int32)[pos])
            counts[t] = counts.get(t, 0) + 1
    best = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    texts = _texts(con, [t for t, _ in best])
    return [{"token": texts[t], "id": t, "count": c} for t, c in best]


_GRAPH_FEATURES: dict[tuple[Path, int], set[tuple[int, int]]] = {}  # a graph file's (layer, feature) pairs, by mtime


def graphs_with_feature(root: Path, run: Path, layer, fid: int) -> list[dict]:
    """The graphs of the run's set (``SET/graphs``, or the run's own) in which this feature is a node."""
    if layer is None:
        return []
    out = []
    for folder in {run.parent, run}:
        for path in R.graph_files(folder):
            key = (path, path.stat().st_mtime_ns)
            if key not in _GRAPH_FEATURES:
                try:
                    doc = json.loads(path.read_text())
                    _GRAPH_FEATURES[key] = {(f.layer, f.feature) for f in GJ.feature_nodes(doc)}
                except (OSError, ValueError, KeyError):
                    _GRAPH_FEATURES[key] = set()
            if (int(layer), fid) in _GRAPH_FEATURES[key] and R.run_for_layer(folder, int(layer)) == run:
                out.append({"path": rel_of(root, path), "name": path.stem})
    return sorted(out, key=lambda g: g["name"])


_DIRECTIONS: dict[tuple[Path, int], dict[str, np.ndarray]] = {}  # a run's unit encoder/decoder rows, by weights mtime


def similar_features(folder: Path, fid: int, n: int = 8) -> dict[str, list[dict]]:
    """The ``n`` features whose decoder directions (what they write) and encoder directions (what they read) are
    closest to ``fid``'s, by cosine; empty where the run folder holds no weights."""
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        return {"decoder": [], "encoder": []}
    key = (folder, weights.stat().st_mtime_ns)
    if key not in _DIRECTIONS:
        d = load_dictionary(folder)
        _DIRECTIONS.clear()  # one run at a time: a 30-layer set would otherwise pile up
        _DIRECTIONS[key] = {name: torch.nn.functional.normalize(w.detach().float(), dim=1).numpy()
                            for name, w in (("decoder", d.W_dec), ("encoder", d.W_enc))}
    out = {}
    for name, rows in _DIRECTIONS[key].items():
        if not 0 <= fid < rows.shape[0]:
            return {"decoder": [], "encoder": []}
        cos = rows @ rows[fid]
        cos[fid] = -np.inf
        best = np.argsort(-cos)[:n]
        out[name] = [{"id": int(i), "cos": round(float(cos[i]), 4)} for i in best]
    return out


def set_label(root: Path, body: dict) -> dict:
    folder = resolve(root, _field(body, "run", str))
    label, note = _field(body, "label", str, ""), _field(body, "note", str, "")
    if len(label) > 200 or len(note) > 5000:
        raise BadRequest("label or note too long (200 / 5000 characters at most)")
    with _store(folder, write=True) as con:
        fid = _feature_id(con, body.get("id"))
        with con:
            con.execute("INSERT OR REPLACE INTO labels (feature, label, note, updated) VALUES (?, ?, ?, ?)",
                        (fid, label.strip(), note.strip(), time.time()))
    return {"ok": True, "id": fid, "label": label.strip(), "note": note.strip()}


def random_feature(root: Path, rel: str) -> dict:
    """A feature drawn at random among those that fired in the run's store (any feature when none did)."""
    folder = resolve(root, rel)
    with _store(folder) as con:
        row = con.execute("SELECT id FROM features WHERE fires > 0 ORDER BY random() LIMIT 1").fetchone()
        fid = int(row[0]) if row is not None else random.randrange(_width(con))
    return {"run": rel, "id": fid, "live": row is not None}


# how much each kind of match counts towards a search result's rank (words written about a feature, by a person
# or an LLM, outrank every token match together: 3 + 2 + 2 + 1)
SEARCH_WEIGHTS = {"label": 10.0, "explained": 8.0, "fires most on it": 3.0, "promotes it": 2.0, "excited by it": 2.0,
                  "fires on it": 1.0}


def search(root: Path, rel: str, q: str, limit: int = 50) -> dict:
    """Features whose label or LLM explanation contains ``q``, or that fire on, promote or are excited by the token
    ``q``, ranked by relevance (``SEARCH_WEIGHTS``, summed: a label match first; among token matches, the share of
    a feature's top examples whose activating token it is); the first ``limit``, with the total."""
    folder = resolve(root, rel)
    q = (q or "").strip()
    if not q:
        raise BadRequest("empty search: give a token or a word from a label")
    hits: dict[int, dict[str, float]] = {}  # feature -> {reason: score}

    def hit(fid: int, why: str, score: float) -> None:
        reasons = hits.setdefault(int(fid), {})
        reasons[why] = max(reasons.get(why, 0.0), score)

    with _store(folder) as con:
        width = _width(con)
        for fid, label in con.execute("SELECT feature, label FROM labels WHERE label LIKE ? OR note LIKE ?",
                                      (f"%{q}%", f"%{q}%")):
            hit(fid, f"label: {label}", SEARCH_WEIGHTS["label"])
        if _has_table(con, "interp"):
            for fid, expl in con.execute("SELECT feature, explanation FROM interp WHERE explanation LIKE ?", (f"%{q}%",)):
                hit(fid, f"explained: {expl}", SEARCH_WEIGHTS["explained"])
        ids = {i for (i,) in con.execute("SELECT id FROM vocab WHERE lower(trim(text)) = lower(?)", (q,))}
        if ids:
            blobs: dict[int, np.ndarray] = {}
            on: dict[int, int] = {}  # top examples whose activating token is q
            n_top: dict[int, int] = {}
            strongest: dict[int, tuple[float, bool]] = {}
            for fid, ctx, pos, act in con.execute("SELECT feature, context, pos, act FROM examples WHERE kind = 'top'"):
                if ctx not in blobs:
                    blobs[ctx] = np.frombuffer(con.execute("SELECT tokens FROM contexts WHERE id = ?", (ctx,)).fetchone()[0],
                                               dtype=np.int32)
                is_q = int(blobs[ctx][pos]) in ids
                on[fid] = on.get(fid, 0) + is_q
                n_top[fid] = n_top.get(fid, 0) + 1
                if act > strongest.get(fid, (-1.0, False))[0]:
                    strongest[fid] = (act, is_q)
            for fid, n in on.items():
                if strongest[fid][1]:
                    hit(fid, "fires most on it", SEARCH_WEIGHTS["fires most on it"])
                if n:
                    hit(fid, f"fires on it in {n} of its {n_top[fid]} top examples",
                        SEARCH_WEIGHTS["fires on it"] * n / n_top[fid])
            for fid, tl, td in con.execute("SELECT id, top_logits, top_deembed FROM features"):
                if tl and any(t in ids for t, _ in json.loads(tl)[:5]):
                    hit(fid, "promotes it", SEARCH_WEIGHTS["promotes it"])
                if td and any(t in ids for t, _ in json.loads(td)[:5]):
                    hit(fid, "excited by it", SEARCH_WEIGHTS["excited by it"])
    ranked = sorted(hits.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    found = [{"id": f, "score": round(sum(w.values()), 3), "why": sorted(w, key=lambda k: -w[k])} for f, w in ranked]
    return {"run": rel, "q": q, "width": width, "total": len(found), "results": found[:limit]}


def _field(body, name, typ, default=None):
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    v = body.get(name, default)
    if v is None or not isinstance(v, typ):
        raise BadRequest(f"field {name!r} is missing or not a {typ.__name__}")
    return v


# ------------------------------------------------------------------------------------------------ blind rating
def _ratings_dir(root: Path) -> Path:
    d = root / ".viewer" / "ratings"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _save_session(root: Path, sid: str, doc: dict) -> None:
    atomic_write_json(_ratings_dir(root) / f"{sid}.json", doc)


def _load_session(root: Path, sid: str) -> dict:
    if not isinstance(sid, str) or not sid.isalnum():
        raise BadRequest("bad rating session id")
    doc = _read_json(_ratings_dir(root) / f"{sid}.json")
    if doc is None:
        raise BadRequest(f"rating session {sid} does not exist", 404)
    return doc


def start_rating(root: Path, body: dict) -> dict:
    runs = _field(body, "runs", list)
    n = _field(body, "n", int, 10)
    if len(runs) != 2 or not all(isinstance(r, str) for r in runs) or runs[0] == runs[1]:
        raise BadRequest("a blind rating compares exactly two different runs")
    if not 1 <= n <= 200:
        raise BadRequest("n (features per run) must be 1-200")
    rng = random.Random(secrets.randbits(64))
    items = []
    for i, rel in enumerate(runs):
        with _store(resolve(root, rel)) as con:
            live = [f for (f,) in con.execute("SELECT id FROM features WHERE fires > 0")]
        if len(live) < n:
            raise BadRequest(f"{rel} has {len(live)} live features; ask for at most that many")
        items += [{"run": i, "feature": f} for f in rng.sample(live, n)]
    rng.shuffle(items)
    sid = secrets.token_hex(8)
    _save_session(root, sid, {"runs": runs, "items": items, "answers": {}, "started": time.time()})
    return {"session": sid, "total": len(items)}


def rating_item(root: Path, sid: str) -> dict:
    doc = _load_session(root, sid)
    i = len(doc["answers"])
    if i >= len(doc["items"]):
        return {"session": sid, "done": True, "total": len(doc["items"]), "tally": rating_tally(doc)}
    it = doc["items"][i]
    folder = resolve(root, doc["runs"][it["run"]])
    with _store(folder) as con:
        width = _width(con)
        examples = _examples(con, it["feature"], "top", width, 16, 4, show_values=False)[:8]
        examples += _spread(_examples(con, it["feature"], "sample", width, 16, 4, show_values=False),
                            4, {(e["context"], e["pos"]) for e in examples})
    return {"session": sid, "done": False, "index": i, "total": len(doc["items"]), "examples": examples}


def _spread(examples: list[dict], n: int, shown: set[tuple[int, int]]) -> list[dict]:
    """Up to ``n`` of ``examples`` (strongest first) evenly spread over their range, leaving out any already
    ``shown`` (a sampled example can be one of the top ones): the lower quantiles, not the sample's strongest."""
    fresh = [e for e in examples if (e["context"], e["pos"]) not in shown]
    if len(fresh) <= n:
        return fresh
    return [fresh[round(i * (len(fresh) - 1) / (n - 1))] for i in range(n)] if n > 1 else fresh[:1]


def rating_answer(root: Path, sid: str, body: dict) -> dict:
    doc = _load_session(root, sid)
    index = _field(body, "index", int)
    verdict = _field(body, "interpretable", str)
    single = _field(body, "single_token", bool, False)
    if verdict not in ("yes", "maybe", "no"):
        raise BadRequest("interpretable must be yes, maybe or no")
    if index != len(doc["answers"]) or index >= len(doc["items"]):
        raise BadRequest(f"answer item {len(doc['answers'])} next (got {index})", 409)
    doc["answers"][str(index)] = {"interpretable": verdict, "single_token": single}
    _save_session(root, sid, doc)
    return rating_item(root, sid)


def list_ratings(root: Path) -> list[dict]:
    """Every rating session in this runs folder, newest first: to continue one, or to see its results again.
    A session's tally is shown only once it is finished (before that the run behind each item stays hidden)."""
    out = []
    for path in _ratings_dir(root).glob("*.json"):
        doc = _read_json(path)
        if not isinstance(doc, dict) or not {"runs", "items", "answers"} <= set(doc):
            continue  # a damaged or foreign file: leave it, list the rest
        done = len(doc["answers"]) >= len(doc["items"])
        out.append({"session": path.stem, "runs": doc["runs"], "rated": len(doc["answers"]), "total": len(doc["items"]),
                    "started": doc.get("started", 0), "done": done, **({"tally": rating_tally(doc)} if done else {})})
    return sorted(out, key=lambda r: -r["started"])


def rating_tally(doc: dict) -> list[dict]:
    out = []
    for r, rel in enumerate(doc["runs"]):
        ans = [doc["answers"][str(i)] for i, it in enumerate(doc["items"]) if it["run"] == r and str(i) in doc["answers"]]
        counts = {v: sum(a["interpretable"] == v for a in ans) for v in ("yes", "maybe", "no")}
        shares = {"yes_share": wilson(counts["yes"], len(ans)),
                  "yes_or_maybe_share": wilson(counts["yes"] + counts["maybe"], len(ans))}
        out.append({"run": rel, "rated": len(ans), **counts, **shares,
                    "single_token": sum(a["single_token"] for a in ans),
                    "features": [it["feature"] for it in doc["items"] if it["run"] == r]})
    return out


# ------------------------------------------------------------------------------------------------ graphs
def list_graphs(root: Path) -> list[dict]:
    """Every graph with its set, prompt, mode, targets, settings and date (newest first)."""
    out = []
    for folder in R.walk(root, max_depth=3):
        for p in R.graph_files(folder):
            try:
                meta = json.loads(p.read_text()).get("metadata", {})
            except (OSError, ValueError):
                meta = {}
            info = meta.get("info", {}) if isinstance(meta, dict) else {}
            settings = {k: info[k] for k in ("depth", "branches", "max_feature_nodes", "bos", "logits") if k in info}
            if meta.get("node_threshold") is not None:
                settings["node_threshold"] = meta["node_threshold"]
            out.append({"path": rel_of(root, p), "set": rel_of(root, folder), "name": p.stem,
                        "prompt": meta.get("prompt", ""), "mode": info.get("mode", ""),
                        "targets": info.get("targets", []), "settings": settings,
                        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(p.stat().st_mtime)),
                        "mtime": p.stat().st_mtime})
    return sorted(out, key=lambda g: -g["mtime"])


def _graph_file(root: Path, rel: str) -> tuple[Path, dict]:
    """A graph JSON file of the runs folder and its document; a 4xx for anything else."""
    path = resolve(root, rel)
    if path.suffix != ".json" or not path.is_file():
        raise BadRequest(f"{rel!r} is not a graph JSON file", 404)
    try:
        doc = GJ.read_json(path)
    except TranscodersError as e:
        raise BadRequest(str(e)) from None
    return path, doc


def graph(root: Path, rel: str) -> dict:
    """A graph JSON, each feature node with the run holding its transcoder (``run``, for its feature page) and its
    index in that run (``feature_index``; ``feature`` is circuit-tracer's pairing of layer and index)."""
    path, doc = _graph_file(root, rel)
    set_dir = R.set_of_graph(path)
    runs: dict[int, str | None] = {}
    for node in doc["nodes"]:
        f = GJ.feature_of(node)
        if f is not None:
            if f.layer not in runs:
                run = R.run_for_layer(set_dir, f.layer)
                runs[f.layer] = None if run is None else rel_of(root, run)
            node["run"], node["feature_index"] = runs[f.layer], f.feature
    _label_nodes(root, doc["nodes"])
    used = sorted({r for r in runs.values() if r is not None})
    missing = [r for r in used if not S.store_path(resolve(root, r)).is_file()]
    job = _BUILDS.get(set_dir.resolve())
    if missing or job is not None:  # what the page needs to offer (or follow) building dashboards' data
        doc["stores"] = {"set": rel_of(root, set_dir), "runs": len(used), "missing": missing,
                         "build": build_status(root, rel_of(root, set_dir))}
    return doc


MAX_SUPERNODE_NAME = 80


def save_graph_view(root: Path, body: dict) -> dict:
    """Save pinned nodes and named supernodes with a graph, in its ``qParams`` (where circuit-tracer and Neuronpedia
    keep them: ``pinnedIds``, ``supernodes`` as ``[[name, node_id, ...], ...]``); the file is replaced atomically."""
    path, doc = _graph_file(root, _field(body, "path", str))
    ids = {str(n["node_id"]) for n in doc["nodes"]}
    pinned = _field(body, "pinnedIds", list, [])
    groups = _field(body, "supernodes", list, [])
    if any(not isinstance(i, str) or i not in ids for i in pinned):
        raise BadRequest("pinnedIds must be node ids of this graph")
    for g in groups:
        if (not isinstance(g, list) or len(g) < 3 or not isinstance(g[0], str) or not g[0].strip()
                or len(g[0]) > MAX_SUPERNODE_NAME):
            raise BadRequest(f"a supernode is [name, node_id, node_id, ...]: a name of 1-{MAX_SUPERNODE_NAME} "
                             "characters and at least two nodes")
        if any(not isinstance(i, str) or i not in ids for i in g[1:]):
            raise BadRequest(f"supernode {g[0]!r} names a node this graph does not have")
    members = [i for g in groups for i in g[1:]]
    if len(members) != len(set(members)):
        raise BadRequest("a node can belong to one supernode only")
    doc.setdefault("qParams", {}).update({"pinnedIds": pinned, "supernodes": [[g[0].strip(), *g[1:]] for g in groups]})
    GJ.write_json(doc, path)
    return {"path": rel_of(root, path), "qParams": doc["qParams"]}


def _label_nodes(root: Path, nodes: list[dict]) -> None:
    """Each feature node's ``label``: a person's label from its run's store, else the newest LLM explanation (with
    ``label_auto``); nodes of runs without a store get none."""
    by_run: dict[str, list[dict]] = {}
    for node in nodes:
        if node.get("run"):
            by_run.setdefault(node["run"], []).append(node)
    for run, group in by_run.items():
        folder = resolve(root, run)
        if not S.store_path(folder).is_file():
            continue
        with _store(folder) as con:
            people = dict(con.execute("SELECT feature, label FROM labels WHERE label != ''").fetchall())
            auto: dict[int, str] = {}
            if _has_table(con, "interp"):
                for fid, expl in con.execute("SELECT feature, explanation FROM interp ORDER BY updated"):
                    auto[fid] = expl  # the newest wins
        for node in group:
            fid = node["feature_index"]
            if fid in people:
                node["label"] = people[fid]
            elif fid in auto:
                node["label"], node["label_auto"] = auto[fid], True


_COMPUTE = threading.Lock()  # one circuit at a time: each holds a model and a set in memory
_REPLACEMENTS: dict[Path, Replacement] = {}


def compute_graph(root: Path, body: dict) -> dict:
    """Run `transcoders circuit` for a prompt typed in the viewer; the graph JSON goes to SET/graphs/."""
    folder = resolve(root, _field(body, "set", str))
    prompt = _field(body, "prompt", str)
    target, mode = _field(body, "target", str, ""), _field(body, "mode", str, "paths")
    if not prompt.strip() or len(prompt) > 4000:
        raise BadRequest("give a prompt of 1-4000 characters")
    if mode not in ("paths", "graph"):
        raise BadRequest("mode must be paths or graph")
    # 1,024 rows (the CLI computes 4,096): quicker for a page; the setting is in the graph's name and metadata
    cfg = CircuitConfig(set=str(folder), prompt=prompt, target=target.strip(), mode=mode, max_feature_nodes=1024)
    try:
        with _COMPUTE:
            rep = _REPLACEMENTS.get(folder)
            if rep is None:
                rep = _REPLACEMENTS[folder] = load_replacement(str(folder))
            report, path, _ = run_circuit(cfg, rep=rep)
    except TranscodersError as e:
        raise BadRequest(str(e)) from None
    return {"path": rel_of(root, path), "report": report}


# dashboards' data built from the viewer: one job per set, in a thread, one heavy job at a time (with circuits)
BUILD_TOKENS = 65536
_BUILDS: dict[Path, dict] = {}


def _set_runs(folder: Path) -> list[Path]:
    try:
        return R.run_dirs([folder])
    except TranscodersError as e:
        raise BadRequest(str(e)) from None


def build_features(root: Path, body: dict) -> dict:
    """Start `transcoders features SET` for a whole set (one pass for every layer) on the held-out split of the
    corpus it was trained on; :func:`build_status` says how far it got. A set already being built is left be."""
    folder = resolve(root, _field(body, "set", str))
    tokens = _field(body, "tokens", int, BUILD_TOKENS)
    if not 256 <= tokens <= 10_000_000:
        raise BadRequest("tokens must be between 256 and 10,000,000")
    runs = _set_runs(folder)
    trained = R.train_settings(runs[0]) or {}
    cfg = FeaturesConfig(tokens=tokens, corpus=trained.get("corpus", "default"),
                         text_column=trained.get("text_column", "text"), commit_every=5.0)
    with _LOCK:
        job = _BUILDS.get(folder)
        if job is None or job["done"]:
            job = _BUILDS[folder] = {"tokens": tokens, "done": False, "error": "", "started": time.time()}
            threading.Thread(target=_build, args=(runs, cfg, job), daemon=True).start()
    return build_status(root, rel_of(root, folder))


def _build(runs: list[Path], cfg: FeaturesConfig, job: dict) -> None:
    try:
        with _COMPUTE:
            collect(runs, cfg, progress=False)
    except TranscodersError as e:
        job["error"] = str(e)
    except Exception as e:  # a bug: say it on the page, keep serving
        job["error"] = f"internal error: {type(e).__name__}: {e}"
    finally:
        job["done"] = True


def build_status(root: Path, rel: str) -> dict:
    """How far a set's dashboards' data is: the fewest tokens any of its runs' stores has read, and the job's
    state (``running``, ``error``) when the viewer started one."""
    folder = resolve(root, rel)
    runs = _set_runs(folder)
    done = []
    for r in runs:
        path = S.store_path(r)
        if not path.is_file():
            done.append(0)
            continue
        try:
            with _store(r) as con:
                done.append(int(S.get_meta(con).get("tokens_done") or 0))
        except sqlite3.Error:  # being created by the build this moment
            done.append(0)
    job = _BUILDS.get(folder)
    return {"set": rel_of(root, folder), "runs": len(runs), "tokens_done": min(done, default=0),
            "tokens": job["tokens"] if job else BUILD_TOKENS, "running": bool(job and not job["done"]),
            "error": job["error"] if job else ""}


_MODELS: dict[tuple[str, int], LoadedModel] = {}
MAX_CONCEPT_TEXTS, MAX_CONCEPT_CHARS = 500, 4000


def _texts_field(body: dict, name: str) -> list[str]:
    v = body.get(name)
    texts = [t.strip() for t in (v.splitlines() if isinstance(v, str) else v if isinstance(v, list) else [])
             if isinstance(t, str) and t.strip()]
    if not texts:
        raise BadRequest(f"give some {name} texts, one per line")
    if len(texts) > MAX_CONCEPT_TEXTS or any(len(t) > MAX_CONCEPT_CHARS for t in texts):
        raise BadRequest(f"at most {MAX_CONCEPT_TEXTS} {name} texts of {MAX_CONCEPT_CHARS} characters each")
    return texts


def _run_folder(root: Path, body: dict) -> Path:
    """The run folder a request names (``run``), or a 404."""
    folder = resolve(root, _field(body, "run", str))
    if not R.is_run(folder):
        raise BadRequest(f"{rel_of(root, folder)!r} is not a run folder", 404)
    return folder


def _run_model(folder: Path) -> LoadedModel:
    """The run's model, built up to its layer, loaded once per (model, depth) and kept (call under ``_COMPUTE``)."""
    cfg = _read_json(folder / CONFIG_FILE) or {}
    key = (str(cfg.get("model", "")), int(cfg.get("layer", 0)) + 1)
    if key not in _MODELS:
        _MODELS[key] = load_model(key[0], n_layers=key[1])
    return _MODELS[key]


def compute_concepts(root: Path, body: dict) -> dict:
    """`transcoders concepts` for texts typed in the viewer: the run's features ranked by AUROC."""
    folder = _run_folder(root, body)
    pos, neg = _texts_field(body, "positive"), _texts_field(body, "negative")
    try:
        with _COMPUTE:
            lm = _run_model(folder)
            (rows,) = find_concepts([folder], pos, neg, top=int(body.get("top") or 20), lm=lm, progress=False).values()
    except TranscodersError as e:
        raise BadRequest(str(e)) from None
    return {"run": rel_of(root, folder), "positive": len(pos), "negative": len(neg), "features": [c.to_dict() for c in rows]}


def activate_text(root: Path, body: dict) -> dict:
    """A feature's activation on each token of a text typed on its page (the model reads the text once, up to the
    feature's layer). Special-token positions read 0, as the store has them (training never sees them)."""
    folder = _run_folder(root, body)
    text = _field(body, "text", str)
    if not text.strip() or len(text) > MAX_CONCEPT_CHARS:
        raise BadRequest(f"give a text of 1-{MAX_CONCEPT_CHARS} characters")
    fid = _field(body, "id", int)
    try:
        with _COMPUTE:
            lm = _run_model(folder)
            tok = lm.tokenizer
            if tok is None:
                raise BadRequest("this run's model has no tokenizer, so it cannot read typed text")
            d = load_dictionary(folder)
            if not 0 <= fid < d.width:
                raise BadRequest(f"no feature {fid}: this run has features 0-{d.width - 1}")
            ids = text_ids(tok, text, max_len=1024)
            L = d.cfg.layer
            with torch.inference_mode():
                rec = capture(lm, torch.tensor([ids]), [f"blocks.{L}.mlp.in", f"blocks.{L}.mlp.out"])
                x, _ = d.cfg.pick(rec[f"blocks.{L}.mlp.in"], rec[f"blocks.{L}.mlp.out"])
                z = d.encode(x.to(d.W_enc.dtype))[0, :, fid].float()
    except TranscodersError as e:
        raise BadRequest(str(e)) from None
    special = torch.tensor([t in special_token_ids(tok) for t in ids])
    z = torch.where(special, torch.zeros_like(z), z)
    return {"run": rel_of(root, folder), "id": fid, "tokens": [tok.decode([t]) for t in ids],
            "acts": [round(float(v), 4) for v in z], "max": float(z.max()), "at": int(z.argmax())}


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """``[share, low, high]``: k of n with its Wilson 95% interval (sensible at small n and at 0 or n)."""
    if n == 0:
        return [None, None, None]  # type: ignore[list-item]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [p, max(0.0, centre - half), min(1.0, centre + half)]
