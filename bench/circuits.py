"""Benchmark: time and peak memory of circuit analysis on the default model with a full 30-layer transcoder set.

    .venv/bin/python bench/circuits.py [--set runs/set] [--prompt TEXT] [--threads N]

Phases, on one ~20-token prompt: loading, the traced forward (everything later reads its cache), the paper's path
search (depth 3, 15 branches), and attribution graphs with the default cap of 4,096 feature rows and with every
active feature. Peak memory is the process's resident set size above what it held before the phase (sampled
every 2 ms). Ratios are against one plain model forward of the same prompt, measured in the same run.
Without --set the script builds a random set with the default set's shapes (width 4608, TopK k=32, all layers):
the work done depends on shapes and k, not on what the features mean.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "peers"))
from peak import Peak  # noqa: E402

PROMPT = "The war lasted from the year 1732 to the year 1799, and the treaty that ended it was signed in"


def random_set(lm, width: int = 4608, k: int = 32):
    from transcoders.circuits import TranscoderSet
    from transcoders.dictionary import Dictionary, DictionaryConfig

    a = lm.adapter
    tcs = {}
    for L in range(a.n_layers):
        cfg = DictionaryConfig(d_in=a.d_model, d_out=a.d_model, width=width, k=k, layer=L, model="default",
                               hook_in=f"blocks.{L}.mlp.in", hook_out=f"blocks.{L}.mlp.out")
        d = Dictionary(cfg)
        d.reset_parameters(torch.Generator().manual_seed(L))
        tcs[L] = d.eval().requires_grad_(False)
    return TranscoderSet(tcs, model="default")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", default="", help="transcoder set folder (default: random weights, default-set shapes)")
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--tokens", type=int, default=20, help="cut the prompt to this many tokens")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--skip-full", action="store_true", help="skip the uncapped attribution graph")
    ns = p.parse_args()
    if ns.threads:
        torch.set_num_threads(ns.threads)
    from transcoders.circuits import Replacement, TranscoderSet
    from transcoders.circuits.graph import attribution_graph, prune, scores
    from transcoders.circuits.graph_json import attribution_graph_json
    from transcoders.circuits.paths import find_paths, merge_paths
    from transcoders.circuits.targets import logit_target
    from transcoders.models import load_model

    rows = []
    with Peak() as m:
        lm = load_model("default")
        tset = TranscoderSet.load(ns.set) if ns.set else random_set(lm)
        rep = Replacement(lm, tset)
    rows.append(("load model + set", m.seconds, m.mib, ""))
    ids = rep.tokenize(ns.prompt)[0][: ns.tokens]
    with torch.no_grad():
        lm.model(input_ids=ids[None])  # warm-up
        t0 = time.perf_counter()
        for _ in range(3):
            lm.model(input_ids=ids[None])
        fwd = (time.perf_counter() - t0) / 3
    rows.append(("plain model forward (baseline)", fwd, float("nan"), "1.0x"))
    with Peak() as m:
        fp = rep.trace([ids])[0]
    rows.append(("trace (one forward + transcoders)", m.seconds, m.mib, f"{m.seconds / fwd:.1f}x"))
    n_active = sum(t.acts_pos.numel() for t in fp.layers)
    target = logit_target(fp, int(fp.logits().argmax()))
    with Peak() as m:
        search = find_paths(fp, target, depth=3, branches=15)
        merge_paths(search)
    rows.append(("path search, depth 3, 15 branches", m.seconds, m.mib, f"{m.seconds / fwd:.1f}x"))
    caps = [4096] + ([None] if not ns.skip_full else [])
    for cap in caps:
        with Peak() as m:
            g = attribution_graph(fp, max_feature_nodes=cap)
            attribution_graph_json(g, "bench", prune(g), scores(g))
        label = f"attribution graph, {g.n_features} of {n_active} feature rows"
        rows.append((label, m.seconds, m.mib, f"{m.seconds / fwd:.1f}x"))
    print(f"default model, {'set ' + ns.set if ns.set else 'random set (width 4608, k=32, 30 layers)'}, "
          f"{ids.numel()} tokens, {n_active} active features, {torch.get_num_threads()} threads")
    print(f"{'phase':<48} {'seconds':>9} {'peak MiB':>9} {'vs forward':>11}")
    for name, s, mib, ratio in rows:
        print(f"{name:<48} {s:9.2f} {mib:9.0f} {ratio:>11}")


if __name__ == "__main__":
    main()
