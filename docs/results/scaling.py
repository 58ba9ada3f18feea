"""Across scale: every figure in scaling.md comes from this script.

    .venv/bin/python docs/results/scaling.py [--out runs/scaling] [--models default,qwen2.5-coder-0.5b-instruct,...]
                                             [--llm-features 20] [--report-only] [--scores-only]

For each model (the default, Qwen2.5-Coder-0.5B, Qwen2.5-Coder-1.5B; Gemma 3 270M as a second family), at its
middle layer, from one cached harvest of the same 500k training tokens of the default corpus:

* a sweep of TopK transcoders, skip transcoders and MLP-out SAEs at k = 16, 32, 64 (L0 matched by construction),
  8 x d_model wide, and the paper's ReLU + L1 transcoder and MLP-out SAE with the λ controller aiming at L0 32;
  every run evaluated alone on the same 8,192 held-out tokens (CE recovered against mean ablation, KL, FVU, dead
  and dense fractions). Each sweep runs as its own process: its wall time and peak resident memory are recorded
  (harvest, training and evaluation together), and training tokens/s come from each run's train_log.jsonl;
* the interpretability scores of the k = 32 dictionaries: the ones that need no LLM (sparse probing, weights-based
  prediction, absorption) over a 65k-token feature store, and LLM detection/fuzzing on --llm-features features;
* on the default model only, ``transcoders tune`` for real, aiming at 90% CE recovered, then at 80% (the second
  search reuses the first one's proxy runs; a target no proxy reaches is kept as a result, with its curve).

Runs go to OUT/<model>/...; what the tables need from them (result rows, wall times, peak memory, scores, the
tune curves: tens of kB) is kept in scaling/<model>.json beside this script, which is committed, and the tables in
scaling.md (between ``<!-- begin NAME -->`` markers) and scaling.png are rewritten from those records. So models
run in different sessions, or on different machines, end up in one report. Every step resumes where it stopped:
rerun to continue, one model at a time with --models if a session is short. ``--report-only`` runs nothing: it
keeps what exists under OUT (if anything) and writes the tables from the records. ``--scores-only``, for a model
whose sweeps are recorded already but whose runs are gone (a fresh machine), trains only the k = 32 dictionaries
(same harvest, same seeds) and scores them (no tune). Retraining is not bit-exact: the k = 32 rows moved by
< 0.002 FVU, and CE recovered by < 0.5 points on the default model but by up to 4.2 at 0.5B; export prints every
such difference and keeps the new rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import resource
import shutil
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
from transcoders.paths import atomic_write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "scaling"  # one committed record per model: what the tables are written from
MODELS = ["default", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "gemma-3-270m"]
KINDS = {"transcoder": "transcoder", "skip-transcoder": "skip transcoder", "sae-mlp-out": "SAE, MLP-out"}
ROW_KINDS = {k.removesuffix("-mlp-out"): v for k, v in KINDS.items()}  # as the sweeps' result rows name them
KS = (16, 32, 64)
TUNE_TARGETS = (0.9, 0.8)
TOKENS, EVAL_TOKENS, STORE_TOKENS = 500_000, 8192, 65536
COMMON = ["--corpus", "default", "--tokens", str(TOKENS), "--eval-tokens", str(EVAL_TOKENS), "--expansion", "8"]


def layer_of(model: str) -> int:
    return NAMED_MODELS[model].shape[0] // 2


def measured(record: Path, argv: list[str], *, may_refuse: bool = False) -> dict:
    """Run ``transcoders ARGV`` in its own process once (skipped when ``record`` exists); its wall time and peak
    resident memory, kept in ``record``. With ``may_refuse``, a one-line refusal (exit status 2, e.g. a tune target
    that nothing reaches) is a result, recorded as ``refused``; any other failure stops the script."""
    if record.is_file():
        return json.loads(record.read_text())
    start = time.perf_counter()
    code = subprocess.call([sys.executable, __file__, "--child", str(record.with_suffix(".rss")), "--", *argv])
    if code != 0 and not (may_refuse and code == 2):
        raise SystemExit(f"`transcoders {' '.join(argv)}` failed ({code}); rerun this script to resume it")
    out = {"argv": argv, "wall_s": time.perf_counter() - start, "refused": code != 0,
           "peak_rss_gib": float(record.with_suffix(".rss").read_text()) / 2**20}
    record.write_text(json.dumps(out, indent=1))
    return out


def build(out: Path, model: str, llm_features: int, scores_only: bool = False) -> None:
    m, L = NAMED_MODELS[model], layer_of(model)
    if not (m.installed or m.converted):
        print(f"skipping {model}: not installed (`transcoders models --install {model}`)", file=sys.stderr)
        return
    root = out / model
    root.mkdir(parents=True, exist_ok=True)
    cache = str(root / "activations")
    base = ["--model", model, "--layers", str(L), *COMMON, "--cache-activations", cache]
    topk = ["sweep", *base, "--activation", "topk", "--kinds", ",".join(KINDS), "--out", str(root / "topk")]
    if scores_only:  # only the dictionaries the scores need; export reports where their rows differ from the record
        measured(root / "sweep-topk-k32.json", [*topk, "--ks", "32"])
    else:
        measured(root / "sweep-topk.json", [*topk, "--ks", ",".join(map(str, KS))])
        measured(root / "sweep-relu.json", ["sweep", *base, "--activation", "relu", "--kinds",
                                            "transcoder,sae-mlp-out", "--target-l0s", "32", "--out", str(root / "relu")])
    k32 = [str(r) for kind in KINDS for r in finished_runs(root / "topk" / f"{kind}-topk-k32")]
    measured(root / "features.json", ["features", *k32, "--tokens", str(STORE_TOKENS), "--quiet"])
    measured(root / "interp-nollm.json", ["interp", *k32, "--scores", "probing,absorption,weights", "--quiet"])
    if llm_features:
        measured(root / f"interp-llm-{llm_features}.json",
                 ["interp", *k32, "--scores", "llm", "--features", str(llm_features), "--quiet"])
    if model == "default" and not scores_only:  # tune trains its own dictionaries: not a score of the k = 32 ones
        for target in TUNE_TARGETS:  # one folder: the second search reuses the first one's proxy runs
            measured(root / f"tune-{target}.json", ["tune", "--model", model, "--layers", str(L), "--corpus",
                                                   "default", "--target-ce-recovered", str(target), "--tokens",
                                                   str(TOKENS), "--eval-tokens", str(EVAL_TOKENS), "--out",
                                                   str(root / "tune"), "--quiet"], may_refuse=True)
            kept = root / f"tune-{target}" / "tune.json"  # tune.json is rewritten by the next target's search
            if not kept.is_file() and (root / "tune" / "tune.json").is_file():
                kept.parent.mkdir(exist_ok=True)
                shutil.copy(root / "tune" / "tune.json", kept)
                shutil.copy(root / "tune" / "tune.png", kept.parent / "tune.png")


def rows_of(root: Path) -> list[dict]:
    """The sweeps' result rows (topk and relu), with training tokens/s from each run's log."""
    rows = []
    for sweep in ("topk", "relu"):
        csv_path = root / sweep / "results.csv"
        if not csv_path.is_file():
            continue
        for r in csv.DictReader(open(csv_path)):
            rows.append({**r, "sweep": sweep, "train_tokens_per_s": train_rate(root / sweep / r["run"])})
    return rows


def train_rate(run: Path) -> float | None:
    """Training tokens/s from the cached harvest: the median over the log's intervals, so that the interval in
    which the sweep's first run harvested the activations does not count."""
    log = run / "train_log.jsonl"
    if not log.is_file():
        return None
    lines = [json.loads(line) for line in open(log)]
    per_step = TOKENS / lines[-1]["step"]
    rates = sorted(per_step * (b["step"] - a["step"]) / b["sec"] for a, b in zip([{"step": 0}, *lines], lines))
    return rates[len(rates) // 2]


def export(out: Path, model: str) -> Path:
    """Keep what the tables need from OUT/<model> in RECORDS/<model>.json."""
    root = out / model
    rec: dict = {"model": model, "layer": layer_of(model), "tokens": TOKENS, "eval_tokens": EVAL_TOKENS,
                 "rows": rows_of(root), "cost": {}, "interp": {}, "tune": {}}
    for path in sorted(root.glob("*.json")):  # the measured steps: sweep-*, features, interp-*, tune-*
        rec["cost"][path.stem] = json.loads(path.read_text())
    for kind in KINDS:
        runs = finished_runs(root / "topk" / f"{kind}-topk-k32")
        if not runs:
            continue
        res, llm = read_results(runs[0]), None
        if store_path(runs[0]).is_file():
            con = S.connect(store_path(runs[0]), readonly=True)
            try:
                llm = interp_summary(con, f"local:{DEFAULT_LLM}")
            finally:
                con.close()
        if not res and not (llm and llm["features"]):
            continue  # not scored yet
        rec["interp"][kind] = {"weights": res.get("weights", {}), "absorption": res.get("absorption", {}).get("mean", {}),
                               "topics": res.get("probing", {}).get("topics", {}).get("mean", {}),
                               "llm": llm if llm and llm["features"] else None}
    for target in TUNE_TARGETS:
        tune = root / f"tune-{target}" / "tune.json"
        if tune.is_file():
            rec["tune"][str(target)] = json.loads(tune.read_text())
    path = RECORDS / f"{model}.json"
    if path.is_file():
        rec = merged(json.loads(path.read_text()), rec)
    RECORDS.mkdir(exist_ok=True)
    atomic_write_json(path, rec)
    return path


def merged(old: dict, new: dict) -> dict:
    """A record grows across sessions: what ``new`` measured replaces the same row, step, score or tune target in
    ``old``, and the rest of ``old`` stays (a fresh machine that retrains only the k = 32 dictionaries to score
    them keeps the other rows). A re-measured row that differs from the recorded one is reported: the record then
    holds the new dictionary's row beside the old sweep's others, and says so. Delete the record to start over."""
    rows = {(r["sweep"], r["run"]): r for r in old["rows"]}
    for r in new["rows"]:
        was = rows.get((r["sweep"], r["run"]))
        if was and any(abs(float(was[k]) - float(r[k])) > 1e-6 for k in ("l0", "fvu", "ce_recovered_mean")):
            print(f"{new['model']}: {r['run']} re-measured differs from the record: CE recovered "
                  f"{float(was['ce_recovered_mean']):.4f} -> {float(r['ce_recovered_mean']):.4f}, FVU "
                  f"{float(was['fvu']):.4f} -> {float(r['fvu']):.4f}", file=sys.stderr)
        rows[r["sweep"], r["run"]] = r
    interp = dict(old["interp"])
    for kind, scores in new["interp"].items():  # a score not measured this time (empty) keeps the recorded one
        was = interp.get(kind, {})
        interp[kind] = {field: value if value else was.get(field, value) for field, value in scores.items()}
    return {**new, "rows": list(rows.values()), "cost": {**old["cost"], **new["cost"]}, "interp": interp,
            "tune": {**old["tune"], **new["tune"]}}


def records() -> dict[str, dict]:
    """The committed records, in MODELS order."""
    return {m: json.loads((RECORDS / f"{m}.json").read_text()) for m in MODELS if (RECORDS / f"{m}.json").is_file()}


COST_STEPS = ("sweep-topk", "sweep-relu", "sweep-topk-k32", "features", "interp-nollm", *(f"tune-{t}" for t in TUNE_TARGETS))


def report(recs: dict[str, dict]) -> dict[str, str]:
    """scaling.md's tables by marker name (faithfulness, cost, interp, guidelines, tune), from the records."""
    t: dict[str, list[str]] = {}
    t["faithfulness"] = ["| model | layer | dictionary | L0 | FVU | CE recovered | KL | dead | dense | train tok/s |",
                         "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    t["cost"] = ["| model | step | wall time | peak memory |", "|---|---|---:|---:|"]
    t["interp"] = ["| model | dictionary | LLM features | detection | fuzzing | hit@10 | single-token | absorption | "
                   "topics k=5 / dense |", "|---|---|---:|---|---|---|---|---:|---|"]
    t["guidelines"] = ["| model | params | width | L0 for 80% CE recovered | L0 for 90% | measured by |",
                       "|---|---|---:|---|---|---|"]
    for model, rec in recs.items():
        m, rows = NAMED_MODELS[model], rec["rows"]
        for r in sorted(rows, key=lambda r: (list(ROW_KINDS).index(r["kind"]), r["sweep"] == "relu", float(r["l0"]))):
            kind = ROW_KINDS[r["kind"]] + (" (ReLU + L1)" if r["sweep"] == "relu" else "")
            tps = r["train_tokens_per_s"]
            t["faithfulness"].append(
                f"| {model} | {r['layer']} | {kind} | {float(r['l0']):.1f} | {float(r['fvu']):.3f} | "
                f"{100 * float(r['ce_recovered_mean']):.1f}% | {float(r['kl_clean_spliced']):.4f} | "
                f"{100 * float(r['dead_fraction']):.1f}% | {100 * float(r['dense_fraction']):.1f}% | "
                f"{f'{tps:,.0f}' if tps else '–'} |")
        for name, c in rec["cost"].items():
            if name in COST_STEPS or name.startswith("interp-llm"):
                t["cost"].append(f"| {model} | {name} | {c['wall_s'] / 60:.1f} min | {c['peak_rss_gib']:.1f} GiB |")
        for kind, label in KINDS.items():
            if kind not in rec["interp"]:
                continue
            i = rec["interp"][kind]
            w, a, p, s = i["weights"], i["absorption"], i["topics"], i["llm"]
            t["interp"].append(
                f"| {model} | {label} | {s['features'] if s else 0} | {ci(s['detection']) if s else '–'} | "
                f"{ci(s['fuzzing']) if s else '–'} | {ci(w.get('hit@10'))} | {ci(w.get('single_token'))} | "
                f"{a.get('absorption', math.nan):.3f} | "
                f"{p.get('k=5', math.nan):.3f} / {p.get('dense', math.nan):.3f} |")
        tc = sorted((float(r["l0"]), float(r["ce_recovered_mean"])) for r in rows
                    if r["sweep"] == "topk" and r["kind"] == "transcoder")
        if tc:
            t["guidelines"].append(f"| {model} | {m.params} | {8 * m.shape[1]} | {_need(tc, 0.8)} | "
                                   f"{_need(tc, 0.9)} | the sweep ({TOKENS:,} tokens) |")
        proxies = {(p["width"], p["l0_setting"]): p for tune in rec["tune"].values() for p in tune["curve"]}
        for width in sorted({w for w, _ in proxies}):
            pc = sorted((p["l0"], p["ce_recovered_mean"]) for (w, _), p in proxies.items() if w == width)
            tokens = next(iter(rec["tune"].values()))["search"]["proxy_tokens"]
            t["guidelines"].append(f"| {model} | {m.params} | {width} | {_need(pc, 0.8)} | {_need(pc, 0.9)} | "
                                   f"tune's proxy runs ({tokens:,} tokens; L0 {', '.join(f'{l0:.0f}' for l0, _ in pc)}) |")
    tunes = recs.get("default", {}).get("tune", {})
    t["tune"] = [tune_line(target, tunes[target]) for target in sorted(tunes, key=float, reverse=True)]
    return {name: "\n".join(rows) for name, rows in t.items()}


def tune_line(target: str, rec: dict) -> str:
    """What one ``transcoders tune`` search on the default model found, as a sentence."""
    cmd = f"`transcoders tune --layers {layer_of('default')} --target-ce-recovered {target}`"
    curve, f = rec["curve"], rec["final"]
    widths = sorted({p["width"] for p in curve})
    if not f:
        best = max(curve, key=lambda p: p["ce_recovered_mean"])
        return (f"- {cmd}: no proxy run reached it ({len(curve)} proxy runs, L0 up to "
                f"{max(p['l0_setting'] for p in curve)}, widths {widths[0]}–{widths[-1]}); the best was "
                f"{100 * best['ce_recovered_mean']:.1f}% at width {best['width']}, L0 {best['l0_setting']}.")
    return (f"- {cmd}: width {f['width']} and L0 {f['l0_setting']}, from {len(curve)} proxy runs of "
            f"{rec['search']['proxy_tokens']:,} tokens (widths {widths[0]}–{widths[-1]}); the final run "
            f"({TOKENS:,} tokens): L0 {f['l0']:.1f}, FVU {f['fvu']:.3f}, CE recovered "
            f"{100 * f['ce_recovered_mean']:.1f}%, dead {100 * f['dead_fraction']:.1f}%.")


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
        for i, (kind, label) in enumerate(ROW_KINDS.items()):
            color = f"C{i}"
            pts = sorted((float(r["l0"]), float(r["ce_recovered_mean"])) for r in rows
                         if r["kind"] == kind and r["sweep"] == "topk")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color, label=f"{label} (TopK)")
            relu = [(float(r["l0"]), float(r["ce_recovered_mean"])) for r in rows
                    if r["kind"] == kind and r["sweep"] == "relu"]
            if relu:
                ax.plot(*zip(*relu), marker="x", ms=9, ls="", color=color, label=f"{label} (ReLU + L1)")
        ax.set_xscale("log")
        ax.set_xticks(KS, [str(k) for k in KS])
        ax.minorticks_off()
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
    p.add_argument("--scores-only", action="store_true",
                   help="train only the k=32 dictionaries and score them (a model whose sweeps are recorded already)")
    ns = p.parse_args()
    out = Path(ns.out)
    models = [m for m in ns.models.split(",") if m]
    for model in models:
        if not ns.report_only:
            build(out, model, ns.llm_features, ns.scores_only)
        if (out / model).is_dir():  # what exists, even part of a model's runs
            print(f"kept {export(out, model)}")
    recs = records()
    tables = report(recs)
    fill(HERE / "scaling.md", tables)
    plot({model: rec["rows"] for model, rec in recs.items()}, HERE / "scaling.png")
    print("\n\n".join(tables.values()))


if __name__ == "__main__":
    main()
