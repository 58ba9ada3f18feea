"""Side by side with circuit-tracer: the attribution graph of the same prompt, set and row cap, each tool in a fresh
process of its own, alternating.

    .venv/bin/python bench/compare_circuit_tracer.py [--set DIR] [--prompt TEXT] [--rows 4096] [--repeats 2]

1. The set: --set (a set of the default model with every layer, not TopK: circuit-tracer has no TopK), else a random
   set with the default set's shapes (width 4608, all 30 layers) as JumpReLU, its thresholds set from 2,048 held-out
   tokens so that about 32 features fire per token (what a trained k=32 set does). The work depends on shapes and
   sparsity, not on what the features mean.
2. The set exported for circuit-tracer (bench/out/compare_circuit_tracer/ct), the released circuit-tracer 0.5.0 in
   its own environment (peers/envs.py), nnsight backend (the only one that loads a model it does not list).
3. Each run, in a fresh process: load the model and the set (not timed), then build the graph with --rows feature
   rows, each tool at its own default batch size (ours 64 rows per backward pass, circuit-tracer 512: --their-batch
   changes it); wall time,
   rows, and peak resident memory above what the process held before (sampled every 2 ms). Runs alternate,
   --repeats times each; medians and ratios are printed and written to bench/out/compare_circuit_tracer/results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "peers"))
import envs  # noqa: E402
from peak import Peak  # noqa: E402

OUT = ROOT / "bench" / "out" / "compare_circuit_tracer"
PROMPT = "The war lasted from the year 1732 to the year 1799, and the treaty that ended it was signed in"


def random_jumprelu_set(out: Path, width: int = 4608, l0: int = 32) -> Path:
    """Random encoders and decoders of the default set's shapes, thresholds from held-out activations."""
    from transcoders.data.packing import load_split
    from transcoders.dictionary import Dictionary, DictionaryConfig, save_dictionary
    from transcoders.dictionary import runs as R
    from transcoders.models import capture, load_model

    lm = load_model("default")
    a = lm.adapter
    ids = load_split("default", lm.tokenizer, "eval", ctx_len=128, max_tokens=2048).tokens[:16]
    with torch.no_grad():
        acts = capture(lm, ids, [f"blocks.{L}.mlp.in" for L in range(a.n_layers)])
    for L in range(a.n_layers):
        cfg = DictionaryConfig(d_in=a.d_model, d_out=a.d_model, width=width, activation="jumprelu", model="default",
                               layer=L, hook_in=f"blocks.{L}.mlp.in", hook_out=f"blocks.{L}.mlp.out")
        d = Dictionary(cfg)
        d.reset_parameters(torch.Generator().manual_seed(L))
        x = acts[f"blocks.{L}.mlp.in"][:, 1:].reshape(-1, a.d_model)  # BOS positions aside
        with torch.no_grad():
            d.threshold.copy_(d.pre_acts(x).quantile(1 - l0 / width, dim=0).clamp_min(0))
        save_dictionary(d, R.layer_dir(out, L))
    return out


def ours(set_dir: str, ids: list[int], rows: int) -> dict:
    """One run of ours (called in a fresh process by --worker)."""
    from transcoders.circuits import Replacement, TranscoderSet
    from transcoders.circuits.graph import attribution_graph
    from transcoders.models import load_model

    rep = Replacement(load_model("default"), TranscoderSet.load(set_dir))
    fp = rep.trace(torch.tensor(ids))[0]
    with Peak() as m:
        g = attribution_graph(fp, max_feature_nodes=rows)
    return {"seconds": m.seconds, "peak_mib": m.mib, "rows": g.n_features, "active": g.n_active}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="", help="a set folder of the default model (default: random JumpReLU weights)")
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--rows", type=int, default=4096, help="feature rows of the graph (both tools)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--their-batch", type=int, default=512, help="circuit-tracer's rows per backward pass (its default)")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:  # one of our runs, in its own process
        print(json.dumps(ours(args.set, json.loads(args.worker), args.rows)))
        return

    from transcoders.circuits.replacement import prompt_ids
    from transcoders.dictionary import runs as R
    from transcoders.dictionary.interop import export_runs
    from transcoders.models import load_model
    from transcoders.models.named import default_model_dir

    OUT.mkdir(parents=True, exist_ok=True)
    set_dir = Path(args.set) if args.set else OUT / "set"
    if not args.set and not R.layer_runs(set_dir):
        print("building a random JumpReLU set of the default set's shapes...", flush=True)
        random_jumprelu_set(set_dir)
    (ct,) = export_runs(R.run_dirs([set_dir]), "circuit-tracer", OUT / "ct")
    ids = prompt_ids(load_model("default"), args.prompt).tolist()
    envs.ensure("circuit-tracer")
    results: dict[str, list[dict]] = {"ours": [], "circuit-tracer": []}
    for r in range(args.repeats):
        out = subprocess.run([sys.executable, __file__, "--set", str(set_dir), "--rows", str(args.rows),
                              "--worker", json.dumps(ids)], check=True, capture_output=True, text=True).stdout
        results["ours"].append(json.loads(out.strip().splitlines()[-1]))
        reply = envs.run("circuit-tracer", "circuit_tracer_check.py", {"attribute": {
            "model": str(default_model_dir()), "set": str(ct), "ids": ids, "out": str(OUT / "theirs.safetensors"),
            "max_feature_nodes": args.rows, "batch_size": args.their_batch}})
        results["circuit-tracer"].append(reply["attribute"])
        print(f"run {r + 1}: ours {results['ours'][-1]['seconds']:.1f} s / {results['ours'][-1]['peak_mib']:.0f} MiB, "
              f"circuit-tracer {reply['attribute']['seconds']:.1f} s / {reply['attribute']['peak_mib']:.0f} MiB", flush=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("seconds", "peak_mib")} for k, v in results.items()}
    print(f"\ndefault model, {'set ' + str(args.set) if args.set else 'random JumpReLU set, width 4608, L0 ~32, 30 layers'}, "
          f"{len(ids)} tokens, {results['ours'][0]['active']:,} active features, {args.rows} rows cap, "
          f"{torch.get_num_threads()} threads, circuit-tracer batch {args.their_batch}, medians of {args.repeats}")
    print(f"{'':<16} {'seconds':>9} {'peak MiB':>9} {'rows':>7}")
    for k in ("ours", "circuit-tracer"):
        print(f"{k:<16} {med[k]['seconds']:9.1f} {med[k]['peak_mib']:9.0f} {results[k][0]['rows']:7}")
    speed = med["circuit-tracer"]["seconds"] / med["ours"]["seconds"]
    memory = med["ours"]["peak_mib"] / med["circuit-tracer"]["peak_mib"]
    print(f"ours: {speed:.2f}x faster, {memory:.2f}x the peak memory")
    (OUT / "results.json").write_text(json.dumps({"runs": results, "medians": med, "speedup": speed,
                                                  "memory_ratio": memory, "ids": ids, "rows": args.rows}, indent=1))


if __name__ == "__main__":
    main()
