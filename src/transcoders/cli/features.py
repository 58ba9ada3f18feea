"""``transcoders features``: a thin wrapper over :func:`transcoders.features.collect`."""

from __future__ import annotations

import argparse

from ..features.config import FeaturesConfig
from ..flags import add_dataclass_args, config_from
from .common import add_command, add_quiet, loading


def _features(ns: argparse.Namespace) -> int:
    cfg = config_from(ns, FeaturesConfig)
    with loading(ns):
        from ..features import collect, store_path

    for run, meta in collect(ns.runs, cfg, progress=not ns.quiet).items():
        speed = meta.get("tokens_per_second")
        print(f"{store_path(run)}: {meta['tokens_done']:,} tokens"
              + (f" ({speed:,.0f} tokens/s)" if speed else "") + ("" if meta["complete"] else " (incomplete)"))
    return 0


def add_features(sub: argparse._SubParsersAction) -> None:
    f = add_command(
        sub, "features", func=_features,
        help="collect feature dashboards' data (density, histograms, top and sampled examples, logit tables) into SQLite",
        description="Read held-out text once (the model stops at the highest layer needed; several runs share the pass) "
        "and record for every feature: firing density, an activation histogram, the contexts where it is strongest "
        "with per-token activations, a uniform sample of the contexts where it fires (grouped by activation quantile "
        "in the viewer), and weights-only tables (top/bottom logit effects, de-embeddings). Everything goes into "
        "RUN/features.sqlite, written atomically chunk by chunk: an interrupted pass continues when rerun, and a rerun "
        "with more --tokens extends the store.",
        examples=["transcoders features runs/demo-layer6", "transcoders features runs/set --tokens 200000"],
    )
    f.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s), or a set folder holding layer_NN/ runs")
    add_dataclass_args(f, FeaturesConfig)
    add_quiet(f)
