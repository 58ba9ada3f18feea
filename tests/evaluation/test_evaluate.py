"""Evaluation numbers checked against independent computations on a tiny model."""

import json

import pytest
import torch
import torch.nn.functional as F

from transcoders.data.packing import load_split
from transcoders.evaluation import evaluate, format_table
from transcoders.models import load_model
from transcoders.training import TrainConfig, train


def test_eval_matches_independent_ce_and_writes_metrics(tiny_model_dir, tiny_corpus, tmp_path):
    cfg = TrainConfig(model=tiny_model_dir, corpus=tiny_corpus, layers="1", out=str(tmp_path / "run"), width=128, k=8,
                      tokens=8192, batch_size=256, ctx_len=32, chunk_tokens=4096, forward_batch=16)
    (run,) = train(cfg, progress=False)
    lm = load_model(tiny_model_dir)
    res = evaluate([run], lm=lm, corpus=tiny_corpus, tokens=32 * 16, batch=4, progress=False)
    f = res["fidelity"]
    # independent clean CE and zero-ablation CE on the same contexts and positions
    ids = load_split(tiny_corpus, lm.tokenizer, "eval", ctx_len=32, max_tokens=32 * 16).tokens[:16]
    special = torch.tensor([lm.tokenizer.bos_token_id, lm.tokenizer.eos_token_id])
    valid = ~torch.isin(ids[:, 1:], special)
    keep = ~torch.isin(ids, special)

    def ce(logits):
        lp = F.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        return -lp[valid].mean().item()

    mlp = lm.adapter.mlp(1)
    with torch.no_grad():
        clean = ce(lm.model(input_ids=ids).logits)
        orig = mlp.forward
        mlp.forward = lambda x: torch.where(keep[..., None], torch.zeros_like(orig(x)), orig(x))
        try:
            zero = ce(lm.model(input_ids=ids).logits)
        finally:
            del mlp.forward
    assert abs(f["ce_clean"] - clean) < 1e-4
    assert abs(f["ce_zero_ablated"] - zero) < 1e-4
    assert f["kl_clean_spliced"] >= 0
    rec = (f["ce_zero_ablated"] - f["ce_spliced"]) / (f["ce_zero_ablated"] - f["ce_clean"])
    assert abs(rec - f["ce_recovered_zero"]) < 1e-9
    m = res["runs"][str(run)]
    assert 0 < m["l0"] <= 8 and 0 < m["fvu"] < 1.5
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["l0"] == m["l0"] and saved["fidelity"]["ce_clean"] == f["ce_clean"]
    assert "CE recovered" in format_table(res)


def test_each_alone_matches_evaluating_that_run_by_itself(tiny_model_dir, tiny_corpus, tmp_path):
    """Shared clean and ablation passes must give the same numbers as a separate evaluation."""
    cfg = TrainConfig(model=tiny_model_dir, corpus=tiny_corpus, layers="0-1", out=str(tmp_path / "set"), width=64, k=4,
                      tokens=4096, batch_size=256, ctx_len=32, chunk_tokens=4096, forward_batch=16)
    runs = train(cfg, progress=False)
    lm = load_model(tiny_model_dir)
    kw = dict(lm=lm, corpus=tiny_corpus, tokens=32 * 8, batch=4, progress=False, write=False)
    both = evaluate([tmp_path / "set"], each=True, **kw)
    assert both["fidelity"]["spliced_layers"] == [0, 1] and len(both["groups"]) == 3
    for run in runs:
        alone = evaluate([run], **kw)["fidelity"]
        shared = both["runs"][str(run)]["alone"]
        for key in ("ce_clean", "ce_spliced", "ce_mean_ablated", "ce_zero_ablated", "kl_clean_spliced"):
            assert abs(alone[key] - shared[key]) < 1e-5, key
    table = format_table(both)
    assert "Each spliced in alone" in table and "layer_01" in table


def test_starting_at_the_lowest_replaced_layer_gives_the_full_forwards_numbers(tiny_model_dir, tiny_corpus, tmp_path):
    """Spliced and ablated passes that skip the unchanged blocks below the lowest replaced layer (the default)
    give what full forwards give, for a group starting at layer 1 and for each layer alone."""
    cfg = TrainConfig(model=tiny_model_dir, corpus=tiny_corpus, layers="1-2", out=str(tmp_path / "set"), width=64, k=4,
                      tokens=4096, batch_size=256, ctx_len=32, chunk_tokens=4096, forward_batch=16)
    train(cfg, progress=False)
    lm = load_model(tiny_model_dir)
    kw = dict(lm=lm, corpus=tiny_corpus, tokens=32 * 8, batch=4, progress=False, write=False, each=True)
    fast = evaluate([tmp_path / "set"], **kw)
    full = evaluate([tmp_path / "set"], full_forwards=True, **kw)
    for a, b in zip(fast["groups"], full["groups"]):
        assert a["spliced_layers"] == b["spliced_layers"]
        for key in ("ce_clean", "ce_spliced", "ce_mean_ablated", "ce_zero_ablated", "kl_clean_spliced"):
            assert abs(a[key] - b[key]) < 1e-6, key
    assert [g["spliced_layers"] for g in fast["groups"]] == [[1, 2], [1], [2]]
    assert fast["groups"][0]["ce_spliced"] != fast["groups"][2]["ce_spliced"]


@pytest.mark.parametrize("site", ["mlp.in", "mlp.out"])
def test_a_perfect_sae_spliced_at_either_site_leaves_the_model_unchanged(tiny_model_dir, tiny_corpus, tmp_path, site):
    """relu(x) - relu(-x) = x: an SAE that reconstructs exactly must give the clean CE and zero KL,
    whether it replaces the MLP output or feeds the MLP its input."""
    from tiny_dictionaries import perfect_sae

    from transcoders.dictionary import save_dictionary

    lm = load_model(tiny_model_dir)
    save_dictionary(perfect_sae(lm.adapter.d_model, 1, site, lm.name), tmp_path / "sae")
    res = evaluate([tmp_path / "sae"], lm=lm, corpus=tiny_corpus, tokens=32 * 8, batch=4, progress=False)
    f = res["fidelity"]
    assert abs(f["ce_spliced"] - f["ce_clean"]) < 1e-5 and f["kl_clean_spliced"] < 1e-6
    assert res["runs"][str(tmp_path / "sae")]["fvu"] < 1e-10
    assert abs(f["ce_zero_ablated"] - f["ce_clean"]) > 1e-4  # the layer does matter, so the check has teeth
