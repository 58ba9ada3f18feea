"""Greater-than on the default model: every figure in greater-than.md comes from this script.

    .venv/bin/python docs/case-studies/greater_than.py --set runs/set-k32 [--out docs/case-studies/greater-than]

Prompts follow the paper's template, "The war lasted from the year 17YY to the year 17", for YY = 10..89. The
default model's tokenizer splits numbers into single digits, so the next token is the end year's *tens digit*
and the task is a comparison with the start year's tens digit d = YY // 10. The metric, per prompt, is

    PD = sum_{z > d} p(z) - sum_{z < d} p(z)

with p the model's next-token probabilities (full vocabulary softmax) of the ten digit tokens "0".."9". A model
that has learnt "the end year comes after the start year" puts its mass on z >= d, giving PD near P(digit) - p(d).
z = d is left out of both sums: 1745 -> 1748 and 1745 -> 1741 both start with that digit.

The circuit is explained through the linear stand-in the attributions need: the target
``logit:{z > d}-{z < d}`` (mean logit of the larger digits minus mean logit of the smaller ones).

Steps: (1) behaviour: PD per d, in the real model and with every MLP replaced by its transcoder; (2) the circuit
on "...1732 to the year 17": paths and an attribution graph, the strongest features and heads; (3) what those
features are: their activations across all prompts, their logit effects on the digits, de-embeddings; (4) causal
checks on every prompt: zero the top N features of that prompt's own circuit, against N random active features
at the same layers and tokens; zero the top heads' output at the last token.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from transcoders.circuits import weights as W  # noqa: E402
from transcoders.circuits.api import load_replacement  # noqa: E402
from transcoders.circuits.graph import attribution_graph, influence, prune, scores  # noqa: E402
from transcoders.circuits.interventions import Edit, random_edits, run_model  # noqa: E402
from transcoders.circuits.paths import find_paths, format_paths, merge_paths, strongest_nodes  # noqa: E402
from transcoders.circuits.targets import logit_target  # noqa: E402

TEMPLATE = "The war lasted from the year 17{:02d} to the year 17"
EXAMPLE = 32


def digit_ids(rep) -> list[int]:
    tok = rep.lm.tokenizer
    ids = [tok(str(z), add_special_tokens=False)["input_ids"] for z in range(10)]
    assert all(len(i) == 1 for i in ids), "this study assumes digits are single tokens"
    return [i[0] for i in ids]


def probs(rep, logits: torch.Tensor) -> torch.Tensor:
    cap = rep.adapter.logit_softcap
    return (torch.tanh(logits / cap) * cap if cap else logits).softmax(-1)


def pd_metric(p_digits: torch.Tensor, d: int) -> float:
    return float(p_digits[d + 1:].sum() - p_digits[:d].sum())


def group_target(fp, digits: list[int], d: int):
    return logit_target(fp, digits[d + 1:], digits[:d], label=f"mean logit(>{d}) - mean logit(<{d})")


@contextmanager
def zero_heads(rep, heads: list[tuple[int, int]], pos: int):
    """Zero these heads' outputs at token ``pos`` (Llama-style attention: the input of o_proj, head by head)."""
    d_head = rep.layers[0].W_O.shape[1]  # W_O: [heads, d_head, d_model]
    by_layer = defaultdict(list)
    for L, h in heads:
        by_layer[L].append(h)
    with ExitStack() as stack:
        for L, hs in by_layer.items():
            def pre(module, args, hs=hs):
                x = args[0].clone()
                for h in hs:
                    x[:, pos, h * d_head:(h + 1) * d_head] = 0
                return (x,) + args[1:]

            handle = rep.adapter.attn(L).o_proj.register_forward_pre_hook(pre)
            stack.callback(handle.remove)
        yield


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", required=True, help="a 30-layer transcoder set of the default model")
    ap.add_argument("--out", default="docs/case-studies/greater-than", help="folder for figures and results.json")
    ap.add_argument("--graph-rows", type=int, default=2048, help="feature rows of the attribution graph")
    ap.add_argument("--random", type=int, default=5, help="random-ablation draws per prompt and circuit size")
    ap.add_argument("--sizes", default="1,3,10,30", help="circuit sizes N to ablate")
    ap.add_argument("--head-random", type=int, default=20, help="random draws of as many heads")
    args = ap.parse_args()
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    rep = load_replacement(args.set)
    digits = digit_ids(rep)
    years = list(range(10, 90))
    all_layers = tuple(rep.tset.layers)
    results: dict = {"set": args.set, "template": TEMPLATE, "years": years}

    # ---------------------------------------------------------------- 1. behaviour
    print("## 1. Behaviour: PD per start-year tens digit d (10 prompts each)\n")
    ids_of = {yy: rep.tokenize(TEMPLATE.format(yy))[0] for yy in years}
    T = ids_of[years[0]].numel()
    assert all(i.numel() == T for i in ids_of.values())
    tok = rep.lm.tokenizer
    print("tokens:", " | ".join(f"{i}:{tok.decode([t])!r}" for i, t in enumerate(ids_of[EXAMPLE].tolist())))
    toks = [tok.decode([t]) for t in ids_of[EXAMPLE].tolist()]
    clean_p, spliced_p = {}, {}
    for yy in years:
        clean_p[yy] = probs(rep, run_model(rep, ids_of[yy]).logits)[digits]
        spliced_p[yy] = probs(rep, run_model(rep, ids_of[yy], splice=all_layers).logits)[digits]
    rows = []
    print("\n| d | PD (model) | P(z>d) | P(z=d) | P(z<d) | PD (all MLPs -> transcoders) |\n|---|---|---|---|---|---|")
    for d in range(1, 9):
        ys = [yy for yy in years if yy // 10 == d]
        pd_c = statistics.fmean(pd_metric(clean_p[y], d) for y in ys)
        pd_s = statistics.fmean(pd_metric(spliced_p[y], d) for y in ys)
        above = statistics.fmean(float(clean_p[y][d + 1:].sum()) for y in ys)
        same = statistics.fmean(float(clean_p[y][d]) for y in ys)
        below = statistics.fmean(float(clean_p[y][:d].sum()) for y in ys)
        rows.append({"d": d, "pd": pd_c, "above": above, "same": same, "below": below, "pd_spliced": pd_s})
        print(f"| {d} | {pd_c:+.3f} | {above:.3f} | {same:.3f} | {below:.3f} | {pd_s:+.3f} |")
    pd_clean = statistics.fmean(pd_metric(clean_p[y], y // 10) for y in years)
    pd_spliced = statistics.fmean(pd_metric(spliced_p[y], y // 10) for y in years)
    mass = statistics.fmean(float(clean_p[y].sum()) for y in years)
    print(f"\nmean over {len(years)} prompts: PD {pd_clean:+.3f} (model), {pd_spliced:+.3f} (every MLP replaced); "
          f"probability on digit tokens {mass:.3f}")
    results["behaviour"] = {"per_d": rows, "pd": pd_clean, "pd_spliced": pd_spliced, "digit_mass": mass}

    # ---------------------------------------------------------------- 2. the circuit on one prompt
    d0 = EXAMPLE // 10
    print(f"\n## 2. The circuit on {TEMPLATE.format(EXAMPLE)!r} (d = {d0})\n")
    fp = rep.trace([ids_of[EXAMPLE]], keep_bos=True)[0]  # as when the figures were made: BOS features as nodes
    target = group_target(fp, digits, d0)
    search = find_paths(fp, target, depth=3, branches=15)
    merged = merge_paths(search)
    print(f"target {target.label} = {search.root.value:.3f}\n\nstrongest paths:\n```\n{format_paths(search, 15)}\n```")
    nodes = strongest_nodes(merged, top=20)
    print("\nstrongest nodes (summed path attribution):\n```")
    print("\n".join(f"{v:+8.3f}  {c}" for c, v in nodes))
    print("```")
    t0 = time.perf_counter()
    g = attribution_graph(fp, target, max_feature_nodes=args.graph_rows)
    rep_score, comp_score = scores(g)
    node_mask, edge_mask, *_ = prune(g)
    infl = influence(g.adjacency, g.output_weight_vector())
    print(f"\nattribution graph ({g.n_features} of {g.n_active} active features as rows, "
          f"{time.perf_counter() - t0:.0f} s): replacement score {rep_score:.3f}, completeness {comp_score:.3f}, "
          f"{int(node_mask.sum())} nodes and {int(edge_mask.sum())} edges after pruning")
    # influence on the target of each feature row, strongest first
    feat_infl = infl[: g.n_features].clone()
    at_bos = g.features[:, 1] == 0
    total = float(infl[: g.token_slice.stop].sum())
    bos_share = float(feat_infl[at_bos].sum()) / total
    feat_infl[at_bos] = 0  # the same on every prompt (BOS sees only itself): constant terms, listed apart
    order = feat_infl.argsort(descending=True)[:12]
    graph_feats = [(int(g.features[i, 0]), int(g.features[i, 2]), int(g.features[i, 1]), float(feat_infl[i]),
                    float(g.activations[i])) for i in order]
    print(f"features at the BOS token carry {bos_share:.0%} of the influence (attention sinks: the same on every "
          "prompt, so constant terms); the most influential features elsewhere:\n```")
    print("\n".join(f"tc{L}[{f}]@{p}  influence {v:.3f}  activation {a:.2f}" for L, f, p, v, a in graph_feats))
    print("```")
    err_share = float(infl[g.error_slice].sum()) / total
    print(f"share of the influence carried by error nodes: {err_share:.2f}")
    results["example"] = {"target": target.label, "value": search.root.value,
                          "nodes": [(str(c), v) for c, v in nodes], "graph_features": graph_feats,
                          "replacement_score": rep_score, "completeness_score": comp_score, "error_share": err_share,
                          "bos_share": bos_share}

    # what the strongest head moves: the contributions to its (pulled-back) input at the source token
    heads_ex = [c for c, v in nodes if c.kind == "attn" and v > 0][:1]
    head_sources = []
    for h in heads_ex:
        con = search.contributions[(search.root.comp, h)]
        parts = [(f"tc{L}[{int(f)}]@{h.pos}", (L, int(f)), float(v)) for L, (idx, cv) in con.features.items()
                 for f, v in zip(idx, cv)]
        parts.sort(key=lambda x: -abs(x[2]))
        print(f"\nwhat {h} moves from token {h.pos} ({toks[h.pos]!r}) to the last token ({con.value:+.3f} in all): "
              f"token embedding {con.embed:+.3f}, errors {sum(con.error.values()):+.3f}; strongest features: "
              + ", ".join(f"{n} {v:+.3f}" for n, _, v in parts[:8]))
        head_sources = [(L, f, h.pos) for _, (L, f), v in parts[:4]]
    results["example"]["heads"] = [str(h) for h in heads_ex]

    # ---------------------------------------------------------------- 3. what the features are
    feats = [(c.layer, c.index, c.pos) for c, v in nodes if c.kind == "feature"][:6] + head_sources
    print("\n## 3. The circuit's features\n")
    acts = {}
    for yy in years:
        run = run_model(rep, ids_of[yy], read_layers=tuple(sorted({L for L, _, _ in feats})))
        acts[yy] = {(L, f, p): float(rep.tset[L].encode(run.mlp_in[L][p])[f]) for L, f, p in feats}
    print("| feature | mean activation by d = 1..8 | direct effect on logits of 0..9 per unit activation | "
          "top de-embedding tokens |\n|---|---|---|---|")
    feature_rows = []
    for L, f, p in feats:
        by_d = [statistics.fmean(acts[y][(L, f, p)] for y in years if y // 10 == d) for d in range(1, 9)]
        # direct effect on the digit logits per unit of activation, with the example prompt's final-norm scale
        eff = (fp.final_norm(W.decoder_direction(rep, L, f), T - 1) @ rep.W_U[:, digits]).tolist()
        de = W.deembedding(rep, L, f, k=5).top
        feature_rows.append({"feature": f"tc{L}[{f}]@{p}", "by_d": by_d, "digit_effects": eff,
                             "deembedding": [(tok.decode([t]), s) for t, s in de]})
        print(f"| tc{L}[{f}]@{p} ({toks[p]!r}) | {' '.join(f'{a:.2f}' for a in by_d)} | "
              f"{' '.join(f'{e:+.1f}' for e in eff)} | {', '.join(repr(tok.decode([t])) for t, _ in de)} |")
    results["features"] = feature_rows

    # ---------------------------------------------------------------- 4. causal checks on every prompt
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"\n## 4. Causal checks on all {len(years)} prompts\n")
    rng = random.Random(0)
    pd_clean_all, pd_circ = [], defaultdict(list)
    pd_rand = defaultdict(lambda: defaultdict(list))  # [n][draw] -> PD per prompt
    head_value = defaultdict(float)
    n_feats = []
    for yy in years:
        d = yy // 10
        fpy = rep.trace([ids_of[yy]], keep_bos=True)[0]
        m = merge_paths(find_paths(fpy, group_target(fpy, digits, d), depth=3, branches=15))
        supporting = sorted(((c, v) for c, v in m.nodes.items() if c.kind == "feature" and v > 0), key=lambda cv: -cv[1])
        n_feats.append(len(supporting))
        for c, v in m.nodes.items():
            if c.kind == "attn" and c.dest == T - 1:
                head_value[(c.layer, c.index)] += v / len(years)
        pd_clean_all.append(pd_metric(clean_p[yy], d))
        for n in sizes:
            edits = [Edit(c.layer, c.index, c.pos, "zero") for c, _ in supporting[:n]]
            pd_circ[n].append(pd_metric(probs(rep, run_model(rep, ids_of[yy], edits).logits)[digits], d))
            for draw in range(args.random):
                drawn = random_edits(fpy, edits, rng)
                pd_rand[n][draw].append(pd_metric(probs(rep, run_model(rep, ids_of[yy], drawn).logits)[digits], d))
    base = statistics.fmean(pd_clean_all)
    print(f"supporting features found per prompt (positive path attribution): median {statistics.median(n_feats)}, "
          f"min {min(n_feats)}\n")
    print("| zeroed | PD | change | share of PD removed |\n|---|---|---|---|")
    print(f"| nothing | {base:+.3f} | | |")
    ablation = []
    for n in sizes:
        draws = [statistics.fmean(v) for v in pd_rand[n].values()]  # each draw's mean over the prompts
        c, r = statistics.fmean(pd_circ[n]), statistics.fmean(draws)
        r_sd = statistics.stdev(draws)
        ablation.append({"n": n, "circuit": c, "random": r, "random_sd": r_sd})
        print(f"| top {n} circuit features (each prompt's own; all of them where it has fewer) | {c:+.3f} | "
              f"{c - base:+.3f} | {(base - c) / base:.0%} |")
        print(f"| {n} random active features, same layers and tokens ({args.random} draws; ± their sd) | {r:+.3f} ± {r_sd:.3f} | "
              f"{r - base:+.3f} | {(base - r) / base:.0%} |")
    heads = sorted(head_value.items(), key=lambda kv: -kv[1])[:6]
    print("\nheads writing to the last token, by mean path attribution over the prompts:")
    print(", ".join(f"L{L}.H{h} {v:+.3f}" for (L, h), v in heads))
    top_heads = [lh for lh, v in heads if v > 0][:3]
    pd_heads = []
    with zero_heads(rep, top_heads, T - 1):
        for yy in years:
            pd_heads.append(pd_metric(probs(rep, run_model(rep, ids_of[yy]).logits)[digits], yy // 10))
    rand_heads = []
    for _ in range(args.head_random):
        pick = rng.sample([(L, h) for L in range(rep.n_layers) for h in range(rep.n_heads) if (L, h) not in top_heads],
                          len(top_heads))
        with zero_heads(rep, pick, T - 1):
            rand_heads.append(statistics.fmean(pd_metric(probs(rep, run_model(rep, ids_of[yy]).logits)[digits],
                                                         yy // 10) for yy in years))
    ph, rh = statistics.fmean(pd_heads), statistics.fmean(rand_heads)
    print(f"\nzeroing heads {', '.join(f'L{L}.H{h}' for L, h in top_heads)} at the last token: PD {base:+.3f} -> {ph:+.3f}; "
          f"{len(top_heads)} random heads ({args.head_random} draws): mean {rh:+.3f} ± {statistics.stdev(rand_heads):.3f}, "
          f"median {statistics.median(rand_heads):+.3f}, lowest {min(rand_heads):+.3f}")
    results["causal"] = {"pd": base, "ablation": ablation, "heads": [(f"L{L}.H{h}", v) for (L, h), v in heads],
                         "pd_heads_zeroed": ph, "pd_random_heads": rh, "pd_random_heads_each": rand_heads,
                         "supporting_median": statistics.median(n_feats)}

    # ---------------------------------------------------------------- figures
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), gridspec_kw={"width_ratios": [1.2, 1, 1]})
    ax = axes[0]
    grid = torch.stack([clean_p[yy] for yy in years])  # [80, 10]
    ax.imshow(grid.T, aspect="auto", origin="lower", cmap="viridis", extent=(9.5, 89.5, -0.5, 9.5))
    ax.plot(years, [yy // 10 for yy in years], "w--", lw=1)
    ax.set(xlabel="start year 17YY", ylabel="predicted tens digit", title="P(next digit) after '... to the year 17'")
    ax = axes[1]
    xs = range(len(sizes))
    ax.bar([x - 0.2 for x in xs], [a["circuit"] for a in ablation], 0.4, label="circuit features zeroed")
    ax.bar([x + 0.2 for x in xs], [a["random"] for a in ablation], 0.4, yerr=[a["random_sd"] for a in ablation],
           label="random active features zeroed")
    ax.axhline(base, color="k", ls=":", label="clean")
    ax.set_xticks(list(xs), [f"N = {n}" for n in sizes])
    ax.set(ylabel="mean PD over 80 prompts", title="Causal check")
    ax.legend(fontsize=8, loc="lower left")
    ax = axes[2]
    shown = [r for r in feature_rows if r["feature"].endswith(f"@{T - 1}")]
    eff = torch.tensor([r["digit_effects"] for r in shown])
    eff = eff - eff.mean(1, keepdim=True)  # which digits each feature favours, relative to the others
    lim = float(eff.abs().max())
    ax.imshow(eff, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(len(shown)), [r["feature"] for r in shown], fontsize=8)
    ax.set_xticks(range(10), [str(z) for z in range(10)])
    ax.set(xlabel="next digit", title=f"Circuit features' direct logit effects\n(centred per feature; prompt 17{EXAMPLE})")
    fig.tight_layout()
    fig.savefig(out / "greater-than.png", dpi=110)
    results["seconds"] = time.perf_counter() - t_start
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out / 'greater-than.png'} and {out / 'results.json'} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
