"""Interpretability, measured: every figure in interpretability.md comes from this script.

    .venv/bin/python docs/results/interpretability.py [--out runs/interp-8] [--features 100] [--report-only]

On the default model, layer 8: a transcoder, a skip transcoder and SAEs on MLP-out and MLP-in, all 8x wide
(4608) with BatchTopK k = 32 (L0 matched by construction), trained on the same 500k tokens (one cached harvest).
Then, for each: the feature store (131k held-out tokens), the scores that need no LLM (sparse probing on the
default corpus's news topics and sources, first-letter absorption, weights-based prediction and the share of
single-token features over the same sampled features), and the LLM scores (detection, fuzzing) with the default
explainer on the same density-stratified sample, in rounds of 5 features per dictionary so that a partial run
is balanced; then a second explainer on the first 30 features of each, for the sensitivity to the explainer.
Every step resumes where it stopped (training, stores and scores all do), so rerunning the script finishes it;
``--report-only`` writes the tables from what is there.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from transcoders.dictionary.runs import finished_runs, store_path  # noqa: E402
from transcoders.features import FeaturesConfig, collect  # noqa: E402
from transcoders.features import store as S  # noqa: E402
from transcoders.interp import DEFAULT_LLM, InterpConfig, interp_summary, read_results, run_interp  # noqa: E402
from transcoders.interp.llm import LocalLLM  # noqa: E402
from transcoders.models import load_model  # noqa: E402
from transcoders.sweeps import SweepGrid, run_sweep  # noqa: E402
from transcoders.training import TrainConfig  # noqa: E402

KINDS = {"transcoder": "transcoder", "skip-transcoder": "skip transcoder", "sae-mlp-out": "SAE, MLP-out",
         "sae-mlp-in": "SAE, MLP-in"}
SECOND_LLM = "qwen2.5-coder-0.5b-instruct"
HERE = Path(__file__).resolve().parent


def runs_of(out: Path) -> dict[str, Path]:
    found = {}
    for kind in KINDS:
        dirs = finished_runs(out / f"{kind}-batchtopk-k32")
        if dirs:
            found[kind] = dirs[0]
    return found


def build(out: Path, features: int, second: int) -> None:
    base = TrainConfig(model="default", corpus="default", layers="8", activation="batchtopk", tokens=500_000,
                       out=str(out))
    if len(runs_of(out)) < len(KINDS) or not (out / "results.md").is_file():  # a finished sweep is not evaluated again
        run_sweep(base, SweepGrid(kinds=",".join(KINDS), ks="32", eval_tokens=16384))
    runs = runs_of(out)
    collect(list(runs.values()), FeaturesConfig(tokens=131072))
    if not all({"probing", "absorption", "weights"} <= set(read_results(r)) for r in runs.values()):
        run_interp(list(runs.values()), InterpConfig(scores="probing,absorption,weights", features=features))
    for llm_name, n_max in ((DEFAULT_LLM, features), (SECOND_LLM, second)):
        llm = LocalLLM(load_model(llm_name), name=f"local:{llm_name}")
        for n in range(5, n_max + 1, 5):  # rounds: every dictionary has as many scored features at any time
            for run in runs.values():
                run_interp([run], InterpConfig(scores="llm", features=n, llm=llm_name), llm=llm)
        del llm


def ci(v) -> str:
    if not v or v[0] != v[0]:
        return "–"
    return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"


def report(out: Path) -> dict[str, str]:
    """Markdown tables by name: faithfulness, llm, nollm, probing, second."""
    runs = runs_of(out)
    metrics = {k: json.loads((r / "metrics.json").read_text()) if (r / "metrics.json").is_file() else {}
               for k, r in runs.items()}
    res = {k: read_results(r) for k, r in runs.items()}
    t: dict[str, list[str]] = {}
    t["faithfulness"] = ["| dictionary | L0 | FVU | CE recovered | KL | dead |", "|---|---:|---:|---:|---:|---:|"]
    for k, m in metrics.items():
        fid = m.get("fidelity") or m.get("alone") or {}
        t["faithfulness"].append(f"| {KINDS[k]} | {m['l0']:.1f} | {m['fvu']:.3f} | {100 * fid['ce_recovered_mean']:.1f}% | "
                                 f"{fid['kl_clean_spliced']:.4f} | {100 * m['dead_fraction']:.1f}% |")
    t["llm"] = ["| dictionary | features | detection | fuzzing | detection AUROC | fuzzing AUROC |",
                "|---|---:|---|---|---|---|"]
    t["second"] = ["| dictionary | explainer | features | detection | fuzzing | detection AUROC | fuzzing AUROC |",
                   "|---|---|---:|---|---|---|---|"]
    for k, r in runs.items():
        con = S.connect(store_path(r), readonly=True)
        try:
            s = interp_summary(con, f"local:{DEFAULT_LLM}")
            t["llm"].append(f"| {KINDS[k]} | {s['features']} | {ci(s['detection'])} | {ci(s['fuzzing'])} | "
                            f"{ci(s['detection_auroc'])} | {ci(s['fuzzing_auroc'])} |")
            second = _features_of(con, f"local:{SECOND_LLM}")
            if second:
                for name, s in ((DEFAULT_LLM, interp_summary(con, f"local:{DEFAULT_LLM}", second)),
                                (SECOND_LLM, interp_summary(con, f"local:{SECOND_LLM}"))):
                    t["second"].append(f"| {KINDS[k]} | {name} | {s['features']} | {ci(s['detection'])} | "
                                       f"{ci(s['fuzzing'])} | {ci(s['detection_auroc'])} | {ci(s['fuzzing_auroc'])} |")
        finally:
            con.close()
    if len(t["second"]) == 2:
        t["second"].append("| (not run yet) | | | | | | |")
    t["nollm"] = ["| dictionary | hit@10 | de-embedding percentile | single-token share | absorption | "
                  "main-feature recall | letter probe recall |", "|---|---|---|---|---:|---:|---:|"]
    for k in runs:
        w, a = res[k].get("weights", {}), res[k].get("absorption", {}).get("mean", {})
        t["nollm"].append(f"| {KINDS[k]} | {ci(w.get('hit@10'))} | {ci(w.get('percentile'))} | "
                          f"{ci(w.get('single_token'))} | {a.get('absorption', math.nan):.3f} | "
                          f"{a.get('main_recall', math.nan):.3f} | {a.get('probe_recall', math.nan):.3f} |")
    ks = ["dense", "k=1", "k=2", "k=5", "k=10", "k=20"]
    t["probing"] = ["| task | dictionary | " + " | ".join(ks) + " |", "|---|---" + "|---:" * len(ks) + "|"]
    for task in ("topics", "sources"):
        for k in runs:
            p = res[k].get("probing", {}).get(task)
            if p:
                t["probing"].append(f"| {task} | {KINDS[k]} | " + " | ".join(f"{p['mean'][x]:.3f}" for x in ks) + " |")
    return {name: "\n".join(rows) for name, rows in t.items()}


def fill(md: Path, tables: dict[str, str]) -> None:
    """Rewrite the tables between ``<!-- begin NAME -->`` and ``<!-- end NAME -->`` in ``md``."""
    text = md.read_text()
    for name, table in tables.items():
        begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
        if begin in text:
            a, b = text.index(begin) + len(begin), text.index(end)
            text = text[:a] + "\n" + table + "\n" + text[b:]
    md.write_text(text)


def _features_of(con, llm: str) -> list[int]:
    return [f for (f,) in con.execute("SELECT feature FROM interp WHERE llm = ?", (llm,))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/interp-8")
    p.add_argument("--features", type=int, default=100, help="features per dictionary for the LLM scores")
    p.add_argument("--second", type=int, default=30, help="features per dictionary for the second explainer")
    p.add_argument("--report-only", action="store_true")
    ns = p.parse_args()
    out = Path(ns.out)
    if not ns.report_only:
        build(out, ns.features, ns.second)
    tables = report(out)
    fill(HERE / "interpretability.md", tables)
    print("\n\n".join(tables.values()))


if __name__ == "__main__":
    main()
