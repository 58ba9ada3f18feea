"""``transcoders interp`` and ``transcoders concepts``: thin wrappers over :mod:`transcoders.interp`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..flags import add_dataclass_args, config_from
from ..interp.config import DEFAULT_LLM, InterpConfig
from .common import add_command, add_quiet, loading


def _ci(v) -> str:
    mean, lo, hi = v
    return "n/a" if mean != mean else f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def _interp(ns: argparse.Namespace) -> int:
    cfg = config_from(ns, InterpConfig)
    with loading(ns):
        from ..interp import run_interp

    for run, res in run_interp(ns.runs, cfg, progress=not ns.quiet).items():
        print(f"{run}:")
        w = res.get("weights")
        if w:
            print(f"  weights  ({w['features']} features): hit@10 {_ci(w['hit@10'])}, de-embedding percentile "
                  f"{_ci(w['percentile'])}, single-token {_ci(w['single_token'])}")
        a = res.get("absorption")
        if a and "skipped" in a:
            print(f"  absorption: skipped ({a['skipped']})")
        elif a:
            m = a["mean"]
            print(f"  absorption ({a['letters']} letters, {a['words']} words): rate {m['absorption']:.3f}, main-feature "
                  f"recall {m['main_recall']:.3f}, F1 {m['main_f1']:.3f} (probe recall {m['probe_recall']:.3f})")
        for task, p in sorted(res.get("probing", {}).items()):
            sparse = sorted((int(k[2:]), v) for k, v in p["mean"].items() if k.startswith("k="))
            ks = ", ".join(f"k={k} {v:.3f}" for k, v in sparse)
            print(f"  probing {task} ({len(p['classes'])} labels, {p['texts']} texts): dense {p['mean']['dense']:.3f}; "
                  f"{ks}")
        for name, s in res.get("llm", {}).items():
            speed = f", {s['features_per_minute']:.2f} features/min" if s.get("features_per_minute") else ""
            print(f"  {name} ({s['features']} features): detection {_ci(s['detection'])}, fuzzing {_ci(s['fuzzing'])}"
                  f"{speed}")
            if "detection_auroc" in s:
                print(f"    AUROC of the scorer's P(yes): detection {_ci(s['detection_auroc'])}, fuzzing "
                      f"{_ci(s['fuzzing_auroc'])}")
    return 0


def add_interp(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "interp", func=_interp,
        help="score how interpretable a dictionary's features are: LLM explanations (detection, fuzzing), sparse "
             "probing, weights-based prediction",
        description="Interpretability scores for a run (or every layer of a set), written to RUN/interp.json.\n\n"
        "llm: for a density-stratified, seeded sample of live features (--features), an LLM writes a one-line "
        "explanation from the feature's strongest and quantile-spread examples (RUN/features.sqlite, from "
        "`transcoders features`), then is tested on held-out text: detection (does this window activate the "
        "feature?) and fuzzing (are these marked tokens the activating ones?), each as balanced accuracy against "
        "windows where it is silent or wrongly marked (0.5 = chance), and as the AUROC of the scorer's P(yes), "
        "which a scorer's lean towards one answer does not hide. Explanations, prompts and answers are stored "
        "in the feature store (the viewer shows and searches them); each feature is saved as it is scored, so an "
        "interrupted run continues when rerun, and a rerun with more --features extends the same sample. The LLM is "
        f"local (default {DEFAULT_LLM}: install it with `make explainer`; any named model, folder or Hugging Face id "
        "works) or any OpenAI-compatible endpoint (--llm-url, key from the variable named by --llm-key-env).\n\n"
        "probing: k-sparse logistic probes on the features (k = 1, 2, 5, 10, 20) against a dense probe on the raw "
        "activation, one-vs-rest, on the default corpus's news topics and document sources, or --labelled FILE.\n\n"
        "absorption: SAEBench's first-letter task (simplified): how often a letter's main feature is silent on a word "
        "whose first letter a probe finds, while another feature reading that letter fires.\n\n"
        "weights: how well each sampled feature's de-embedding predicts the tokens it fires on, and the share of "
        "single-token features.",
        examples=["transcoders interp runs/l8 --scores probing,absorption,weights   # minutes, no LLM",
                  "transcoders interp runs/l8 --features 100                # all scores, the default local LLM",
                  "transcoders interp runs/l8 --llm qwen2.5-coder-0.5b-instruct --features 20",
                  "OPENAI_API_KEY=... transcoders interp runs/l8 --llm gpt-4o-mini --llm-url https://api.openai.com/v1",
                  "transcoders interp runs/l8 --scores probing --labelled my_texts.jsonl --label-column sentiment"],
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s), or a set folder holding layer_NN/ runs")
    add_dataclass_args(p, InterpConfig)
    add_quiet(p)


def _concepts(ns: argparse.Namespace) -> int:
    with loading(ns):
        from ..data.corpus import read_texts
        from ..interp import concepts
        from ..paths import atomic_write_json

    pos = [t for t, _ in read_texts(ns.positive, ns.text_column, what="--positive")]
    neg = [t for t, _ in read_texts(ns.negative, ns.text_column, what="--negative")]
    found = concepts(ns.runs, pos, neg, top=ns.top, batch=ns.batch, progress=not ns.quiet)
    for run, rows in found.items():
        print(f"{run}: {len(pos)} positive, {len(neg)} negative texts")
        print(f"  {'feature':>8} {'AUROC':>6} {'mean+':>7} {'mean-':>7} {'fires+':>6} {'fires-':>6}  label / example")
        for c in rows:
            note = c.label or c.example
            print(f"  {c.feature:>8} {c.auroc:>6.3f} {c.mean_pos:>7.3f} {c.mean_neg:>7.3f} {c.fires_pos:>6.0%} "
                  f"{c.fires_neg:>6.0%}  {note[:90]}")
    if ns.out:
        atomic_write_json(Path(ns.out), {str(r): [c.to_dict() for c in rows] for r, rows in found.items()})
        print(f"wrote {ns.out}")
    return 0


def add_concepts(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "concepts", func=_concepts,
        help="find the features that separate two sets of texts (which features detect my concept?)",
        description="Read every positive and negative text with the model (cut to the run's context length), take "
        "each feature's largest activation per text, and rank features by AUROC: the chance that a positive text "
        "scores above a negative one (1 = a perfect detector of the positives; ties count half). Each feature comes "
        "with its mean activation and firing rate in either set, and, where the run has a feature store, its label "
        "or LLM explanation and its strongest example. Files: .txt (one text per line) or .jsonl (--text-column).",
        examples=["transcoders concepts runs/l8 --positive french.txt --negative english.txt",
                  "transcoders concepts runs/set --positive code.jsonl --negative prose.jsonl --top 50 --out found.json"],
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s), or a set folder holding layer_NN/ runs")
    p.add_argument("--positive", required=True, metavar="FILE", help="texts that show the concept")
    p.add_argument("--negative", required=True, metavar="FILE", help="texts that do not")
    p.add_argument("--text-column", default="text", help="text field of .jsonl files (default: text)")
    p.add_argument("--top", type=int, default=20, help="features listed per run (default: 20)")
    p.add_argument("--batch", type=int, default=8, help="texts per forward pass (default: 8)")
    p.add_argument("--out", metavar="FILE.json", help="also write the ranking as JSON")
    add_quiet(p)


__all__ = ["add_concepts", "add_interp"]
