"""Exactness on the real default model (SmolLM2-135M-Instruct) with a real, if briefly trained, transcoder set for
all 30 layers, and with a cross-layer transcoder over all 30 (layer 0's features write to every MLP): contributions
add up to real pre-activations and logits, every backward row adds up to its target, edges equal perturbations of
the frozen model, and path attributions read back from the residual stream."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transcoders.circuits import Replacement, TranscoderSet
from transcoders.circuits.paths import find_paths, path_value_check
from transcoders.circuits.targets import parse_target
from transcoders.models import load_model
from transcoders.training import TrainConfig, train

pytestmark = pytest.mark.slow
PROMPT = "The war lasted from the year 1732 to the year 17"


@pytest.fixture(scope="module", params=["transcoder", "clt"])
def fp(tmp_path_factory, request):
    out = tmp_path_factory.mktemp("set") / "set"
    lm = load_model("default")
    clt = request.param == "clt"
    cfg = TrainConfig(layers="all", tokens=4096, width=256 if clt else 1152, k=16, batch_size=512, chunk_tokens=4096,
                      ctx_len=64, out=str(out), dead_tokens=10**9, kind=request.param)
    train(cfg, progress=False, lm=lm)
    rep = Replacement(lm, TranscoderSet.load(out))
    assert rep.tset.layers == list(range(30)) and rep.tset.is_clt == clt
    assert rep.tset.targets(0) == (list(range(30)) if clt else [0])
    return rep.trace(PROMPT)[0]


def rel_close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> bool:
    return float((a - b).abs().max()) <= rel * max(1.0, float(b.abs().max()))


def test_frozen_model_is_the_real_model(fp):
    rep = fp.rep
    out = fp.forward()
    with torch.no_grad():
        real = rep.lm.model(input_ids=fp.ids[None]).logits[0]
    assert rel_close(out["logits"], real)
    for L in (0, 7, 15, 29):
        assert rel_close(out["pre"][L], fp.pre_acts(L))


def test_contributions_and_edges_add_up(fp):
    rep = fp.rep
    targets = [parse_target(fp, "logit:4-2")]
    for L in (1, 9, 18, 29):
        t = fp.layers[L]
        last = (t.acts_pos == fp.n_tokens - 1).nonzero(as_tuple=True)[0]
        targets += [parse_target(fp, f"{L}:{int(t.acts_idx[j])}@-1") for j in last[:3]]
    for tg in targets:
        real = float(fp.pre_acts(tg.layer)[tg.pos, tg.feature]) if tg.kind == "feature" else \
            float(fp.logits()[tg.tokens[0]] - fp.logits()[tg.tokens[1]])
        con = fp.contributions(tg.vector, tg.stage, tg.pos, tg.const)
        assert con.total() == pytest.approx(real, rel=1e-4, abs=1e-4)
    edges = fp.backward([(t.stage, t.pos, t.vector) for t in targets], torch.tensor([t.const for t in targets]))
    values = torch.tensor([t.value(fp) for t in targets])
    assert rel_close(edges.total(), values)
    # perturbation: doubling a layer-3 feature and an error moves every target by its edge
    base = fp.forward()

    def read(out):
        return torch.stack([out["pre"][t.layer][t.pos, t.feature] if t.kind == "feature" else
                            out["logits"][t.pos, t.tokens[0]] - out["logits"][t.pos, t.tokens[1]] for t in targets])

    for L in (0, 3, 15):  # a CLT's layer-0 features write into all 30 MLP outputs
        t = fp.layers[L]
        j = int((t.acts_pos == fp.n_tokens - 2).nonzero()[0, 0])
        z = t.dense_acts(rep.tset[L].width)
        z[t.acts_pos[j], t.acts_idx[j]] *= 2
        moved = read(fp.forward(acts={L: z})) - read(base)
        assert moved.abs().max() > 0
        assert rel_close(moved, edges.features[L][:, j], 1e-4 * float(values.abs().max()))
    e = fp.layers[5].error.clone()
    e[4] *= 2
    assert rel_close(read(fp.forward(errors={5: e})) - read(base), edges.errors[:, 5, 4], 1e-4 * float(values.abs().max()))


def test_paths_read_back(fp):
    search = find_paths(fp, parse_target(fp, "logit:4-2"), depth=3, branches=10)
    for path in search.paths:
        vals = torch.tensor([n.value for n in path if not n.leaf])
        assert rel_close(path_value_check(fp, path), vals, 1e-3)
