"""The ``transcoders`` command: one thin subcommand per user task.

Library code raises :class:`~transcoders.errors.TranscodersError`; here it becomes a
one-line ``error: …`` message and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from dataclasses import MISSING, fields
from pathlib import Path

from ..errors import TranscodersError

EPILOG = textwrap.dedent(
    """\
    examples:
      transcoders train                                # 8x TopK transcoder on layer 6 of the default model, 2M tokens
      transcoders train --layers 6 --activation relu --l1 0.1 --out runs/relu6
      transcoders train --layers all --tokens 1000000 --out runs/set   # one transcoder per layer, one model pass
      transcoders train --resume runs/transcoder       # continue an interrupted run (on any number of processes)
      torchrun --nproc-per-node 8 -m transcoders train --device cuda --layers all --distribute-layers   # a node of GPUs
      transcoders eval runs/transcoder                 # L0, FVU, CE clean/spliced/ablated, KL
      transcoders export runs/set --to circuit-tracer out/ct   # or --to saelens
      transcoders import out/ct runs/imported          # SAELens or circuit-tracer folders -> run folders
      transcoders features runs/l6                     # dashboards' data: examples, histograms, logit tables -> SQLite
      transcoders serve runs                           # local web viewer on http://127.0.0.1:8041/
      transcoders circuit --set runs/set --prompt "The war lasted from the year 1732 to the year 17" --target logit:4-2
      transcoders connections --set runs/set --feature 12:345       # weights only: de-embeddings, logit effects
      transcoders intervene --set runs/set --prompt "..." --zero 12:345@-1   # causal check in the real model
    """
)


def add_dataclass_args(p: argparse.ArgumentParser, cls, skip: set[str] = frozenset()) -> None:
    """One ``--flag`` per dataclass field, with its type, default and help."""
    for f in fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not MISSING else None
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true", dest=f.name, help=f.metadata.get("help", ""))
            continue
        if f.metadata.get("required"):
            p.add_argument(flag, type=str, dest=f.name, required=True, help=f.metadata.get("help", ""))
            continue
        kw = {"default": default, "help": f"{f.metadata.get('help', '')} (default: %(default)s)"}
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        typ = type(default) if default is not None else str
        p.add_argument(flag, type=typ, dest=f.name, **kw)


def config_from(ns: argparse.Namespace, cls, skip: set[str] = frozenset()):
    """The dataclass ``cls`` filled from the flags :func:`add_dataclass_args` made for it."""
    return cls(**{f.name: getattr(ns, f.name) for f in fields(cls) if f.name not in skip})


def _train(ns: argparse.Namespace) -> int:
    from ..training import TrainConfig, read_train_config, train

    if ns.resume:
        cfg = read_train_config(ns.resume)
        cfg.out = ns.resume
        train(cfg, resume=True, progress=not ns.quiet)
        out = ns.resume
    else:
        cfg = config_from(ns, TrainConfig)
        train(cfg, overwrite=ns.overwrite, progress=not ns.quiet)
        out = cfg.out
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line for the job, not one per process
        print(f"done: {out}  (evaluate with `transcoders eval {out}`)")
    return 0


def _eval(ns: argparse.Namespace) -> int:
    from ..evaluation import evaluate, format_table

    if ns.threads:
        import torch

        torch.set_num_threads(ns.threads)
    res = evaluate(ns.runs, corpus=ns.corpus, text_column=ns.text_column, tokens=ns.tokens, batch=ns.batch,
                   together=not ns.each_only, each=ns.each or ns.each_only, progress=not ns.quiet)
    print(format_table(res))
    return 0


def _export(ns: argparse.Namespace) -> int:
    from ..dictionary.interop import export_runs
    from ..evaluation.evaluate import expand_runs

    for path in export_runs(expand_runs([ns.run]), ns.to, Path(ns.dir)):
        print(f"wrote {path}")
    return 0


def _import(ns: argparse.Namespace) -> int:
    from ..dictionary.interop import import_runs

    import shutil
    import tempfile

    from ..paths import atomic_replace_dir

    out = Path(ns.out)
    if out.exists() and any(out.iterdir()) and not ns.overwrite:
        from ..errors import RunExistsError

        raise RunExistsError(f"{out} already exists: pass --overwrite to replace it, or choose another folder")
    # Import into a fresh sibling folder and swap it in only when complete: a failed import loses nothing.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.import."))
    try:
        paths = import_runs(Path(ns.src), tmp / "run", fmt=ns.format, model=ns.model)
        atomic_replace_dir(tmp / "run", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for path in paths:
        print(f"wrote {out / path.relative_to(tmp / 'run')}")
    return 0


SWEEP_AXES = {"kind", "k", "l1", "target_l0", "width"}


def _sweep(ns: argparse.Namespace) -> int:
    from ..evaluation.sweep import RESULTS_MD, SweepGrid, run_sweep
    from ..training import TrainConfig

    base = config_from(ns, TrainConfig, SWEEP_AXES)
    grid = config_from(ns, SweepGrid)
    if base.threads:
        import torch

        torch.set_num_threads(base.threads)
    run_sweep(base, grid, progress=not ns.quiet)
    print((Path(base.out) / RESULTS_MD).read_text())
    print(f"results: {base.out}/results.csv, {base.out}/results.md, plots: {base.out}/pareto_ce.png, {base.out}/pareto_fvu.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ..training import TrainConfig

    p = argparse.ArgumentParser(
        prog="transcoders",
        description="Train and evaluate transcoders (sparse, readable replacements for a language model's MLP layers) "
        "and find feature circuits with them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train one transcoder (or SAE) per layer from a single model pass",
        description="Harvest (MLP input, MLP output) pairs from a model on a corpus and train a sparse dictionary per layer. "
        "Writes a run folder (config.json + weights.safetensors); checkpoints are atomic, so a killed run resumes with --resume.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_args(t, TrainConfig)
    t.add_argument("--resume", metavar="RUN", default="", help="continue the interrupted run in folder RUN with its saved settings")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    e = sub.add_parser(
        "eval",
        help="L0, FVU, CE loss clean/spliced/mean-/zero-ablated, KL on held-out text",
        description="Evaluate run folders on the held-out split (text training never saw). Several runs are spliced in together "
        "(with --each, also one at a time; the clean pass and the ablations are shared). "
        "Prints a table and writes metrics.json into each run folder.",
    )
    e.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s), or a set folder holding layer_NN/ runs")
    e.add_argument("--corpus", default="default", help="held-out text from this corpus (default: %(default)s)")
    e.add_argument("--text-column", default="text", dest="text_column", help="text column for .jsonl/.parquet/HF corpora")
    e.add_argument("--tokens", type=int, default=32768, help="held-out tokens to evaluate on (default: %(default)s)")
    e.add_argument("--batch", type=int, default=8, help="contexts per forward pass (default: %(default)s)")
    e.add_argument("--each", action="store_true", help="also splice each run in alone: a per-layer table beside the all-at-once figures")
    e.add_argument("--each-only", action="store_true", dest="each_only",
                   help="only splice each run in alone (runs may then share a layer, e.g. to compare candidates)")
    e.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_eval)

    from ..evaluation.sweep import SweepGrid

    w = sub.add_parser(
        "sweep",
        help="train a grid (kinds x sparsity x widths) from one harvest, evaluate all, write table + Pareto plots",
        description="Train every combination of --kinds, the sparsity axis (--ks for topk/batchtopk; --target-l0s or --l1s for "
        "relu/jumprelu) and --widths from one cached harvest of activations (the model runs once), evaluate each run alone on "
        "the same held-out tokens, and write results.csv, results.md, pareto_ce.png and pareto_fvu.png into --out. "
        "Interrupted sweeps resume: rerun the same command.",
        epilog="example:\n  transcoders sweep --layers 6 --kinds transcoder,skip-transcoder,sae --ks 16,32,64 --tokens 1000000 --out runs/sweep6",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_args(w, SweepGrid)
    add_dataclass_args(w, TrainConfig, skip=SWEEP_AXES)
    w.set_defaults(out="runs/sweep", tokens=1_000_000)
    w.add_argument("--quiet", action="store_true", help="no progress bars")
    w.set_defaults(func=_sweep)

    x = sub.add_parser(
        "export",
        help="write a run (or a set of runs) in SAELens or circuit-tracer format",
        description="Export run folders for other tools. SAELens: cfg.json + sae_weights.safetensors (one folder per run). "
        "circuit-tracer: config.yaml + layer_{i}.safetensors (W_enc [F,d], W_dec [F,d], b_enc, b_dec, optional W_skip, "
        "activation_function.threshold for JumpReLU/BatchTopK). Tensors are copied exactly: `transcoders import` reads them back.",
    )
    x.add_argument("run", metavar="RUN", help="run folder, or a set folder holding layer_NN/ runs")
    x.add_argument("--to", required=True, choices=("saelens", "circuit-tracer"), help="target format")
    x.add_argument("dir", metavar="DIR", help="folder to write")
    x.set_defaults(func=_export)

    m = sub.add_parser(
        "import",
        help="read SAELens, circuit-tracer or EleutherAI sparsify dictionaries into run folders",
        description="Import dictionaries made by other tools (MLP-input/-output SAEs and transcoders) as run folders "
        "that every transcoders command accepts. The format is detected from the files unless --from is given.",
    )
    m.add_argument("src", metavar="SRC", help="a SAELens folder (cfg.json), a folder of them, a circuit-tracer folder, or a "
                   "sparsify run (hookpoint folders with sae.safetensors)")
    m.add_argument("out", metavar="OUT", help="run folder to create (a set folder when SRC holds several layers)")
    m.add_argument("--from", dest="format", choices=("saelens", "circuit-tracer", "sparsify"), default=None,
                   help="source format (default: detect)")
    m.add_argument("--model", default=None, help="model the dictionaries belong to, when the files do not say (e.g. default)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing OUT folder")
    m.set_defaults(func=_import)

    from .circuits import add_circuit_parsers
    from .features import add_features_parser
    from .serve import add_serve_parser

    add_features_parser(sub)
    add_circuit_parsers(sub)
    add_serve_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bars say what is happening; theirs would garble one-line errors
    try:  # the hub client logs each network retry as a warning; the final error says it in one line
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    try:
        return ns.func(ns)
    except TranscodersError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        hint = {"features": "rerun the same `transcoders features` command to continue"}.get(
            ns.command, "continue with `transcoders train --resume RUN`")
        print(f"interrupted: the last checkpoint is kept; {hint}", file=sys.stderr)
        return 130


def entry() -> None:  # pragma: no cover - console script
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
