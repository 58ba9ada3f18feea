"""Evaluating a cross-layer transcoder, against independent computations: the spliced CE from plain hooks on the
model, a one-layer CLT against the same weights read as a transcoder, and the FVU from the weights by hand."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from transcoders.data.packing import load_split
from transcoders.dictionary import load_dictionary
from transcoders.errors import CheckpointError
from transcoders.evaluation import evaluate
from transcoders.models import load_model
from transcoders.training import TrainConfig, train


def clt(model_dir, corpus, out, layers="all"):
    return train(TrainConfig(model=model_dir, corpus=corpus, layers=layers, kind="clt", out=str(out), width=64, k=4,
                             tokens=4096, batch_size=256, ctx_len=32, chunk_tokens=4096, forward_batch=16),
                 progress=False)


@pytest.fixture(scope="module")
def clt_set(tiny_model_dir, tiny_corpus, tmp_path_factory):
    return clt(tiny_model_dir, tiny_corpus, tmp_path_factory.mktemp("clt-eval") / "clt")


def test_splicing_a_clt_matches_plain_hooks_and_its_fvu_matches_the_weights(clt_set, tiny_model_dir, tiny_corpus):
    lm = load_model(tiny_model_dir)
    res = evaluate([clt_set[0].parent], lm=lm, corpus=tiny_corpus, tokens=32 * 8, batch=4, progress=False, write=False)
    f = res["fidelity"]
    ids = load_split(tiny_corpus, lm.tokenizer, "eval", ctx_len=32, max_tokens=32 * 8).tokens[:8]
    special = torch.tensor([lm.tokenizer.bos_token_id, lm.tokenizer.eos_token_id])
    valid, keep = ~torch.isin(ids[:, 1:], special), ~torch.isin(ids, special)
    dicts = [load_dictionary(r) for r in clt_set]
    d_model = dicts[0].cfg.d_in

    def ce(logits):
        return -F.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)[valid].mean().item()

    # independently: hooks on the MLP modules; layer m's output becomes Σ_{i ≤ m} of layer i's block for m, each
    # layer i reading its MLP input in this (replaced) forward
    written: dict[int, torch.Tensor] = {}
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(i):
        def fn(module, args, out):
            x = args[0]
            seen[i] = (x.detach(), out.detach())
            flat = dicts[i](x)
            for j, m in enumerate(dicts[i].cfg.targets):
                written[m] = written.get(m, 0) + flat[..., j * d_model:(j + 1) * d_model]
            return torch.where(keep[..., None], written.pop(i), out)
        return fn

    handles = [lm.adapter.mlp(i).register_forward_hook(hook(i)) for i in range(3)]
    try:
        with torch.no_grad():
            spliced = ce(lm.model(input_ids=ids).logits)
    finally:
        for h in handles:
            h.remove()
    assert f["ce_spliced"] == pytest.approx(spliced, abs=1e-4)
    assert f["spliced_layers"] == [0, 1, 2] and f["ce_spliced"] > f["ce_clean"]

    # FVU of layer 2 from the clean activations: every layer's block for layer 2, by hand
    with torch.no_grad():
        clean = {}
        handles = [lm.adapter.mlp(i).register_forward_hook(
            lambda m, a, o, i=i: clean.__setitem__(i, (a[0].detach(), o.detach()))) for i in range(3)]
        try:
            lm.model(input_ids=ids)
        finally:
            for h in handles:
                h.remove()
        y = clean[2][1][keep]
        y_hat = sum(d(clean[d.cfg.layer][0][keep])[:, (2 - d.cfg.layer) * d_model:(3 - d.cfg.layer) * d_model]
                    for d in dicts)
        fvu = float((y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum())
    assert res["runs"][str(clt_set[2])]["fvu"] == pytest.approx(fvu, rel=1e-3)


def test_reusing_the_clean_residual_gives_the_full_forwards_numbers(clt_set, tiny_model_dir, tiny_corpus, tmp_path):
    """A CLT over layers 1-2: its edited passes start at layer 1 from the clean pass's recording, and each layer
    spliced alone still gets layer 1's writes."""
    runs = clt(tiny_model_dir, tiny_corpus, tmp_path / "clt12", layers="1-2")
    lm = load_model(tiny_model_dir)
    kw = dict(lm=lm, corpus=tiny_corpus, tokens=32 * 8, batch=4, progress=False, write=False, each=True)
    fast, slow = evaluate([runs[0].parent], **kw), evaluate([runs[0].parent], full_forwards=True, **kw)
    for a, b in zip(fast["groups"], slow["groups"]):
        for k in ("ce_spliced", "kl_clean_spliced", "ce_mean_ablated", "ce_zero_ablated"):
            assert a[k] == pytest.approx(b[k], abs=1e-5), k
    assert [g["spliced_layers"] for g in fast["groups"]] == [[1, 2], [1], [2]]


def test_a_one_layer_clt_is_evaluated_as_the_transcoder_it_is(tiny_model_dir, tiny_corpus, tmp_path):
    (run,) = clt(tiny_model_dir, tiny_corpus, tmp_path / "clt1", layers="1")
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    cfg = json.loads((twin / "config.json").read_text())
    cfg.update(kind="transcoder", extra={})
    (twin / "config.json").write_text(json.dumps(cfg))
    lm = load_model(tiny_model_dir)
    kw = dict(lm=lm, corpus=tiny_corpus, tokens=32 * 8, batch=4, progress=False, write=False)
    a, b = evaluate([run], **kw), evaluate([twin], **kw)
    for k in ("ce_spliced", "kl_clean_spliced", "ce_recovered_mean"):
        assert a["fidelity"][k] == pytest.approx(b["fidelity"][k], abs=1e-6)
    assert a["runs"][str(run)]["fvu"] == pytest.approx(b["runs"][str(twin)]["fvu"], rel=1e-6)


def test_part_of_a_clt_or_a_clt_beside_other_runs_is_refused(clt_set, tmp_path, tiny_model_dir, tiny_corpus):
    with pytest.raises(CheckpointError, match="whole cross-layer transcoder"):
        evaluate([clt_set[1], clt_set[2]], corpus=tiny_corpus, progress=False)
    (other,) = train(TrainConfig(model=tiny_model_dir, corpus=tiny_corpus, layers="1", out=str(tmp_path / "t"),
                                 width=32, k=4, tokens=1024, batch_size=256, ctx_len=32, chunk_tokens=1024,
                                 forward_batch=16), progress=False)
    with pytest.raises(CheckpointError, match="cannot be mixed"):
        evaluate([clt_set[0].parent, other], corpus=tiny_corpus, progress=False, each_only=True)
