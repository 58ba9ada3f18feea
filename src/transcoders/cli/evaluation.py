"""``transcoders eval``."""

from __future__ import annotations

import argparse

from ..evaluation.config import EvalConfig
from ..flags import add_dataclass_args, config_from
from .common import add_command, add_quiet, loading


def _eval(ns: argparse.Namespace) -> int:
    cfg = config_from(ns, EvalConfig)
    with loading(ns):
        from ..evaluation import evaluate, format_table

    print(format_table(evaluate(ns.runs, cfg, progress=not ns.quiet)))
    return 0


def add_eval(sub: argparse._SubParsersAction) -> None:
    e = add_command(
        sub, "eval", func=_eval,
        help="L0, FVU, CE loss clean/spliced/mean-/zero-ablated, KL on held-out text",
        description="Evaluate run folders on the held-out split (text training never saw). Several runs are spliced "
        "in together (with --each, also one at a time; the clean pass and the ablations are shared). Prints a table "
        "and writes metrics.json into each run folder.",
        examples=["transcoders eval runs/l6", "transcoders eval runs/set --each --tokens 8192"],
    )
    e.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s), or a set folder holding layer_NN/ runs")
    add_dataclass_args(e, EvalConfig)
    add_quiet(e)
