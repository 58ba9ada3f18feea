"""The TopK training fast path (gradients from the k selected pre-activations, dictionary/sparse.py) against the
plain path (autograd through the dense pre-activations)."""

import copy

import pytest
import torch

from transcoders.dictionary import Dictionary, DictionaryConfig
from transcoders.dictionary.sparse import scatter_outer
from transcoders.training import TrainConfig
from transcoders.training.trainer import LayerState, make_adam


def make(kind="transcoder", width=96, d=12, k=5, seed=0, dtype=torch.float64):
    cfg = DictionaryConfig(d_in=d, d_out=d, width=width, kind=kind, activation="topk", k=k)
    dic = Dictionary(cfg, dtype=dtype)
    dic.reset_parameters(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        dic.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 1))
        if dic.W_skip is not None:
            dic.W_skip.normal_(0, 0.1)
    return dic


def grads(dic, x, y, sparse):
    dic.sparse_grads = sparse
    dic.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    y_hat, enc = dic.forward_sparse(x, training=True)
    # a loss that weights every output and every code differently, so a misplaced gradient shows
    w = torch.linspace(0.5, 1.5, enc.values.numel(), dtype=x.dtype).view_as(enc.values)
    ((y - y_hat).pow(2).sum() + (w * enc.values).sum()).backward()
    return {n: p.grad.clone() for n, p in dic.named_parameters()} | {"x": x.grad.clone()}, enc


@pytest.mark.parametrize("kind", ["transcoder", "skip-transcoder", "sae"])
def test_sparse_grads_equal_dense_autograd(kind):
    dic = make(kind)
    x, y = torch.randn(33, 12, dtype=torch.float64), torch.randn(33, 12, dtype=torch.float64)
    fast, enc_fast = grads(dic, x, y, sparse=True)
    plain, enc_plain = grads(dic, x, y, sparse=False)
    assert torch.equal(enc_fast.indices, enc_plain.indices)
    torch.testing.assert_close(enc_fast.values, enc_plain.values)
    assert set(fast) == set(plain)
    for name in plain:
        torch.testing.assert_close(fast[name], plain[name], rtol=1e-10, atol=1e-12, msg=name)
    assert fast["W_enc"].abs().sum() > 0 and (fast["W_enc"] == 0).any()  # non-trivial and sparse


def test_scatter_outer_is_the_sparse_matrix_product_on_both_routes():
    g_ = torch.Generator().manual_seed(3)
    n, k, width, d = 40, 7, 50, 9
    idx = torch.stack([torch.randperm(width, generator=g_)[:k] for _ in range(n)])
    g = torch.randn(n, k, generator=g_, dtype=torch.float64)
    x = torch.randn(n, d, generator=g_, dtype=torch.float64)
    dense = torch.zeros(n, width, dtype=torch.float64).scatter(1, idx, g)
    torch.testing.assert_close(scatter_outer(idx, g, x, width), dense.T @ x)
    # the index_add route (other devices and dtypes) gives the same
    torch.testing.assert_close(scatter_outer(idx, g.float(), x.float().to(torch.bfloat16), width).double(),
                               dense.T @ x.to(torch.bfloat16).double(), rtol=2e-2, atol=2e-2)


def test_training_steps_with_sparse_grads_match_the_plain_path_including_auxk():
    """Several Adam steps of the real LayerState.step, with dead features so the AuxK loss is on."""
    torch.manual_seed(0)
    d, width = 16, 128
    cfg = TrainConfig(activation="topk", k=4, width=width, tokens=10_000, batch_size=64, dead_tokens=10, auxk_alpha=0.5)
    base = make(width=width, d=d, k=4, dtype=torch.float32)
    states = []
    for sparse in (True, False):
        dic = copy.deepcopy(base)
        dic.sparse_grads = sparse
        st = LayerState(6, dic, make_adam(dic, 1e-3), since_fired=torch.zeros(width, dtype=torch.long))
        st.since_fired[: width // 2] = 100  # half the features dead: AuxK active from the first step
        states.append(st)
    data = [(torch.randn(64, d), torch.randn(64, d)) for _ in range(5)]
    for x, y in data:
        stats = [st.step(x, y, 1e-3, 0.0, cfg) for st in states]
        assert stats[0]["dead"] > 0
        assert stats[0]["loss"] == pytest.approx(stats[1]["loss"], rel=1e-5)
    fast, plain = (dict(st.dictionary.named_parameters()) for st in states)
    for name in plain:
        torch.testing.assert_close(fast[name], plain[name], rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(fast["W_enc"], base.W_enc)  # it trained


def test_pre_buffer_is_reused_and_inference_does_not_touch_it():
    dic = make(dtype=torch.float32)
    x = torch.randn(20, 12)
    _, enc1 = dic.forward_sparse(x, training=True)
    buf = dic._pre_buffer
    assert buf is not None and enc1.pre.data_ptr() == buf.data_ptr()
    _, enc2 = dic.forward_sparse(x * 2, training=True)
    assert dic._pre_buffer.data_ptr() == buf.data_ptr()
    torch.testing.assert_close(enc2.pre, dic.pre_acts(x * 2).detach())
    with torch.no_grad():
        dic.forward_sparse(torch.randn(7, 12), training=True)  # no autograd: the plain path
    assert dic._pre_buffer.shape == (20, 96)
    assert "_pre_buffer" not in dic.state_dict()


def test_autocast_step_runs_the_sparse_path_in_low_precision_and_tracks_float32():
    """The GPU bf16 path (autocast) exercised on the CPU: the step's matmuls run in bfloat16, the weights and Adam
    state stay float32, and the result follows the float32 step closely."""
    torch.manual_seed(1)
    d, width = 32, 256
    cfg = TrainConfig(activation="topk", k=8, width=width, tokens=10_000, batch_size=128)
    base = make(width=width, d=d, k=8, dtype=torch.float32)
    runs = {}
    x, y = torch.randn(128, d), torch.randn(128, d)
    for autocast in (None, torch.bfloat16):
        dic = copy.deepcopy(base)
        st = LayerState(6, dic, make_adam(dic, 1e-3), since_fired=torch.zeros(width, dtype=torch.long), autocast=autocast)
        runs[autocast] = (st.step(x, y, 1e-3, 0.0, cfg), dic)
    (s32, d32), (s16, d16) = runs[None], runs[torch.bfloat16]
    assert d16.W_enc.dtype == torch.float32 and d16.W_enc.grad.dtype == torch.float32
    assert d16._pre_buffer is None  # under autocast the matmul is autocast's own (bf16), not the float32 buffer
    assert s16["loss"] == pytest.approx(s32["loss"], rel=0.05)
    for name in ("W_enc", "b_enc", "W_dec"):  # the gradients point the same way
        g16, g32 = getattr(d16, name).grad.flatten(), getattr(d32, name).grad.flatten()
        assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.98, name
    assert not torch.equal(d16.W_enc, base.W_enc)
