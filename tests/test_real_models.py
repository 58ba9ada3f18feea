"""Checks on every named real model that is installed here (`transcoders models`): the hook points mean what the
adapter says, a perfect dictionary spliced in leaves the model's loss unchanged, and attributions add up exactly.

A model that is not installed is skipped with the command that installs it. CI installs the default and Gemma 3
270M (a second family, with the extra norms after attention and after the MLP); the Qwen models run where they are
installed (`transcoders models --install NAME`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent / "circuits"))

import pytest
import torch
from circuit_helpers import random_set
from tiny_dictionaries import perfect_sae

from transcoders.circuits import Replacement
from transcoders.circuits.targets import parse_target
from transcoders.dictionary import save_dictionary
from transcoders.evaluation import evaluate
from transcoders.models import capture, load_model
from transcoders.models.named import NAMED_MODELS

pytestmark = pytest.mark.slow
PROMPT = "The war lasted from the year 1732 to the year 17"


@pytest.fixture(scope="module", params=list(NAMED_MODELS))
def lm(request):
    m = NAMED_MODELS[request.param]
    if not (m.installed or m.converted):
        pytest.skip(f"model {m.name!r} is not installed here (`transcoders models --install {m.name}`)")
    lm = load_model(m.name)
    yield lm
    del lm


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> bool:
    return float((a - b).abs().max()) <= rel * max(1.0, float(b.abs().max()))


def ids(lm) -> torch.Tensor:
    return lm.tokenizer(PROMPT, return_tensors="pt").input_ids


def test_the_converted_model_knows_a_fact(lm):
    """A conversion that garbles weights (a norm offset, a transposed projection) still runs; it does not
    still know where the Eiffel Tower is."""
    x = lm.tokenizer("The Eiffel Tower is located in the city of", return_tensors="pt").input_ids
    with torch.no_grad():
        top = lm.model(input_ids=x).logits[0, -1].topk(3).indices
    assert " Paris" in [lm.tokenizer.decode(int(i)) for i in top]


def test_shape_and_hook_points(lm):
    """The MLP fed the hooked input returns the hooked output; the pre-MLP norm of ``resid.mid`` is ``mlp.in``;
    the block's output is ``resid.mid`` plus the MLP output (through Gemma's post-MLP norm); the final norm and
    unembedding of the last block's output are the model's logits."""
    a = lm.adapter
    assert (a.n_layers, a.d_model, a.d_mlp) == NAMED_MODELS[lm.name].shape
    x = ids(lm)
    last = a.n_layers - 1
    layers = sorted({0, a.n_layers // 2, last})
    names = [f"blocks.{L}.{p}" for L in layers for p in ("resid.mid", "mlp.in", "mlp.out", "resid.post")]
    with torch.no_grad():
        acts = capture(lm, x, names)
        for L in layers:
            mid, mlp_in, mlp_out, post = (acts[f"blocks.{L}.{p}"] for p in ("resid.mid", "mlp.in", "mlp.out",
                                                                              "resid.post"))
            assert close(a.mlp_in_norm(L)(mid), mlp_in), L
            assert close(a.mlp(L)(mlp_in), mlp_out), L
            out_norm = a.mlp_out_norm(L)
            assert close(mid + (out_norm(mlp_out) if out_norm is not None else mlp_out), post), L
            assert (out_norm is not None) == (lm.adapter.family == "gemma")
        logits = lm.model(input_ids=x).logits
        assert close(a.logits(acts[f"blocks.{last}.resid.post"]), logits)


def test_a_perfect_dictionary_spliced_in_leaves_the_loss_unchanged(lm, tmp_path):
    """relu(x) - relu(-x) = x: an SAE that reconstructs the MLP output exactly, spliced in at a middle layer,
    gives the clean CE and zero KL on real text; ablating that MLP does change the CE (the check has teeth)."""
    L = lm.adapter.n_layers // 2
    sae = perfect_sae(lm.adapter.d_model, L, "mlp.out", lm.name, lm.model.config.model_type)
    save_dictionary(sae, tmp_path / "sae")
    res = evaluate([tmp_path / "sae"], lm=lm, corpus="default", ctx_len=32, tokens=32 * 4, batch=4, progress=False,
                   write=False)
    f = res["fidelity"]
    assert abs(f["ce_spliced"] - f["ce_clean"]) < 1e-4 and f["kl_clean_spliced"] < 1e-5
    assert f["ce_clean"] < 6  # a trained model on real text (the uniform guess is log(vocab) > 10)
    assert abs(f["ce_zero_ablated"] - f["ce_clean"]) > 1e-3


def test_attributions_add_up_on_a_short_prompt(lm):
    """With (random) transcoders at every layer and the errors frozen, the replacement reproduces the real logits,
    and each contribution table sums to the real value of its target: a feature's pre-activation at a middle
    layer, a logit difference."""
    L = lm.adapter.n_layers // 2
    rep = Replacement(lm, random_set(lm, width=64, k=8, skip_layers=(L,)))
    fp = rep.trace(PROMPT)[0]
    with torch.no_grad():
        real = lm.model(input_ids=fp.ids[None]).logits[0]
    assert close(fp.forward()["logits"], real)
    t = fp.layers[L]
    last = (t.acts_pos == fp.n_tokens - 1).nonzero(as_tuple=True)[0]
    targets = [parse_target(fp, f"{L}:{int(t.acts_idx[j])}@-1") for j in last[:2]]
    targets.append(parse_target(fp, "logit:4-2"))
    for tg in targets:
        real_value = float(fp.pre_acts(tg.layer)[tg.pos, tg.feature]) if tg.kind == "feature" else \
            float(fp.logits()[tg.tokens[0]] - fp.logits()[tg.tokens[1]])
        total = fp.contributions(tg.vector, tg.stage, tg.pos, tg.const).total()
        assert total == pytest.approx(real_value, rel=1e-4, abs=1e-4 * max(1.0, abs(real_value)))
