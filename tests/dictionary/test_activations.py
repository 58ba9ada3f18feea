"""The activation functions other than ReLU and TopK: BatchTopK and JumpReLU, and their gradients."""

import pytest
import torch

from transcoders.dictionary import Dictionary, DictionaryConfig, load_dictionary, save_dictionary


def make(activation, k=None, width=64, d=16, kind="transcoder"):
    cfg = DictionaryConfig(d_in=d, d_out=d, width=width, kind=kind, activation=activation, k=k, model="tiny", layer=1)
    dic = Dictionary(cfg)
    dic.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        dic.b_enc.normal_(0, 0.1)
    return dic


def test_batchtopk_training_keeps_k_per_token_on_average_and_the_largest():
    dic = make("batchtopk", k=3)
    x = torch.randn(20, 16)
    enc = dic.encode_sparse(x, training=True)
    assert int((enc.dense > 0).sum()) == 3 * 20  # exactly k·N over the batch (random data: all kept are positive)
    assert enc.l0().float().mean().item() == 3
    assert not (enc.l0() == 3).all()  # the budget is shared across tokens, unlike TopK
    kept = enc.dense[enc.dense > 0]
    dropped = torch.relu(enc.pre)[enc.dense == 0]
    assert kept.min() >= dropped.max()


def test_batchtopk_inference_uses_the_running_threshold():
    dic = make("batchtopk", k=3)
    x = torch.randn(200, 16)
    for _ in range(50):
        dic.after_step(dic.encode_sparse(x, training=True))
    theta = dic.threshold.item()
    assert theta > 0
    pre = dic.pre_acts(x)
    torch.testing.assert_close(dic.encode(x), pre * (pre > theta))
    # the threshold reproduces the training-time sparsity on the same data, roughly
    assert 1.5 < (dic.encode(x) > 0).sum(-1).float().mean() < 6


def test_jumprelu_forward_and_straight_through_gradients():
    dic = make("jumprelu")
    with torch.no_grad():
        dic.threshold.fill_(0.05)
    x = torch.randn(32, 16)
    pre = dic.pre_acts(x).detach()
    z = dic.encode(x)
    torch.testing.assert_close(z, pre * (pre > 0.05))
    # threshold gradient: only from pre-activations within bandwidth/2 of θ, of sign -θ/ε · dL/dz
    dic.bandwidth = 0.02
    enc = dic.encode_sparse(x, training=True)
    enc.dense.sum().backward()
    near = ((pre - 0.05).abs() < 0.01).float()
    expected = -(0.05 / 0.02) * near.sum(0)
    torch.testing.assert_close(dic.threshold.grad, expected, rtol=1e-4, atol=1e-6)
    # the L0 penalty counts active features and pushes θ up where pre-activations sit near it
    dic.zero_grad()
    l0 = dic.sparsity_penalty(dic.encode_sparse(x, training=True))
    assert l0.item() == pytest.approx((pre > 0.05).sum(-1).float().mean().item())
    l0.backward()
    assert (dic.threshold.grad <= 0).all() and (dic.threshold.grad < 0).any()


@pytest.mark.parametrize("activation,k", [("batchtopk", 4), ("jumprelu", None)])
def test_thresholds_survive_save_and_load(tmp_path, activation, k):
    dic = make(activation, k=k)
    with torch.no_grad():
        if activation == "jumprelu":
            dic.threshold.uniform_(0.01, 0.1)
        else:
            dic.threshold.fill_(0.07)
    save_dictionary(dic, tmp_path / "run")
    back = load_dictionary(tmp_path / "run")
    x = torch.randn(40, 16)
    assert torch.equal(back.thresholds(), dic.thresholds())
    assert torch.equal(back(x), dic(x))


def test_pick_routes_mlp_in_and_out_by_hook_names():
    a, b = torch.zeros(1), torch.ones(1)
    tc = DictionaryConfig(d_in=4, d_out=4, width=8, k=2, hook_in="blocks.1.mlp.in", hook_out="blocks.1.mlp.out")
    sae_out = DictionaryConfig(d_in=4, d_out=4, width=8, k=2, kind="sae", hook_in="blocks.1.mlp.out", hook_out="blocks.1.mlp.out")
    sae_in = DictionaryConfig(d_in=4, d_out=4, width=8, k=2, kind="sae", hook_in="blocks.1.mlp.in", hook_out="blocks.1.mlp.in")
    assert tc.pick(a, b) == (a, b)
    assert sae_out.pick(a, b) == (b, b)
    assert sae_in.pick(a, b) == (a, a)


@pytest.mark.parametrize("activation, k, penalty, form", [
    ("relu", None, True, "relu"), ("topk", 4, False, "topk"), ("batchtopk", 4, False, "jumprelu"),
    ("jumprelu", None, True, "jumprelu"),
])  # fmt: skip
def test_each_activation_says_how_it_trains_and_what_it_is_at_inference(activation, k, penalty, form):
    """What the trainer and the exports ask a dictionary, answered by its activation."""
    dic = make(activation, k=k)
    x = torch.randn(32, 16)
    enc = dic.encode_sparse(x, training=True)
    assert (dic.sparsity_penalty(enc) is not None) == penalty == dic.act.uses_penalty
    assert dic.act.uses_k == (k is not None)
    groups = dic.param_groups()
    assert sum(len(g["params"]) for g in groups) == len(list(dic.parameters()))  # every parameter, once
    assert len(groups) == (2 if activation == "jumprelu" else 1)  # thresholds get their own learning rate
    f = dic.inference_form()
    assert f.name == form and f.k == (k if form == "topk" else None)
    if form == "jumprelu":  # the form reproduces the inference codes: pre * (pre > threshold)
        pre = dic.pre_acts(x)
        torch.testing.assert_close(dic.encode(x), pre * (pre > f.threshold))


def test_jumprelu_after_step_keeps_thresholds_non_negative_and_starts_from_the_target_l0():
    dic = make("jumprelu")
    with torch.no_grad():
        dic.threshold.copy_(torch.linspace(-1, 1, dic.width))
    dic.after_step(dic.encode_sparse(torch.randn(8, 16), training=True))
    assert dic.threshold.min() == 0 and dic.threshold.max() == 1
    x = torch.randn(4096, 16)
    dic.init_from_data(x, x, l0=8)
    torch.testing.assert_close(dic.b_dec, x.mean(0))
    l0 = (dic.encode(x) > 0).sum(-1).float().mean()
    assert 6 < l0 < 10  # thresholds where each feature fires on about l0 / width of the tokens
