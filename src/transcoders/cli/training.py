"""``transcoders train`` and ``transcoders sweep``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..dictionary import runs as R
from ..flags import add_dataclass_args, config_from
from ..sweeps import SweepGrid, run_sweep
from ..training import TrainConfig, read_train_config, train
from .common import add_command, add_quiet

SWEEP_AXES = {"kind", "k", "l1", "target_l0", "width"}  # TrainConfig fields a sweep's grid sets


def _train(ns: argparse.Namespace) -> int:
    if ns.resume:
        cfg = read_train_config(ns.resume)
        cfg.out = ns.resume
        train(cfg, resume=True, progress=not ns.quiet)
    else:
        cfg = config_from(ns, TrainConfig)
        train(cfg, overwrite=ns.overwrite, progress=not ns.quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line for the job, not one per process
        print(f"done: {cfg.out}  (evaluate with `transcoders eval {cfg.out}`)")
    return 0


def _sweep(ns: argparse.Namespace) -> int:
    base = config_from(ns, TrainConfig, SWEEP_AXES)
    run_sweep(base, config_from(ns, SweepGrid), progress=not ns.quiet)
    out = Path(base.out)
    print((out / R.RESULTS_MD).read_text())
    print(f"results: {out / R.RESULTS_CSV}, {out / R.RESULTS_MD}, plots: {out / R.PLOT_CE}, {out / R.PLOT_FVU}")
    return 0


def add_train(sub: argparse._SubParsersAction, epilog: str) -> None:
    t = add_command(
        sub, "train", func=_train, epilog=epilog,
        help="train one transcoder (or SAE) per layer from a single model pass",
        description="Harvest (MLP input, MLP output) pairs from a model on a corpus and train a sparse dictionary per "
        "layer. Writes a run folder (config.json + weights.safetensors); checkpoints are atomic, so a killed run "
        "resumes with --resume.",
    )
    add_dataclass_args(t, TrainConfig)
    t.add_argument("--resume", metavar="RUN", default="",
                   help="continue the interrupted run in folder RUN with its saved settings")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    add_quiet(t)


def add_sweep(sub: argparse._SubParsersAction) -> None:
    w = add_command(
        sub, "sweep", func=_sweep,
        help="train a grid (kinds x sparsity x widths) from one harvest, evaluate all, write table + Pareto plots",
        description="Train every combination of --kinds, the sparsity axis (--ks for topk/batchtopk; --target-l0s or "
        "--l1s for relu/jumprelu) and --widths from one cached harvest of activations (the model runs once), evaluate "
        "each run alone on the same held-out tokens, and write results.csv, results.md, pareto_ce.png and "
        "pareto_fvu.png into --out. Interrupted sweeps resume: rerun the same command.",
        examples=["transcoders sweep --layers 6 --kinds transcoder,skip-transcoder,sae --ks 16,32,64 --tokens 1000000 "
                  "--out runs/sweep6"],
    )
    add_dataclass_args(w, SweepGrid)
    add_dataclass_args(w, TrainConfig, skip=SWEEP_AXES)
    w.set_defaults(out="runs/sweep", tokens=1_000_000)
    add_quiet(w, "no progress bars")
