"""Throughput of harvesting and training, against this machine's measured fp32 matmul peak.

    .venv/bin/python bench/throughput.py [--model default] [--layer 6] [--tokens 65536] [--width 4608] [--threads 0]
                                         [--harvest-only]

Prints, in one run (so the figures share the machine's current load):
  * fp32 matmul GFLOP/s for the shapes that matter (the best one is "the peak");
  * (a) activation harvest on --model (a named model: `transcoders models`) up to --layer (default: 6 for the
        default model, else the middle layer), only those blocks loaded: tokens/s, fraction of peak, peak memory;
  * (b) training a --width transcoder (TopK k=32, and ReLU + L1) on those activations:
        tokens/s and fraction of peak, counting the dense matmuls only (TopK: the encoder forward;
        ReLU: encoder, decoder and their gradients). The shapes and FLOP counts are in bench/flops.py.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from flops import forward_flops_per_token, limit_shapes, matmul_gflops, topk_step_dense_flops_per_token


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--harvest-only", action="store_true", help="skip (b), the training steps")
    ap.add_argument("--tokens", type=int, default=65536, help="tokens harvested (and trained on, per activation)")
    ap.add_argument("--width", type=int, default=0, help="dictionary width (0: 8 x d_model)")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transcoders.data.activations import ActivationSource
    from transcoders.data.packing import load_split
    from transcoders.models import load_model, model_layer_count
    from transcoders.training import TrainConfig
    from transcoders.training.trainer import LayerState, Trainer

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    layer = args.layer if args.layer is not None else 6 if args.model == "default" else model_layer_count(args.model) // 2
    args.layer = layer
    lm = load_model(args.model, n_layers=layer + 1)  # only the blocks the harvest runs
    a = lm.adapter
    d, F_ = a.d_model, args.width or 8 * a.d_model
    B = args.batch_size

    # ---------------------------------------------------------------- peak
    shapes = limit_shapes(d, a.d_mlp, [F_], B) | {f"dense enc-grad {d}x{B}x{F_}": (d, B, F_)}
    gf = {name: matmul_gflops(*s) for name, s in shapes.items()}
    peak = max(gf.values())
    print("\nfp32 matmul GFLOP/s")
    for name, v in gf.items():
        print(f"  {name:<28} {v:8.1f}")
    print(f"  peak (best of the above)     {peak:8.1f}")

    # ------------------------------------------------------------- harvest
    ctx = 128
    contexts = load_split("default", lm.tokenizer, "train", ctx_len=ctx, max_tokens=args.tokens + 64 * ctx)
    src = ActivationSource(lm, contexts, [args.layer], chunk_contexts=args.tokens // ctx, forward_batch=32)
    tokens = src.chunk_tokens(0)
    src.harvest(tokens[:32])  # warm-up
    t0 = time.perf_counter()
    pairs = src.harvest(tokens)
    dt = time.perf_counter() - t0
    n_tok = tokens.numel()
    harvest_flop = n_tok * forward_flops_per_token(a, args.layer, ctx)
    h_tps = n_tok / dt
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    print(f"\n(a) harvest, {args.model}, layers 0-{args.layer}, ctx {ctx}, batch 32 contexts")
    print(f"  {h_tps:10.0f} tokens/s   {harvest_flop / dt / 1e9:7.1f} GFLOP/s   {harvest_flop / dt / 1e9 / peak:6.1%} of peak"
          f"   (peak resident memory so far {rss:.2f} GiB)")
    if args.harvest_only:
        return

    # -------------------------------------------------------------- training
    x, y = pairs[args.layer]
    n = x.shape[0] // B * B
    print(f"\n(b) training on {n:,} harvested tokens, width {F_}, batch {B}")
    for activation, useful in (("topk", topk_step_dense_flops_per_token(d, F_)), ("relu", 10 * d * F_)):
        # topk: the dense part is the encoder forward 2dF; TopK, the decoder and the gradients touch only k rows
        # relu: encoder forward + its weight gradient 4dF + dense decoder forward 2Fd + gradients for W_dec and z 4Fd
        cfg = TrainConfig(activation=activation, k=args.k, width=F_, tokens=n, batch_size=B)
        tr = Trainer(cfg, lm, None, [args.layer], out=None)
        st: LayerState = tr._new_state(args.layer)
        tr.states = {args.layer: st}
        tr.init_from_data({args.layer: (x, y)})
        st.step(x[:B], y[:B], cfg.lr, cfg.sparsity_coefficient, cfg)  # warm-up
        t0 = time.perf_counter()
        stats = None
        for s in range(0, n, B):
            stats = st.step(x[s : s + B], y[s : s + B], cfg.lr, cfg.sparsity_coefficient, cfg)
        dt = time.perf_counter() - t0
        tps = n / dt
        print(f"  {activation:<5} {tps:10.0f} tokens/s   {useful * tps / 1e9:7.1f} GFLOP/s   "
              f"{useful * tps / 1e9 / peak:6.1%} of peak"
              f"   (last batch: L0 {stats['l0']:.1f}, FVU {stats['fvu']:.3f})")
        if activation == "topk":
            e2e = 1 / (1 / h_tps + 1 / tps)
            print(f"  topk harvest + training, one after the other: {e2e:.0f} tokens/s end to end")


if __name__ == "__main__":
    main()
