"""Across scale: every figure in scaling.md comes from this script.

    .venv/bin/python docs/results/scaling.py [--out runs/scaling] [--models default,qwen2.5-coder-0.5b-instruct,...]
                                             [--llm-features 20] [--report-only]

For each model (the default, Qwen2.5-Coder-0.5B, Qwen2.5-Coder-1.5B; Gemma 3 270M as a second family), at its
middle layer, from one cached harvest of the same 500k training tokens of the default corpus:

* a sweep of TopK transcoders, skip transcoders and MLP-out SAEs at k = 16, 32, 64 (L0 matched by construction),
  8 x d_model wide, and the paper's ReLU + L1 transcoder and MLP-out SAE with the λ controller aiming at L0 32;
  every run evaluated alone on the same 8,192 held-out tokens (CE recovered against mean ablation, KL, FVU, dead
  and dense fractions). Each sweep runs as its own process: its wall time and peak resident memory are recorded
  (harvest, training and evaluation together), and training tokens/s come from each run's train_log.jsonl;
* the interpretability scores of the k = 32 dictionaries: the ones that need no LLM (sparse probing, weights-based
  prediction, absorption) over a 65k-token feature store, and LLM detection/fuzzing on --llm-features features;
* on the default model only, ``transcoders tune --target-ce-recovered 0.9`` for real.

Results go to OUT/<model>/...; the tables in scaling.md (between ``<!-- begin NAME -->`` markers) and
scaling.png are rewritten from what is there. Every step resumes where it stopped: rerun to continue, one model
at a time with --models if a session is short. ``--report-only`` writes the tables from what exists.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from interpretability import ci, fill  # noqa: E402

from transcoders.dictionary.runs import finished_runs, store_path  # noqa: E402
from transcoders.features import store as S  # noqa: E402
from transcoders.interp import DEFAULT_LLM, interp_summary, read_results  # noqa: E402
from transcoders.models.named import NAMED_MODELS  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS = ["default", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "gemma-3-270m"]
KINDS = {"transcoder": "transcoder", "skip-transcoder": "skip transcoder", "sae-mlp-out": "SAE, MLP-out"}
KS = (16, 32, 64)
TOKENS, EVAL_TOKENS, STORE_TOKENS = 500_000, 8192, 65536
COMMON = ["--corpus", "default", "--tokens", str(TOKENS), "--eval-tokens", str(EVAL_TOKENS), "--expansion", "8"]


def layer_of(model: str) -> int:
    return NAMED_MODELS[model].shape[0] // 2


def measured(record: Path, argv: list[str]) -> dict:
    """Run ``transcoders ARGV`` in its own process once (skipped when ``record`` exists); its wall time and peak
    resident memory, kept in ``record``."""
    if record.is_file():
        return json.loads(record.read_text())
    start = time.perf_counter()
    code = subprocess.call([sys.executable, __file__, "--child", str(record.with_suffix(".rss")), "--", *argv])
    if code != 0:
        raise SystemExit(f"`transcoders {' '.join(argv)}` failed ({code}); rerun this script to resume it")
    out = {"argv": argv, "wall_s": time.perf_counter() - start,
           "peak_rss_gib": float(record.with_suffix(".rss").read_text()) / 2**20}
    record.write_text(json.dumps(out, indent=1))
    return out


def build(out: Path, model: str, llm_features: int) -> None:
    m, L = NAMED_MODELS[model], layer_of(model)
    if not (m.installed or m.converted):
        print(f"skipping {model}: not installed (`transcoders models --install {model}`)", file=sys.stderr)
        return
    root = out / model
    root.mkdir(parents=True, exist_ok=True)
    cache = str(root / "activations")
    base = ["--model", model, "--layers", str(L), *COMMON, "--cache-activations", cache]
    measured(root / "sweep-topk.json", ["sweep", *base, "--activation", "topk", "--kinds", ",".join(KINDS),
                                        "--ks", ",".join(map(str, KS)), "--out", str(root / "topk")])
    measured(root / "sweep-relu.json", ["sweep", *base, "--activation", "relu", "--kinds", "transcoder,sae-mlp-out",
                                        "--target-l0s", "32", "--out", str(root / "relu")])
    k32 = [str(r) for kind in KINDS for r in finished_runs(root / "topk" / f"{kind}-topk-k32")]
    measured(root / "features.json", ["features", *k32, "--tokens", str(STORE_TOKENS), "--quiet"])
    measured(root / "interp-nollm.json", ["interp", *k32, "--scores", "probing,absorption,weights", "--quiet"])
    if llm_features:
        measured(root / f"interp-llm-{llm_features}.json",
                 ["interp", *k32, "--scores", "llm", "--features", str(llm_features), "--quiet"])
    if model == "default":
        measured(root / "tune.json", ["tune", "--model", model, "--layers", str(L), "--corpus", "default",
                                      "--target-ce-recovered", "0.9", "--tokens", str(TOKENS), "--eval-tokens",
                                      str(EVAL_TOKENS), "--out", str(root / "tune"), "--quiet"])


def rows_of(root: Path) -> list[dict]:
    """The sweeps' result rows (topk and relu), with training tokens/s from each run's log."""
    rows = []
    for sweep in ("topk", "relu"):
        csv_path = root / sweep / "results.csv"
        if not csv_path.is_file():
            continue
        for r in csv.DictReader(open(csv_path)):
            log = root / sweep / r["run"] / "train_log.jsonl"
            secs = sum(json.loads(line)["sec"] for line in open(log)) if log.is_file() else math.nan
            rows.append({**r, "sweep": sweep, "train_tokens_per_s": TOKENS / secs if secs else math.nan})
    return rows


def report(out: Path, models: list[str]) -> dict[str, str]:
    t: dict[str, list[str]] = {}
    t["faithfulness"] = ["| model | layer | dictionary | L0 | FVU | CE recovered | KL | dead | dense | train tok/s |",
                         "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    t["cost"] = ["| model | sweep | wall time | peak memory |", "|---|---|---:|---:|"]
    t["interp"] = ["| model | dictionary | LLM features | detection | fuzzing | hit@10 | single-token | absorption | "
                   "topics k=5 / dense |", "|---|---|---:|---|---|---|---|---:|---|"]
    t["guidelines"] = ["| model | params | width | L0 for 80% CE recovered | L0 for 90% |", "|---|---|---:|---|---|"]
    curves: dict[str, list[dict]] = {}
    for model in models:
        root, m = out / model, NAMED_MODELS[model]
        rows = rows_of(root)
        curves[model] = rows
        for r in sorted(rows, key=lambda r: (r["sweep"], r["kind"], float(r["l0"]))):
            kind = r["kind"] + (" (ReLU + L1)" if r["sweep"] == "relu" else "")
            t["faithfulness"].append(
                f"| {model} | {r['layer']} | {kind} | {float(r['l0']):.1f} | {float(r['fvu']):.3f} | "
                f"{100 * float(r['ce_recovered_mean']):.1f}% | {float(r['kl_clean_spliced']):.4f} | "
                f"{100 * float(r['dead_fraction']):.1f}% | {100 * float(r['dense_fraction']):.1f}% | "
                f"{r['train_tokens_per_s']:,.0f} |")
        for name in ("sweep-topk", "sweep-relu", "features", "interp-nollm", "tune"):
            rec = root / f"{name}.json"
            if rec.is_file():
                c = json.loads(rec.read_text())
                t["cost"].append(f"| {model} | {name} | {c['wall_s'] / 60:.1f} min | {c['peak_rss_gib']:.1f} GiB |")
        for kind, label in KINDS.items():
            runs = finished_runs(root / "topk" / f"{kind}-topk-k32")
            if not runs:
                continue
            res = read_results(runs[0])
            w, a = res.get("weights", {}), res.get("absorption", {}).get("mean", {})
            p = res.get("probing", {}).get("topics", {}).get("mean", {})
            s = None
            if store_path(runs[0]).is_file():
                con = S.connect(store_path(runs[0]), readonly=True)
                try:
                    s = interp_summary(con, f"local:{DEFAULT_LLM}")
                finally:
                    con.close()
            llm = str(s["features"]) if s else "0"
            t["interp"].append(
                f"| {model} | {label} | {llm} | {ci(s['detection']) if s else '–'} | "
                f"{ci(s['fuzzing']) if s else '–'} | {ci(w.get('hit@10'))} | {ci(w.get('single_token'))} | "
                f"{a.get('absorption', math.nan):.3f} | "
                f"{p.get('k=5', math.nan):.3f} / {p.get('dense', math.nan):.3f} |")
        tc = sorted((float(r["l0"]), float(r["ce_recovered_mean"])) for r in rows
                    if r["sweep"] == "topk" and r["kind"] == "transcoder")
        if tc:
            t["guidelines"].append(f"| {model} | {m.params} | {8 * m.shape[1]} | {_need(tc, 0.8)} | "
                                   f"{_need(tc, 0.9)} |")
    tune = out / "default" / "tune" / "tune.json"
    if tune.is_file():
        rec = json.loads(tune.read_text())
        f = rec["final"]
        t["tune"] = [f"`transcoders tune --layers {layer_of('default')} --target-ce-recovered 0.9` chose width "
                     f"{f['width']} and L0 {f['l0_setting']} from {len(rec['curve'])} proxy runs; the final run "
                     f"(500k tokens): L0 {f['l0']:.1f}, FVU {f['fvu']:.3f}, CE recovered "
                     f"{100 * f['ce_recovered_mean']:.1f}%."]
    plot(curves, HERE / "scaling.png")
    return {name: "\n".join(rows) for name, rows in t.items()}


def _need(curve: list[tuple[float, float]], level: float) -> str:
    """The smallest measured L0 whose CE recovered reaches ``level`` (``curve``: (L0, CE recovered), sorted)."""
    hit = [l0 for l0, v in curve if v >= level]
    return f"{hit[0]:.0f}" if hit else f"> {curve[-1][0]:.0f} (best {100 * curve[-1][1]:.1f}%)"


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    """CE recovered against L0, one panel per model, one line per kind (TopK), ReLU points as crosses."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 3.8), squeeze=False)
    for ax, (model, rows) in zip(axes[0], curves.items()):
        for i, kind in enumerate(sorted({r["kind"] for r in rows})):
            color = f"C{i}"
            pts = sorted((float(r["l0"]), float(r["ce_recovered_mean"])) for r in rows
                         if r["kind"] == kind and r["sweep"] == "topk")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color, label=f"{kind} (TopK)")
            relu = [(float(r["l0"]), float(r["ce_recovered_mean"])) for r in rows
                    if r["kind"] == kind and r["sweep"] == "relu"]
            if relu:
                ax.plot(*zip(*relu), marker="x", ms=9, ls="", color=color, label=f"{kind} (ReLU + L1)")
        ax.set_xscale("log")
        ax.set_xlabel("L0")
        ax.set_ylabel("CE recovered (vs mean ablation)")
        ax.set_title(f"{model}, layer {layer_of(model)}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def child(rss_file: str, argv: list[str]) -> None:
    from transcoders.cli import main as cli  # noqa: PLC0415  (the child process only)

    code = cli(argv)
    Path(rss_file).write_text(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    raise SystemExit(code)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[4:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/scaling")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--llm-features", type=int, default=20, help="features per k=32 dictionary for the LLM scores")
    p.add_argument("--report-only", action="store_true")
    ns = p.parse_args()
    out = Path(ns.out)
    models = [m for m in ns.models.split(",") if m]
    if not ns.report_only:
        for model in models:
            build(out, model, ns.llm_features)
    tables = report(out, [m for m in MODELS if (out / m).is_dir()])
    fill(HERE / "scaling.md", tables)
    print("\n\n".join(tables.values()))


if __name__ == "__main__":
    main()
