"""Concepts and sparse probing recover a planted feature.

The model: the tiny random Llama with layer 0's attention output zeroed, so that layer 0's MLP input is a
function of the current token alone. The dictionary: feature 0 reads that input along token T's own vector with a
bias between T's score and every other token's, so it fires exactly on T; the other features are random. Texts
with T are the positives (label "T"), texts without it the negatives.
"""

from __future__ import annotations

import json

import pytest
import torch

from transcoders.data.packing import text_ids
from transcoders.dictionary import Dictionary, DictionaryConfig
from transcoders.dictionary.io import save_dictionary
from transcoders.errors import InterpError
from transcoders.features import FeaturesConfig, collect
from transcoders.features import store as S
from transcoders.interp import concepts
from transcoders.interp.pooled import pooled_codes
from transcoders.interp.probing import sparse_probing
from transcoders.interp.tasks import labelled_task
from transcoders.interp.weights import weights_prediction
from transcoders.models import capture, load_model

WIDTH = 12


@pytest.fixture(scope="module")
def planted(tiny_model_dir, tiny_texts, tmp_path_factory):
    lm = load_model(tiny_model_dir)
    lm.model.model.layers[0].self_attn.o_proj.weight.zero_()
    folder = tmp_path_factory.mktemp("token-model")
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    lm = load_model(str(folder))
    tok = lm.tokenizer
    # T: a token in about a third of the texts
    counts: dict[int, int] = {}
    ids = [text_ids(tok, t, 128) for t in tiny_texts[:120]]  # 128: the context length of a run without training
    for row in ids:
        for t in set(row[1:]):
            counts[t] = counts.get(t, 0) + 1
    T = min(counts, key=lambda t: abs(counts[t] - 40))
    vocab = torch.arange(len(tok))
    with torch.no_grad():
        x = capture(lm, torch.stack([torch.full_like(vocab, ids[0][0]), vocab], 1), ["blocks.0.mlp.in"])
    x = x["blocks.0.mlp.in"][:, 1]  # [vocab, d]: layer 0's MLP input for each token after BOS
    score = x @ x[T]
    others = torch.cat([score[:T], score[T + 1:]]).max()
    assert score[T] > others  # T's own vector scores highest: the feature can be exact
    cfg = DictionaryConfig(d_in=x.shape[1], d_out=x.shape[1], width=WIDTH, kind="transcoder", activation="relu",
                           model=str(folder), model_type="llama", layer=0, hook_in="blocks.0.mlp.in",
                           hook_out="blocks.0.mlp.out")
    d = Dictionary(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        d.W_enc.normal_(0, 0.3, generator=g)
        d.b_enc.fill_(-0.5)
        scale = 10.0 / float(score[T] - others)
        d.W_enc[0] = x[T] * scale
        d.b_enc[0] = -scale * float(score[T] + others) / 2
    run = folder / "run"
    run.mkdir()
    save_dictionary(d, run)
    has = [T in row[1:] for row in ids]
    return lm, run, d, tiny_texts[:120], has


def test_pooled_codes_match_a_plain_encode(planted):
    lm, run, d, texts, _ = planted
    (p,) = pooled_codes(lm, [d], texts[:5], ctx_len=64, batch=2)
    for i, text in enumerate(texts[:5]):
        ids = torch.tensor([text_ids(lm.tokenizer, text, 64)])
        with torch.no_grad():
            x = capture(lm, ids, ["blocks.0.mlp.in"])["blocks.0.mlp.in"][0, 1:]  # BOS is a special token: left out
            z = d.encode(x)
        assert torch.allclose(p.max[i], z.max(0).values, atol=1e-5)
        assert torch.allclose(p.mean[i], z.mean(0), atol=1e-5)
        assert torch.allclose(p.raw[i], x.mean(0), atol=1e-5)


def test_concepts_rank_the_planted_feature_first(planted):
    lm, run, d, texts, has = planted
    pos = [t for t, h in zip(texts, has) if h]
    neg = [t for t, h in zip(texts, has) if not h]
    (rows,) = concepts([run], pos, neg, top=5, lm=lm, batch=8, progress=False).values()
    assert rows[0].feature == 0 and rows[0].auroc == 1.0
    assert rows[0].fires_pos == 1.0 and rows[0].fires_neg == 0.0
    assert all(r.auroc <= 1.0 for r in rows) and rows[1].auroc < 1.0


def test_sparse_probe_finds_the_planted_feature(planted):
    lm, run, d, texts, has = planted
    (p,) = pooled_codes(lm, [d], texts, ctx_len=128)
    labels = ["T" if h else "other" for h in has]
    res = sparse_probing(p, labels, ks=(1, 2), seed=0)
    (row,) = res["per_class"].values()
    assert row["k1_feature"] == 0 and row["k=1"] == 1.0
    assert res["mean"]["k=1"] == 1.0 and 0.0 <= res["mean"]["dense"] <= 1.0


def test_labelled_file_with_one_class_is_refused(tmp_path):
    f = tmp_path / "one.jsonl"
    f.write_text("".join(json.dumps({"text": f"text {i}", "label": "same"}) + "\n" for i in range(5)))
    with pytest.raises(InterpError, match=r"one class \('same'\): probing needs texts of at least two labels"):
        labelled_task(f)


def test_weights_predict_the_planted_token(planted, tiny_corpus):
    """Feature 0 reads token T's own vector: its examples all peak on T, and T tops its de-embedding."""
    lm, run, d, _, _ = planted
    collect([run], FeaturesConfig(tokens=48 * 32, corpus=tiny_corpus, batch=16, top=6, samples=6, commit_every=0),
            lm=lm, progress=False)
    con = S.connect(S.store_path(run), readonly=True)
    res = weights_prediction(con, lm.adapter, d, [0])
    con.close()
    f0 = res["per_feature"][0]
    assert f0["top_token_share"] == 1.0 and f0["hit"] == 1.0 and f0["percentile"] > 0.99
    assert res["single_token"][0] == 1.0
