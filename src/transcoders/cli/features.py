"""``transcoders features``: a thin wrapper over :func:`transcoders.features.collect`."""

from __future__ import annotations

import argparse

from . import config_from


def _features(ns: argparse.Namespace) -> int:
    from ..features import FeaturesConfig, collect

    cfg = config_from(ns, FeaturesConfig)
    for run, meta in collect(ns.runs, cfg, progress=not ns.quiet).items():
        speed = meta.get("tokens_per_second")
        print(f"{run}/features.sqlite: {meta['tokens_done']:,} tokens"
              + (f" ({speed:,.0f} tokens/s)" if speed else "") + ("" if meta["complete"] else " (incomplete)"))
    return 0


def add_features_parser(sub) -> None:
    from ..features import FeaturesConfig
    from . import add_dataclass_args

    f = sub.add_parser(
        "features",
        help="collect feature dashboards' data (density, histograms, top and sampled examples, logit tables) into SQLite",
        description="Read held-out text once (the model stops at the highest layer needed; several runs share the pass) and "
        "record for every feature: firing density, an activation histogram, the contexts where it is strongest with "
        "per-token activations, a uniform sample of the contexts where it fires (grouped by activation quantile in the "
        "viewer), and weights-only tables (top/bottom logit effects, de-embeddings). Everything goes into "
        "RUN/features.sqlite, written atomically chunk by chunk: an interrupted pass continues when rerun, and a rerun "
        "with more --tokens extends the store.",
        epilog="examples:\n  transcoders features runs/demo-layer6\n  transcoders features runs/set --tokens 200000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s), or a set folder holding layer_NN/ runs")
    add_dataclass_args(f, FeaturesConfig)
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=_features)
