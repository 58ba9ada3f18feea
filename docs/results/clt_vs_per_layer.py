"""A cross-layer transcoder against a per-layer set: every figure in clt-vs-per-layer.md comes from this script.

    .venv/bin/python docs/results/clt_vs_per_layer.py [--out runs/clt-vs-set] [--tokens 300000] [--report-only]

On the default model, all 30 layers, the same training tokens of the default corpus for both (same corpus, seed
and context length, so the same contexts in the same order):

* a per-layer TopK transcoder set, 8 x d_model = 4,608 features per layer, k = 32 (the defaults), and a TopK CLT,
  1 x d_model = 576 features per layer, k = 32: total L0 matched (32 per layer, 960 in all) and parameters
  comparable (the set: 30 · 2 · 4,608 · 576 = 159M; the CLT: 30 · 576 · 576 encoder + 465 blocks of 576 · 576
  decoder = 164M). Each trains in its own process: wall time (model pass included, the same for both) and peak
  resident memory are recorded;
* both evaluated on the same held-out tokens: CE with every MLP replaced at once (recovered against mean and zero
  ablation), KL, FVU and L0 per layer;
* attribution graphs of a fixed set of prompts (four greater-than prompts, the paper's template, and four others),
  each prompt's top logit as the target, the same number of feature rows for both: replacement and completeness
  scores, the share of the influence carried by error nodes, and the circuit size: the feature nodes that the
  node pruning at 0.8 keeps (the nodes carrying 80% of the influence on the target, as circuit-tracer prunes);
* the greater-than case study (``docs/case-studies/greater_than.py``) redone with each of the two.

Everything resumes where it stopped (rerun to continue); ``--report-only`` rewrites the tables in
clt-vs-per-layer.md from what is in OUT.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))
sys.path.insert(0, str(HERE))

from interpretability import fill  # noqa: E402
from scaling import measured  # noqa: E402

KINDS = {"set": ["--expansion", "8"], "clt": ["--kind", "clt", "--expansion", "1"]}
NAMES = {"set": "per-layer set (8x, k 32)", "clt": "CLT (1x per layer, k 32)"}
EVAL_TOKENS, GRAPH_ROWS = 16384, 2048
GREATER = "The war lasted from the year 17{:02d} to the year 17"
PROMPTS = [GREATER.format(y) for y in (32, 45, 63, 81)] + [
    "The capital of France is",
    "The opposite of hot is",
    "She poured the tea into her",
    "def add(a, b):\n    return a",
]


def train(out: Path, tokens: int) -> None:
    for name, extra in KINDS.items():
        run = out / name
        resume = ["--resume", str(run)] if (run / "train_config.json").is_file() else []
        argv = ["train", "--layers", "all", "--tokens", str(tokens), "--k", "32", "--out", str(run), *extra, *resume]
        if (run / "layer_29" / "config.json").is_file() and not (out / f"train-{name}.json").is_file():
            continue  # trained before measurements were kept: nothing to record
        print(f"+ transcoders {' '.join(argv)}", flush=True)
        measured(out / f"train-{name}.json", argv)


def evaluate(out: Path) -> None:
    from transcoders import evaluation as E  # noqa: PLC0415  (after training)

    for name in KINDS:
        path = out / f"eval-{name}.json"
        if not path.is_file():
            print(f"+ eval {name}", flush=True)
            path.write_text(json.dumps(E.evaluate([str(out / name)], E.EvalConfig(tokens=EVAL_TOKENS)), indent=1))


def graphs(out: Path) -> None:
    from transcoders.circuits.api import default_target, load_replacement  # noqa: PLC0415
    from transcoders.circuits.graph import attribution_graph, influence, prune, scores  # noqa: PLC0415

    for name in KINDS:
        path = out / f"graphs-{name}.json"
        if path.is_file():
            continue
        rep = load_replacement(str(out / name))
        rows = []
        for prompt in PROMPTS:
            fp = rep.trace(prompt)[0]
            target = default_target(fp)
            g = attribution_graph(fp, target, max_feature_nodes=GRAPH_ROWS)
            replacement, completeness = scores(g)
            inf = influence(g.adjacency, g.output_weight_vector())
            total = float(inf[: g.token_slice.stop].sum())
            kept = prune(g, node_threshold=0.8, edge_threshold=1.0).node_mask
            rows.append({
                "prompt": prompt, "target": target.label, "value": float(target.value(fp)),
                "n_active": g.n_active, "replacement": replacement, "completeness": completeness,
                "error_share": float(inf[g.error_slice].sum()) / total,
                "circuit_features": int(kept[: g.n_features].sum()), "circuit_errors": int(kept[g.error_slice].sum()),
                "attribution_s": g.timings["attribution_s"],
            })  # fmt: skip
            print(f"{name}: {prompt!r}: replacement {replacement:.3f}, errors {rows[-1]['error_share']:.2f}, "
                  f"{rows[-1]['circuit_features']} features at 80%", flush=True)
        path.write_text(json.dumps(rows, indent=1))
        del rep


def greater_than(out: Path) -> None:
    for name in KINDS:
        dest = out / f"greater-than-{name}"
        if (dest / "results.json").is_file():
            continue
        argv = [sys.executable, str(HERE.parent / "case-studies" / "greater_than.py"), "--set", str(out / name),
                "--out", str(dest), "--random", "3", "--head-random", "10"]
        print("+ " + " ".join(argv[1:]), flush=True)
        with open(out / f"greater-than-{name}.md", "w") as log:
            if subprocess.call(argv, stdout=log) != 0:
                raise SystemExit(f"the greater-than study with the {name} failed; see {log.name}")


# ------------------------------------------------------------------------------------------------ report
def _read(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _mean(rows: list[dict], key: str) -> float:
    return statistics.fmean(r[key] for r in rows)


def report(out: Path) -> None:
    tables: dict[str, str] = {}
    lines = ["| | per-layer set | CLT |", "|---|---|---|"]
    tr = {n: _read(out / f"train-{n}.json") for n in KINDS}
    ev = {n: _read(out / f"eval-{n}.json") for n in KINDS}
    if all(ev.values()):
        fid = {n: ev[n]["fidelity"] for n in KINDS}
        runs = {n: list(ev[n]["runs"].values()) for n in KINDS}
        rows = [
            ("features per layer / in all", lambda n: f"{runs[n][0]['width']:,} / {sum(r['width'] for r in runs[n]):,}"),
            ("L0 per layer (mean) / in all", lambda n: f"{_mean(runs[n], 'l0'):.1f} / {sum(r['l0'] for r in runs[n]):.0f}"),
            ("FVU per layer (mean)", lambda n: f"{_mean(runs[n], 'fvu'):.3f}"),
            ("FVU, layers 0 / 15 / 29", lambda n: " / ".join(f"{runs[n][i]['fvu']:.3f}" for i in (0, 15, 29))),
            ("dead features (mean share)", lambda n: f"{_mean(runs[n], 'dead_fraction'):.1%}"),
            ("CE clean", lambda n: f"{fid[n]['ce_clean']:.3f}"),
            ("CE, every MLP replaced", lambda n: f"{fid[n]['ce_spliced']:.3f}"),
            ("CE recovered (mean / zero ablation)",
             lambda n: f"{fid[n]['ce_recovered_mean']:.3f} / {fid[n]['ce_recovered_zero']:.3f}"),
            ("KL(clean ‖ replaced)", lambda n: f"{fid[n]['kl_clean_spliced']:.3f}"),
        ]  # fmt: skip
        lines += [f"| {label} | {fn('set')} | {fn('clt')} |" for label, fn in rows]
    if all(tr.values()):
        lines.append("| training wall time (model pass included) | "
                     + " | ".join(f"{tr[n]['wall_s'] / 60:.0f} min" for n in KINDS) + " |")
        lines.append("| peak resident memory | " + " | ".join(f"{tr[n]['peak_rss_gib']:.2f} GiB" for n in KINDS) + " |")
    tables["fidelity"] = "\n".join(lines)
    gr = {n: _read(out / f"graphs-{n}.json") for n in KINDS}
    if all(gr.values()):
        lines = ["| prompt (top logit) | replacement set / CLT | completeness set / CLT | error share set / CLT "
                 "| features at 80% set / CLT |", "|---|---|---|---|---|"]
        for a, b in zip(gr["set"], gr["clt"]):
            lines.append(f"| {a['prompt']!r} ({a['target']}) | {a['replacement']:.3f} / {b['replacement']:.3f} | "
                         f"{a['completeness']:.3f} / {b['completeness']:.3f} | {a['error_share']:.3f} / "
                         f"{b['error_share']:.3f} | {a['circuit_features']} / {b['circuit_features']} |")
        m = {n: {k: _mean(gr[n], k) for k in ("replacement", "completeness", "error_share", "circuit_features")}
             for n in KINDS}
        lines.append(f"| **mean** | {m['set']['replacement']:.3f} / {m['clt']['replacement']:.3f} | "
                     f"{m['set']['completeness']:.3f} / {m['clt']['completeness']:.3f} | {m['set']['error_share']:.3f} "
                     f"/ {m['clt']['error_share']:.3f} | {m['set']['circuit_features']:.0f} / "
                     f"{m['clt']['circuit_features']:.0f} |")
        tables["graphs"] = "\n".join(lines)
    gt = {n: _read(out / f"greater-than-{n}" / "results.json") for n in KINDS}
    if all(gt.values()):
        lines = ["| | per-layer set | CLT |", "|---|---|---|"]
        ex = {n: gt[n]["example"] for n in KINDS}
        lines.append("| PD, real model / every MLP replaced | " + " | ".join(
            f"{gt[n]['behaviour']['pd']:.3f} / {gt[n]['behaviour']['pd_spliced']:.3f}" for n in KINDS) + " |")
        lines.append("| replacement / completeness (1732 graph) | " + " | ".join(
            f"{ex[n]['replacement_score']:.3f} / {ex[n]['completeness_score']:.3f}" for n in KINDS) + " |")
        lines.append("| error share / BOS features' share | " + " | ".join(
            f"{ex[n]['error_share']:.3f} / {ex[n]['bos_share']:.3f}" for n in KINDS) + " |")
        lines.append("| strongest path nodes | " + " | ".join(
            ", ".join(f"{c} ({v:+.2f})" for c, v in ex[n]["nodes"][:5]) for n in KINDS) + " |")
        lines.append("| strongest graph features (not at BOS) | " + " | ".join(
            ", ".join(f"tc{L}[{f}]@{p}" for L, f, p, *_ in ex[n]["graph_features"][:5]) for n in KINDS) + " |")
        for i, a in enumerate(gt["set"]["causal"]["ablation"]):
            lines.append(f"| PD with the top {a['n']} circuit features zeroed (random features) | " + " | ".join(
                _ablation(gt[n]["causal"]["pd"], gt[n]["causal"]["ablation"][i]) for n in KINDS) + " |")
        tables["greater-than"] = "\n".join(lines)
    fill(HERE / "clt-vs-per-layer.md", tables)
    print(f"wrote the tables of {HERE / 'clt-vs-per-layer.md'}")


def _ablation(pd: float, a: dict) -> str:
    return f"{pd:+.3f} → {a['circuit']:+.3f} ({a['random']:+.3f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/clt-vs-set")
    p.add_argument("--tokens", type=int, default=300_000, help="training tokens of each")
    p.add_argument("--report-only", action="store_true")
    ns = p.parse_args()
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    if not ns.report_only:
        train(out, ns.tokens)
        evaluate(out)
        graphs(out)
        greater_than(out)
    report(out)


if __name__ == "__main__":
    main()
