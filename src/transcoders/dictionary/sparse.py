"""Gradients of a TopK encoder from the selected entries only.

After a TopK, only k of a token's ``width`` pre-activations reach the loss, so the
gradient of ``pre = x @ W_enc.T + b_enc`` is zero everywhere else. Autograd through
``pre.topk`` still materialises that mostly-zero ``[N, width]`` gradient and runs two
dense matmuls on it (as costly as the forward). Here the forward computes ``pre``
without autograd and reads the selected entries through :func:`selected_preacts`,
whose backward works from the ``N·k`` non-zeros:

    dW_enc = Gᵀ x      G: [N, width] with G[n, idx[n, j]] = g[n, j]  (a sparse matmul)
    db_enc = Σ_n G[n]  (a bincount)
    dx     = Σ_j g[n, j] · W_enc[idx[n, j]]                            (an embedding bag)

EleutherAI's sparsify does the same with ``index_add_`` over ``N·k`` materialised outer
products; on the CPU a CSR matrix product is 3-10x faster (bench/throughput.py).
The plain path (autograd through the dense ``pre``) stays available for checking:
``Dictionary.sparse_grads = False``.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F


def scatter_outer(idx: torch.Tensor, g: torch.Tensor, x: torch.Tensor, width: int) -> torch.Tensor:
    """``Gᵀ x`` for the sparse ``G: [N, width]`` holding ``g[n, j]`` at ``(n, idx[n, j])``: ``[width, d]``.

    The entries of one row ``idx[n]`` must be distinct (TopK indices are).
    """
    n, k = idx.shape
    flat = idx.reshape(-1)
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        # sparsify's route: index_add_ of the outer products, a block of tokens at a time (≤ 2^26 elements each)
        out = torch.zeros(width, x.shape[1], dtype=x.dtype, device=x.device)
        step = max(1, (1 << 26) // (k * x.shape[1]))
        for s in range(0, n, step):
            outer = g[s : s + step].unsqueeze(2) * x[s : s + step].unsqueeze(1)
            out.index_add_(0, idx[s : s + step].reshape(-1), outer.reshape(-1, x.shape[1]).to(x.dtype))
        return out
    # CSR of Gᵀ ([width, N]): entries sorted by feature, then by token (a stable sort keeps token order)
    order = flat.argsort(stable=True)
    crow = torch.zeros(width + 1, dtype=torch.long, device=x.device)
    torch.cumsum(torch.bincount(flat, minlength=width), 0, out=crow[1:])
    tokens = torch.div(order, k, rounding_mode="floor")
    with warnings.catch_warnings():  # "CSR support is in beta": the one product used here is tested against dense
        warnings.simplefilter("ignore", UserWarning)
        gt = torch.sparse_csr_tensor(crow, tokens, g.reshape(-1)[order].to(x.dtype), (width, n), check_invariants=False)
    return gt @ x


class _SelectedPreacts(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, pre, idx):
        ctx.save_for_backward(x, weight, idx)
        return pre.gather(1, idx)

    @staticmethod
    def backward(ctx, g):
        x, weight, idx = ctx.saved_tensors
        width = weight.shape[0]
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = F.embedding_bag(idx, weight, per_sample_weights=g.to(weight.dtype), mode="sum")
        if ctx.needs_input_grad[1]:
            gw = scatter_outer(idx, g, x, width).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            gb = torch.zeros(width, dtype=weight.dtype, device=g.device)
            gb.index_add_(0, idx.reshape(-1), g.reshape(-1).to(weight.dtype))
        return gx, gw, gb, None, None


def selected_preacts(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pre: torch.Tensor,
                     idx: torch.Tensor) -> torch.Tensor:
    """``pre.gather(1, idx)`` where ``pre = x @ weight.T + bias`` was computed without autograd, differentiable in
    ``x``, ``weight`` and ``bias`` through the selected entries only. ``idx: [N, k]``, distinct within a row."""
    return _SelectedPreacts.apply(x, weight, bias, pre, idx)
