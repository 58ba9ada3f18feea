"""FLOP arithmetic shared by the benchmarks: this machine's measured fp32 matmul rate, and what one token costs."""

from __future__ import annotations

import time

import torch


def matmul_gflops(m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """Measured fp32 GFLOP/s of ``[m, k] @ [k, n]`` into a reused output (no allocation in the loop)."""
    a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
    for _ in range(3):
        torch.mm(a, b, out=out)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b, out=out)
        reps += 1
    return 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


def limit_shapes(d_model: int, d_mlp: int, widths: list[int], batch: int = 4096) -> dict[str, tuple[int, int, int]]:
    """The matmuls that bound our runs: the model's MLP and attention projections, and each width's encoder."""
    shapes = {"square 2048": (2048, 2048, 2048), f"model MLP {batch}x{d_model}x{d_mlp}": (batch, d_model, d_mlp),
              f"model attn {batch}x{d_model}x{d_model}": (batch, d_model, d_model)}
    for w in widths:
        shapes[f"encoder {batch}x{d_model}x{w}"] = (batch, d_model, w)
    return shapes


def forward_flops_per_token(adapter, last_layer: int, ctx: int) -> float:
    """FLOPs of the forward through blocks 0..last_layer for one token: 2 per weight, plus attention's scores and
    mixing (QKᵀ and AV over ~ctx/2 keys on average, causal)."""
    params = sum(p.numel() for i in range(last_layer + 1) for p in adapter.layer(i).parameters())
    attn = (last_layer + 1) * 2 * 2 * (ctx / 2) * adapter.n_heads * adapter.d_head
    return 2 * params + attn


def topk_step_dense_flops_per_token(d_in: int, width: int) -> float:
    """The dense part of a TopK dictionary step: the encoder forward ``x @ W_encᵀ`` (2·d·width). The rest (TopK,
    the k-row decoder and the k-row gradients) is O(k·d) per token."""
    return 2 * d_in * width
