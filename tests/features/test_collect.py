"""The feature store against a brute-force recomputation on a tiny model, and resuming an interrupted pass."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from transcoders.data.activations import special_token_ids
from transcoders.data.packing import load_split
from transcoders.dictionary import directions as W
from transcoders.dictionary import load_dictionary
from transcoders.features import FeaturesConfig, collect, connect, store_path
from transcoders.features import store as S
from transcoders.features.collection import sample_priority
from transcoders.models import load_model
from transcoders.models.hooks import capture
from transcoders.training import TrainConfig, train

CTX, N_CTX = 32, 24


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("feat") / "set"
    cfg = TrainConfig(model=tiny_model_dir, corpus=tiny_corpus, layers="0-1", out=str(out), width=64, k=4,
                      tokens=4096, batch_size=256, ctx_len=CTX, chunk_tokens=4096, forward_batch=16)
    runs = train(cfg, progress=False)
    return runs, load_model(tiny_model_dir)


def brute_force(run, lm, corpus):
    """Every (context, token, feature) activation, dense: ``[N_CTX, CTX, width]``, specials zeroed."""
    d = load_dictionary(run)
    ids = load_split(corpus, lm.tokenizer, "eval", ctx_len=CTX, max_tokens=N_CTX * CTX).tokens[:N_CTX]
    with torch.no_grad():
        x = capture(lm, ids, [d.cfg.hook_in])[d.cfg.hook_in]
        z = d.encode(x.reshape(-1, d.cfg.d_in)).reshape(N_CTX, CTX, -1)
    special = torch.tensor(sorted(special_token_ids(lm.tokenizer)))
    z[torch.isin(ids, special)] = 0
    return d, ids, z


def test_store_matches_a_brute_force_pass(trained, tiny_corpus):
    runs, lm = trained
    cfg = FeaturesConfig(tokens=N_CTX * CTX, corpus=tiny_corpus, batch=5, top=3, samples=4, commit_every=0)
    metas = collect(runs, cfg, lm=lm, progress=False)
    assert all(m["complete"] and m["tokens_done"] == N_CTX * CTX for m in metas.values())
    for run in runs:
        d, ids, z = brute_force(run, lm, tiny_corpus)
        con = connect(store_path(run), readonly=True)
        rows = {r[0]: r[1:] for r in con.execute("SELECT id, fires, act_sum, act_max, hist FROM features")}
        assert len(rows) == d.width
        fires = (z > 0).sum((0, 1))
        for f in range(d.width):
            n, s, m, hist = rows[f]
            assert n == int(fires[f])
            assert s == pytest.approx(float(z[..., f].sum()), rel=1e-4, abs=1e-5)
            assert m == pytest.approx(float(z[..., f].max()), rel=1e-5)
            assert int(np.frombuffer(hist, dtype=np.int64).sum()) == n
        ctx_max = z.max(1).values  # [N_CTX, width]
        for f in range(d.width):
            top = con.execute("SELECT context, pos, act FROM examples WHERE feature = ? AND kind = 'top' ORDER BY act DESC",
                              (f,)).fetchall()
            want = ctx_max[:, f].sort(descending=True).values
            want = want[want > 0][:3]
            assert [a for _, _, a in top] == pytest.approx(want.tolist(), rel=1e-5)
            for c, p, a in top:  # the stored position is where the feature peaks in that context
                assert float(z[c, p, f]) == pytest.approx(a, rel=1e-5)
                (codes, toks) = con.execute("SELECT codes, tokens FROM contexts WHERE id = ?", (c,)).fetchone()
                assert np.frombuffer(toks, dtype=np.int32).tolist() == ids[c].tolist()
                got = S.feature_acts_in_context(codes, CTX, d.width, f)
                assert np.allclose(got, z[c, :, f].numpy(), rtol=1e-2, atol=1e-3)  # float16 storage
            # the sample: the firing contexts with the smallest hash priorities
            firing = torch.nonzero(ctx_max[:, f] > 0).flatten()
            prio = sample_priority(firing, torch.full_like(firing, f))
            want_ctx = sorted(firing[prio.argsort()[:4]].tolist())
            rows = con.execute("SELECT context FROM examples WHERE feature = ? AND kind = 'sample'", (f,))
            got_ctx = sorted(c for (c,) in rows)
            assert got_ctx == want_ctx
        # weights-only tables: the top logit effect really is the largest entry
        effects = W.logit_effects(lm.adapter, W.decoder_directions(lm.adapter, d))
        (tl,) = con.execute("SELECT top_logits FROM features WHERE id = 5").fetchone()
        assert json.loads(tl)[0][0] == int(effects[5].argmax())
        assert dict(con.execute("SELECT id, text FROM vocab WHERE id < 50")) == {
            i: lm.tokenizer.decode([i]) for i in range(50)}
        referenced = {c for (c,) in con.execute("SELECT DISTINCT context FROM examples")}
        assert {c for (c,) in con.execute("SELECT id FROM contexts")} == referenced  # nothing unreferenced kept
        con.close()


def test_an_interrupted_pass_resumes_to_the_same_store(trained, tiny_corpus, tmp_path, monkeypatch):
    runs, lm = trained
    run = runs[0]
    base = FeaturesConfig(tokens=N_CTX * CTX, corpus=tiny_corpus, batch=4, top=3, samples=4, commit_every=0, fresh=True)
    collect([run], base, lm=lm, progress=False)
    con = connect(store_path(run), readonly=True)
    want = (con.execute("SELECT id, fires, act_sum, act_max, hist FROM features ORDER BY id").fetchall(),
            con.execute("SELECT feature, kind, context, pos FROM examples ORDER BY feature, kind, context").fetchall())
    con.close()

    import importlib

    C = importlib.import_module("transcoders.features.collection")  # the module (the package exports the function)

    real_write, calls = C._write, []

    def crash_after_two(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        real_write(*a, **k)

    monkeypatch.setattr(C, "_write", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        collect([run], base, lm=lm, progress=False)
    monkeypatch.setattr(C, "_write", real_write)
    con = connect(store_path(run), readonly=True)
    meta = S.get_meta(con)
    assert meta["contexts_done"] == 8 and not meta["complete"]  # two committed chunks of 4 contexts
    con.close()
    resumed = FeaturesConfig(**{**base.__dict__, "fresh": False})
    collect([run], resumed, lm=lm, progress=False)
    con = connect(store_path(run), readonly=True)
    got = (con.execute("SELECT id, fires, act_sum, act_max, hist FROM features ORDER BY id").fetchall(),
           con.execute("SELECT feature, kind, context, pos FROM examples ORDER BY feature, kind, context").fetchall())
    assert got == want  # same batches in the same order: the same sums, maxima, histograms and examples
    assert S.get_meta(con)["complete"]
    con.close()
    # complete: a rerun says so without loading the model or reading text (nothing changes); more tokens read on
    monkeypatch.setattr(C, "load_model", lambda *a, **k: pytest.fail("loaded the model for a complete store"))
    monkeypatch.setattr(C, "load_split", lambda *a, **k: pytest.fail("read text for a complete store"))
    again = collect([run], resumed, progress=False)
    assert again[run]["complete"] and again[run]["contexts_done"] == N_CTX
    monkeypatch.setattr(C, "load_split", lambda *a, **k: pytest.fail("reached"))
    with pytest.raises(pytest.fail.Exception, match="reached"):
        collect([run], FeaturesConfig(**{**resumed.__dict__, "tokens": 2 * N_CTX * CTX}), lm=lm, progress=False)


def test_other_settings_are_refused(trained, tiny_corpus):
    from transcoders.errors import CheckpointError

    runs, lm = trained
    collect(runs[:1], FeaturesConfig(tokens=CTX * 4, corpus=tiny_corpus, top=3, samples=4, fresh=True), lm=lm, progress=False)
    with pytest.raises(CheckpointError, match="--fresh"):
        collect(runs[:1], FeaturesConfig(tokens=CTX * 4, corpus=tiny_corpus, top=5, samples=4), lm=lm, progress=False)


def test_cli_fills_a_store_and_refuses_bad_input(trained, tiny_corpus, capsys, tmp_path):
    from transcoders.cli import main

    runs, _ = trained
    assert main(["features", str(runs[1]), "--tokens", str(CTX * 6), "--corpus", tiny_corpus, "--fresh", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "features.sqlite" in out and "192 tokens" in out
    # without --quiet, every phase says what it is doing before the first forward (nothing silent for a minute)
    assert main(["features", str(runs[1]), "--tokens", str(CTX * 6), "--corpus", tiny_corpus, "--fresh",
                 "--threads", "1"]) == 0
    err = capsys.readouterr().err
    said = [err.index(s) for s in ("loading ", "opening its store", "held-out tokens of the", "features:")]
    assert said == sorted(said)
    assert main(["features", str(tmp_path / "nowhere"), "--quiet"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nowhere" in err[0]
