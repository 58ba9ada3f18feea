"""`transcoders interp`'s LLM scores on a tiny store, the tiny random model as explainer and scorer: what is
stored, the sample's order, resuming after a kill, and the one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from transcoders.errors import InterpError
from transcoders.features import store as S
from transcoders.interp import InterpConfig, feature_order, interp
from transcoders.interp.examples import StoredContexts, feature_examples

CFG = dict(scores="llm", features=6, top=4, quantiles=2, test=3, left=6, right=2, batch=4)


def _rows(run):
    con = S.connect(S.store_path(run), readonly=True)
    try:
        return con.execute("SELECT feature, llm, explanation, detection, fuzzing, prompt, details, detection_auroc "
                           "FROM interp ORDER BY feature").fetchall()
    finally:
        con.close()


@pytest.fixture()
def run_copy(store_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(store_run, dst)
    return dst


def test_sample_is_stratified_seeded_and_saved(run_copy):
    con = S.connect(S.store_path(run_copy))
    fires = dict(con.execute("SELECT id, fires FROM features"))
    order = feature_order(con, seed=3)
    assert len(set(order)) == len(order) and all(fires[f] > 0 for f in order)
    # the first ten come one from each density decile (deciles as equal slices of the features ranked by density)
    ranked = sorted(order, key=lambda f: (fires[f], f))
    n = len(ranked)
    decile = {f: s for s in range(10) for f in ranked[n * s // 10: n * (s + 1) // 10]}
    assert {decile[f] for f in order[:10]} == set(range(10))
    assert feature_order(con, seed=3) == order  # read back from the store
    assert feature_order(con, seed=4) != order
    con.close()


def test_examples_are_held_out_and_silent_windows_silent(run_copy):
    con = S.connect(S.store_path(run_copy))
    width = int(S.get_meta(con)["width"])
    for f in feature_order(con, 0)[:8]:
        ex = feature_examples(con, f, width, n_top=4, n_quantile=2, n_test=3, left=6, right=2)
        seen = {w.context for w in ex.explain}
        assert ex.explain and ex.test and not seen & {w.context for w in ex.test + ex.silent}
        assert all(w.act > 0 for w in ex.explain + ex.test)
        ctxs = StoredContexts(con, width)
        for w in ex.silent:  # silent against the stored codes, token by token
            toks, codes = ctxs.get(w.context)
            acts = S.feature_acts_in_context(codes, toks.size, width, f)
            assert np.all(acts[w.start:w.start + len(w.tokens)] == 0)
            assert toks[w.start:w.start + len(w.tokens)].tolist() == w.tokens
    con.close()


def test_scores_are_stored_and_consistent(run_copy, tiny_llm):
    (summary,) = interp([run_copy], InterpConfig(**CFG), llm=tiny_llm, progress=False).values()
    rows = _rows(run_copy)
    assert len(rows) == 6 and summary["features"] == 6 and summary["llm"] == "local:tiny"
    for _feature, llm, explanation, det, fuzz, prompt, details, det_auroc in rows:
        d = json.loads(details)
        assert llm == "local:tiny" and explanation and "<<" in prompt
        truth = [t for t, _, _ in d["detection"]]
        assert truth.count(True) >= 1 and truth.count(False) >= 1
        # the stored score is the balanced accuracy of the stored answers
        tp = sum(t and p > 0.5 for t, p, _ in d["detection"])
        tn = sum((not t) and p <= 0.5 for t, p, _ in d["detection"])
        assert det == pytest.approx(0.5 * (tp / truth.count(True) + tn / truth.count(False)))
        pairs = [(a > b) + 0.5 * (a == b) for ta, a, _ in d["detection"] if ta for tb, b, _ in d["detection"] if not tb]
        assert det_auroc == pytest.approx(sum(pairs) / len(pairs))
        assert all("<<" not in s for _, _, s in d["detection"])
        if fuzz is not None:
            assert all("<<" in s for _, _, s in d["fuzzing"])
    assert summary["detection"][1] <= summary["detection"][0] <= summary["detection"][2]


class _Dies:
    """Passes calls through to an LLM, then raises on the n-th explanation, as a kill would stop the run."""

    def __init__(self, llm, n):
        self.llm, self.n, self.name = llm, n, llm.name

    def generate(self, *a, **k):
        self.n -= 1
        if self.n < 0:
            raise KeyboardInterrupt
        return self.llm.generate(*a, **k)

    def yes_probabilities(self, *a, **k):
        return self.llm.yes_probabilities(*a, **k)


def test_resume_after_a_kill_gives_the_same_store(store_run, tmp_path, tiny_llm):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    shutil.copytree(store_run, whole)
    shutil.copytree(store_run, killed)
    interp([whole], InterpConfig(**CFG), llm=tiny_llm, progress=False)
    with pytest.raises(KeyboardInterrupt):
        interp([killed], InterpConfig(**CFG), llm=_Dies(tiny_llm, 2), progress=False)
    assert len(_rows(killed)) == 2  # what was scored before the kill is kept
    interp([killed], InterpConfig(**CFG), llm=tiny_llm, progress=False)
    assert _rows(killed) == _rows(whole)
    # more features later: the same sample, extended
    interp([killed], InterpConfig(**{**CFG, "features": 8}), llm=tiny_llm, progress=False)
    assert {r[0] for r in _rows(whole)} < {r[0] for r in _rows(killed)} and len(_rows(killed)) == 8


def test_missing_store_is_one_line(tmp_path, store_run):
    bare = tmp_path / "bare"
    shutil.copytree(store_run, bare)
    S.store_path(bare).unlink()
    with pytest.raises(InterpError, match=r"has no feature store: run `transcoders features .*bare` first"):
        interp([bare], InterpConfig(**CFG), llm=object(), progress=False)  # type: ignore[arg-type]
