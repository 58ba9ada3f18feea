"""Evaluation from the cached residual vs full forwards, in one run (so both share the machine's load).

    .venv/bin/python bench/eval_start.py [--model default] [--layer 15] [--tokens 4096] [--run RUN] [--threads 0]

`transcoders eval` runs a clean pass, a spliced pass and mean- and zero-ablated passes. By default the last three
start at the replaced layer from the residual stream the clean pass recorded there, skipping the blocks below
(`--full-forwards` runs them from the embeddings). This prints the wall time of each way, the speed-up, the
fraction of block compute the skip saves in theory (3 of 4 passes skip `layer` of `n_layers` blocks), and the
largest difference between the two ways' numbers (should be ~1e-7: the same computation).

Without --run, an untrained TopK transcoder of width 8 x d_model at --layer is evaluated (its numbers mean nothing;
the timing is what is measured).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--layer", type=int, default=None, help="the replaced layer (default: the middle one)")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--ctx-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--run", default=None, help="a trained run to evaluate instead of an untrained transcoder")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transcoders.dictionary import Dictionary, DictionaryConfig, save_dictionary
    from transcoders.evaluation import evaluate
    from transcoders.models import load_model

    lm = load_model(args.model)
    a = lm.adapter
    layer = a.n_layers // 2 if args.layer is None else args.layer
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            cfg = DictionaryConfig(d_in=a.d_model, d_out=a.d_model, width=8 * a.d_model, activation="topk", k=32,
                                   model=lm.name, layer=layer, hook_in=f"blocks.{layer}.mlp.in",
                                   hook_out=f"blocks.{layer}.mlp.out")
            d = Dictionary(cfg)
            d.reset_parameters()
            run = str(Path(tmp) / "tc")
            save_dictionary(d, run)
        kw = dict(lm=lm, tokens=args.tokens, ctx_len=args.ctx_len, batch=args.batch, progress=False, write=False)
        evaluate([run], **{**kw, "tokens": args.ctx_len * args.batch})  # warm-up (and the corpus' token cache)
        times, results = {}, {}
        for name, full in (("full forwards", True), ("from the cached residual", False), ("full forwards (again)", True)):
            start = time.perf_counter()
            results[name] = evaluate([run], full_forwards=full, **kw)["fidelity"]
            times[name] = time.perf_counter() - start
    full_t = (times["full forwards"] + times["full forwards (again)"]) / 2
    fast_t = times["from the cached residual"]
    keys = ("ce_clean", "ce_spliced", "ce_mean_ablated", "ce_zero_ablated", "kl_clean_spliced")
    diff = max(abs(results["full forwards"][k] - results["from the cached residual"][k]) for k in keys)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; {args.model} ({a.n_layers} layers), "
          f"layer {layer}, {args.tokens} tokens")
    for name, t in times.items():
        print(f"  {name:<26} {t:8.1f} s")
    skipped = 3 * layer / (4 * a.n_layers)
    print(f"  speed-up                   {full_t / fast_t:8.2f}x  (blocks skipped: {skipped:.0%} of the block compute; "
          "the embeddings, final norm and unembedding always run)")
    print(f"  largest difference in CE / KL between the two ways: {diff:.2e}")


if __name__ == "__main__":
    main()
