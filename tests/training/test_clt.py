"""Cross-layer transcoders on the tiny model: a joint training step over every layer, run folders whose decoder
blocks land in the layers they were trained for, exact resume, and a clear refusal wherever CLTs are not read yet."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from transcoders.cli import main
from transcoders.data.activations import special_token_ids
from transcoders.data.packing import load_split
from transcoders.dictionary import load_dictionary
from transcoders.models import capture, load_model
from transcoders.training import TrainConfig, train


def clt_cfg(model_dir, corpus, out, **kw):
    base = dict(model=model_dir, corpus=corpus, layers="all", kind="clt", out=str(out), width=64, k=4, tokens=8192,
                batch_size=256, lr=3e-3, ctx_len=32, chunk_tokens=4096, forward_batch=16, checkpoint_every=8,
                dead_tokens=2048)
    base.update(kw)
    return TrainConfig(**base)


def held_out(model_dir, corpus, layers):
    """Real (MLP input, MLP output) pairs of every layer, on held-out text, BOS positions dropped."""
    lm = load_model(model_dir)
    ctx = load_split(corpus, lm.tokenizer, "eval", ctx_len=32, max_tokens=32 * 16)
    names = [n for L in layers for n in (f"blocks.{L}.mlp.in", f"blocks.{L}.mlp.out")]
    acts = capture(lm, ctx.tokens, names)
    keep = ~torch.isin(ctx.tokens.reshape(-1), torch.tensor(sorted(special_token_ids(lm.tokenizer))))
    return {L: (acts[f"blocks.{L}.mlp.in"].reshape(-1, lm.adapter.d_model)[keep],
                acts[f"blocks.{L}.mlp.out"].reshape(-1, lm.adapter.d_model)[keep]) for L in layers}


def fvu(y, y_hat):
    return float((y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum())


@pytest.fixture(scope="module")
def clt_run(tiny_model_dir, tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("clt") / "clt"
    return train(clt_cfg(tiny_model_dir, tiny_corpus, out), progress=False)


def test_a_clt_writes_each_layer_to_itself_and_every_later_layer(clt_run, tiny_model_dir, tiny_corpus):
    dicts = [load_dictionary(r) for r in clt_run]
    layers = [d.cfg.layer for d in dicts]
    assert layers == [0, 1, 2] and [r.name for r in clt_run] == ["layer_00", "layer_01", "layer_02"]
    d_model = dicts[0].cfg.d_in
    for d in dicts:
        assert d.cfg.kind == "clt" and d.cfg.targets == [m for m in layers if m >= d.cfg.layer]
        assert d.cfg.d_out == d_model * len(d.cfg.targets) and d.decoder_blocks().shape == (64, len(d.cfg.targets), d_model)

    # the saved (folded) weights, on raw activations of held-out text, by the formula written out densely:
    # ŷ_m = Σ_{i ≤ m} z_i W_dec_i[:, m − i] + b_dec_i[m − i]
    pairs = held_out(tiny_model_dir, tiny_corpus, layers)
    with torch.no_grad():
        codes = {d.cfg.layer: d.encode(pairs[d.cfg.layer][0]) for d in dicts}

        def recon(m, cross=True):
            out = 0
            for d in dicts:
                i = d.cfg.layer
                if i > m or (not cross and i != m):
                    continue
                j = d.cfg.targets.index(m)
                out = out + codes[i] @ d.decoder_blocks()[:, j] + d.b_dec.reshape(len(d.cfg.targets), -1)[j]
            return out

        got = {m: fvu(pairs[m][1], recon(m)) for m in layers}
        own_only = {m: fvu(pairs[m][1], recon(m, cross=False)) for m in layers}
        # the module's own sparse path agrees with the dense formula
        for d in dicts:
            flat = d(pairs[d.cfg.layer][0])
            dense = codes[d.cfg.layer] @ d.W_dec + d.b_dec
            torch.testing.assert_close(flat, dense, rtol=1e-4, atol=1e-5)
    assert all(v < 0.9 for v in got.values()), got  # it learned every layer's output
    # later layers lean on what earlier layers' features write to them: without those blocks they get worse
    assert own_only[0] == pytest.approx(got[0])
    assert own_only[1] > got[1] and own_only[2] > got[2], (got, own_only)


def test_a_clt_resumes_to_the_uninterrupted_result(clt_run, tiny_model_dir, tiny_corpus, tmp_path, monkeypatch):
    import transcoders.training.trainer as T

    orig, calls = T.clt_step, {"n": 0}

    def crashing(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 20:  # after the checkpoint at step 16
            raise KeyboardInterrupt
        return orig(*a, **kw)

    monkeypatch.setattr(T, "clt_step", crashing)
    cfg = clt_cfg(tiny_model_dir, tiny_corpus, tmp_path / "clt")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.setattr(T, "clt_step", orig)
    runs = train(cfg, resume=True, progress=False)
    for ref, run in zip(clt_run, runs):
        wr, wk = load_file(str(ref / "weights.safetensors")), load_file(str(run / "weights.safetensors"))
        assert wr.keys() == wk.keys()
        for k in wr:
            torch.testing.assert_close(wk[k], wr[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("argv, says", [
    (["export", "{set}", "--to", "saelens", "{tmp}/x"], "cross-layer transcoder"),
    (["sweep", "--kinds", "clt", "--layers", "1", "--out", "{tmp}/sweep"], "sweeps and tune do not take"),
])
def test_commands_that_do_not_read_clts_yet_say_so(clt_run, capsys, tmp_path, argv, says):
    set_dir = clt_run[0].parent
    code = main([a.format(set=set_dir, tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and says in err[0], err
    assert not (tmp_path / "sweep").exists()  # nothing written


def test_a_clt_that_would_not_fit_in_memory_is_refused_with_what_would():
    from transcoders.errors import TranscodersError
    from transcoders.training.clt import check_clt_memory, clt_bytes

    # the default model (d 576, 30 layers): 2x fits a 24 GiB machine beside a 6 GiB buffer, 8x does not
    assert clt_bytes(1152, 576, 30) == 4 * 3 * 1152 * 576 * (30 + 465)
    ram, buffer = int(0.85 * 24 * 2**30), 7 * 2**30
    check_clt_memory(1152, 576, 30, ram, buffer)
    with pytest.raises(TranscodersError, match=r"14\.7 GiB .* use --expansion 7 or less"):
        check_clt_memory(4608, 576, 30, ram, buffer)
    assert TrainConfig(kind="clt").dictionary_width(576) == 1152  # the CLT's default width
    assert TrainConfig().dictionary_width(576) == 4608 and TrainConfig(width=100).dictionary_width(576) == 100


def test_a_clts_dashboards_data_and_scores_read_its_layers(clt_run, tiny_model_dir, tiny_corpus):
    """`transcoders features` and `interp` take a CLT like a set; a feature's logit effects are those of everything
    it writes, summed over the layers it writes to (the tiny model has no post-MLP norm)."""
    import json
    import sqlite3

    from transcoders.features import FeaturesConfig, collect, store_path
    from transcoders.interp import InterpConfig, run_interp

    lm = load_model(tiny_model_dir)
    collect(clt_run, FeaturesConfig(tokens=32 * 8, corpus=tiny_corpus, top=4, samples=4), lm=lm, progress=False)
    d = load_dictionary(clt_run[0])  # layer 0 writes to layers 0, 1 and 2
    con = sqlite3.connect(store_path(clt_run[0]))
    fid, top = con.execute("SELECT id, top_logits FROM features WHERE top_logits IS NOT NULL ORDER BY id").fetchone()
    con.close()
    a = lm.adapter
    written = d.decoder_blocks()[fid].sum(0)  # [d_model]: the three blocks together
    final = a.norm_params(a.final_norm())
    logits = (written * final.gain) @ a.unembed().float()
    assert [t for t, _ in json.loads(top)][:5] == logits.topk(5).indices.tolist()
    res = run_interp(clt_run, InterpConfig(scores="weights", features=8), progress=False)
    assert all(r["weights"]["features"] > 0 for r in res.values())
    from transcoders.interp import concepts
    from transcoders.viewer import data as D

    found = concepts(clt_run, ["the king and the queen"] * 3, ["a ship on the sea"] * 3, top=3, lm=lm, progress=False)
    assert set(found) == set(clt_run) and all(len(v) == 3 for v in found.values())
    page = D.feature_page(clt_run[0].parent.parent, f"{clt_run[0].parent.name}/layer_00", fid)
    assert page["top_logits"][0]["id"] == int(logits.argmax()) and page["similar"]["decoder"]
