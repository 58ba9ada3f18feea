"""Training a cross-layer transcoder against a per-layer set of the same total width, in one run.

    .venv/bin/python bench/clt_training.py [--model default] [--layers all] [--tokens 65536] [--expansion 2]
                                           [--threads 0]

Both train on the same activations: the model pass runs once, into an on-disk activation cache
(`--cache-activations`), before either is timed, so the figures compare training alone. Each variant then trains in
its own process (one after the other, never together), which reports the time of its training loop (the sum of the
`sec` column of its train log: batches read from the cache and optimiser steps; not loading the model or the first
batch) and its peak memory (ru_maxrss). Printed: training tokens/s of each, the CLT's speed as a fraction of the
set's, and each one's peak memory, with the CLT's weights and Adam state from the formula (`training/clt.py`). Same
total width: --expansion x d_model features per layer in both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, resource, sys
from pathlib import Path
from transcoders.training import TrainConfig, train
cfg = TrainConfig(**json.loads(sys.argv[1]))
train(cfg, progress=False)
log = [json.loads(line) for line in (Path(cfg.out) / "train_log.jsonl").read_text().splitlines()]
print(json.dumps({"seconds": sum(e["sec"] for e in log), "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def run(cfg: dict) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--layers", default="all")
    ap.add_argument("--tokens", type=int, default=65536, help="training tokens of each variant")
    ap.add_argument("--expansion", type=int, default=2, help="features per layer = expansion x d_model, in both")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    from transcoders.models import model_layer_count
    from transcoders.training import parse_layers
    from transcoders.training.clt import clt_bytes

    n = len(parse_layers(args.layers, model_layer_count(args.model)))
    with tempfile.TemporaryDirectory() as tmp:
        base = dict(model=args.model, layers=args.layers, tokens=args.tokens, expansion=args.expansion, k=args.k,
                    threads=args.threads, cache_activations=str(Path(tmp) / "cache"), checkpoint_every=10**9)
        t0 = time.perf_counter()
        run({**base, "out": str(Path(tmp) / "warm")})  # fills the cache with every chunk the variants read
        warm = time.perf_counter() - t0
        rows = {}
        for kind in ("transcoder", "clt"):
            rows[kind] = run({**base, "kind": kind, "out": str(Path(tmp) / kind)})
    from transcoders.models import load_model

    d = load_model(args.model, n_layers=1).adapter.d_model
    width = args.expansion * d
    print(f"{args.model}: {n} layers, d_model {d}, {width:,} features per layer, k {args.k}, {args.tokens:,} tokens "
          f"(a first run harvests into the cache: {warm:.0f} s, not counted)")
    for kind, r in rows.items():
        name = "per-layer set" if kind == "transcoder" else "cross-layer transcoder"
        print(f"  {name:<24} {args.tokens / r['seconds']:8,.0f} tokens/s   peak memory {r['peak_gib']:5.2f} GiB")
    print(f"  CLT speed / set speed: {rows['transcoder']['seconds'] / rows['clt']['seconds']:.2f}; CLT weights + Adam "
          f"state by the formula: {clt_bytes(width, d, n) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
