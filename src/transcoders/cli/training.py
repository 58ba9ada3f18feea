"""``transcoders train``, ``transcoders sweep`` and ``transcoders tune``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..flags import add_dataclass_args, config_from
from ..sweeps.config import TUNE_FILE, TUNE_PLOT, SweepGrid, TuneTarget
from ..training.config import TrainConfig
from .common import add_command, add_quiet, loading

SWEEP_AXES = {"kind", "k", "l1", "target_l0", "width"}  # TrainConfig fields a sweep's grid sets
TUNE_AXES = {"k", "l1", "target_l0"}  # TrainConfig fields tune chooses


def _train(ns: argparse.Namespace) -> int:
    cfg = None if ns.resume else config_from(ns, TrainConfig)  # argument errors before the heavy imports
    with loading(ns):
        from ..training import read_train_config, train

    if cfg is None:
        cfg = read_train_config(ns.resume)
        cfg.out = ns.resume
        train(cfg, resume=True, progress=not ns.quiet)
    else:
        train(cfg, overwrite=ns.overwrite, progress=not ns.quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line for the job, not one per process
        print(f"done: {cfg.out}  (evaluate with `transcoders eval {cfg.out}`)")
    return 0


def _sweep(ns: argparse.Namespace) -> int:
    base, grid = config_from(ns, TrainConfig, SWEEP_AXES), config_from(ns, SweepGrid)
    with loading(ns):
        from ..dictionary import runs as R
        from ..sweeps import run_sweep

    run_sweep(base, grid, progress=not ns.quiet)
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
        "pareto_fvu.png into --out. Interrupted sweeps resume: rerun the same command (finished runs are neither "
        "retrained nor evaluated again).",
        examples=["transcoders sweep --layers 6 --kinds transcoder,skip-transcoder,sae --ks 16,32,64 --tokens 1000000 "
                  "--out runs/sweep6"],
    )
    add_dataclass_args(w, SweepGrid)
    add_dataclass_args(w, TrainConfig, skip=SWEEP_AXES)
    w.set_defaults(out="runs/sweep", tokens=1_000_000)
    add_quiet(w, "no progress bars")


def _tune(ns: argparse.Namespace) -> int:
    base, aim = config_from(ns, TrainConfig, TUNE_AXES), config_from(ns, TuneTarget)
    aim.metric()  # exactly one target, within reach: said before the heavy imports
    with loading(ns):
        from ..sweeps import run_tune

    rec = run_tune(base, aim, progress=not ns.quiet)
    key, target = rec["target"]["metric"], rec["target"]["value"]
    print(f"{'width':>7} {'L0 set':>7} {'L0':>7} {'FVU':>7} {'CE rec.':>8}  proxy run reaches {key} {target:g}?")
    for p in sorted(rec["curve"], key=lambda p: (p["width"], p["l0_setting"])):
        print(f"{p['width']:>7} {p['l0_setting']:>7} {p['l0']:>7.1f} {p['fvu']:>7.3f} {p['ce_recovered_mean']:>8.1%}  "
              f"{'yes' if p['reaches'] else 'no'}")
    f = rec["final"]
    print(f"chosen: width {f['width']}, L0 {f['l0_setting']}; the final run ({f['run']}): L0 {f['l0']:.1f}, FVU "
          f"{f['fvu']:.3f}, CE recovered {f['ce_recovered_mean']:.1%} (vs zero ablation {f['ce_recovered_zero']:.1%})"
          f"{'' if f['reaches'] else ' -- short of the target: more --tokens, or a lower --ladder rung'}")
    out = Path(base.out)
    print(f"curve: {out / TUNE_FILE}, plot: {out / TUNE_PLOT}")
    return 0


def add_tune(sub: argparse._SubParsersAction) -> None:
    t = add_command(
        sub, "tune", func=_tune,
        help="find the smallest L0 and a width that reach a CE-recovered or FVU target, then train that dictionary",
        description="Choose sparsity and width automatically. From one cached harvest, short proxy runs measure the "
        "target metric along an L0 ladder (--ladder; k for topk/batchtopk, the target L0 for relu/jumprelu) at the "
        "starting width, doubling the width while no rung reaches the target; then bisect between the last rung that "
        "misses and the first that reaches (--refine), halve the width while that L0 still reaches it, and train the "
        "final dictionary on --tokens into OUT/final. Every run is evaluated alone on the same held-out tokens; CE "
        "recovered is against mean ablation of the MLP. The measured curve goes to OUT/tune.json and OUT/tune.png. "
        "Users who know the sparsity they want skip this: `transcoders train --k 32` or `--target-l0 32`. Interrupted "
        "tunes resume: rerun the same command.",
        examples=["transcoders tune --layers 8 --target-ce-recovered 0.9 --out runs/tune8",
                  "transcoders tune --layers 8 --target-fvu 0.2 --activation relu --out runs/tune8-relu",
                  "transcoders tune --model qwen2.5-coder-0.5b-instruct --layers 12 --target-ce-recovered 0.8 "
                  "--expansion 4 --out runs/qwen-tune12"],
    )
    add_dataclass_args(t, TuneTarget)
    add_dataclass_args(t, TrainConfig, skip=TUNE_AXES)
    t.set_defaults(out="runs/tune", tokens=1_000_000)
    add_quiet(t, "no progress bars")
