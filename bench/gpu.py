"""Training throughput and peak GPU memory on a GPU machine (bench/gpu.sh runs this; any device works for a dry run).

    python bench/gpu.py [--device cuda] [--large MODEL] [--tokens 4000000] [--large-tokens 1000000]

Runs, each as `transcoders train` does (model loading and corpus reading excluded from the timing):
  1. the default model, layer 6, TopK k=32, width 18432 (the sparsify comparison's wide configuration);
  2. the default model, all 30 layers from one model pass, width 4608 (a full transcoder set);
  3. with --large (a local folder or a Hugging Face id already in the cache): its middle layer, 8x width.
Prints tokens/s, the harvest's share of the time and peak GPU memory (torch.cuda.max_memory_allocated).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from transcoders.training import TrainConfig
from transcoders.training import trainer as T


def measure(cfg: TrainConfig) -> dict:
    """Train ``cfg``; tokens/s over the training loop (first step to last), and the peak device memory."""
    cuda = cfg.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    marks: dict[str, float] = {}
    original_run = T.Trainer.run

    def timed_run(self, progress=True):  # time the loop only: loading the model and the corpus are not throughput
        marks["start"] = time.perf_counter()
        try:
            return original_run(self, progress=progress)
        finally:
            if cuda:
                torch.cuda.synchronize()
            marks["end"] = time.perf_counter()

    T.Trainer.run = timed_run
    try:
        T.train(cfg, overwrite=True, progress=False)
    finally:
        T.Trainer.run = original_run
    seconds = marks["end"] - marks["start"]
    return {"tokens": cfg.tokens, "seconds": round(seconds, 2), "tokens_per_s": round(cfg.tokens / seconds),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--tokens", type=int, default=4_000_000, help="tokens for the default model's runs")
    ap.add_argument("--large", default="", help="a larger model (local folder or cached Hugging Face id)")
    ap.add_argument("--large-tokens", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--set-width", type=int, default=4608)
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: no CUDA device here: run on a GPU machine, or pass --device cpu for a dry run")
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    out = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    common = dict(device=args.device, dtype=args.dtype, batch_size=args.batch_size, k=32, ctx_len=128,
                  checkpoint_every=10**9, forward_batch=64 if args.device.startswith("cuda") else 32)
    runs = [("default model, layer 6, width 18432",
             TrainConfig(layers="6", width=18432, tokens=args.tokens, out=str(out / "l6"), **common)),
            (f"default model, all layers, width {args.set_width}",
             TrainConfig(layers="all", width=args.set_width, tokens=args.tokens // 4, out=str(out / "set"), **common))]
    if args.large:
        from transformers import AutoConfig

        n = AutoConfig.from_pretrained(args.large).num_hidden_layers
        runs.append((f"{args.large}, layer {n // 2}, 8x width",
                     TrainConfig(model=args.large, layers=str(n // 2), expansion=8, tokens=args.large_tokens,
                                 out=str(out / "large"), **common)))
    rows = []
    for name, cfg in runs:
        res = measure(cfg)
        rows.append({"run": name, **res})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'run':<48} {'tokens':>10} {'seconds':>8} {'tokens/s':>10} {'peak GiB':>9}")
    for r in rows:
        print(f"{r['run']:<48} {r['tokens']:>10,} {r['seconds']:>8} {r['tokens_per_s']:>10,} {str(r['peak_gib']):>9}")


if __name__ == "__main__":
    main()
