"""``transcoders circuit``, ``connections`` and ``intervene``: thin wrappers over :mod:`transcoders.circuits`."""

from __future__ import annotations

import argparse

from ..circuits.config import CircuitConfig, ConnectionsConfig, InterveneConfig
from ..flags import add_dataclass_args, config_from
from .common import add_command, add_quiet, loading


def _circuit(ns: argparse.Namespace) -> int:
    cfg = config_from(ns, CircuitConfig)
    with loading(ns):
        from ..circuits.api import check_prompt, run_circuit

    check_prompt(cfg.prompt)
    report, _, _ = run_circuit(cfg, progress=not ns.quiet)
    print(report)
    return 0


def add_circuit(sub: argparse._SubParsersAction) -> None:
    c = add_command(
        sub, "circuit", func=_circuit,
        help="explain a feature or logit on a prompt: top paths or a full attribution graph, written as graph JSON",
        description="Trace the prompt once with the transcoder set spliced in (errors kept, so the forward is the real "
        "model's), freeze attention patterns and norm scales, and attribute the target exactly: every contribution is an "
        "activation times a weight product, inhibitory ones included, and a node's contributions plus its error and bias "
        "terms add up to its real value. --mode paths runs the paper's greedy path search; --mode graph builds a "
        "circuit-tracer-style attribution graph. Either way a graph JSON (circuit-tracer / Neuronpedia schema) is written.",
        examples=[
            "transcoders circuit --set runs/set --prompt 'The war lasted from the year 1732 to the year 17' --target logit:4-2",
            "transcoders circuit --set runs/set --prompt 'The capital of France is' --mode graph",
            "transcoders circuit --set runs/set --prompt 'I like cats and dogs' --target 12:345@-1 --depth 4",
        ],
    )
    add_dataclass_args(c, CircuitConfig)
    add_quiet(c)


def _connections(ns: argparse.Namespace) -> int:
    cfg = config_from(ns, ConnectionsConfig)
    with loading(ns):
        from ..circuits.api import run_connections

    print(run_connections(cfg))
    return 0


def _intervene(ns: argparse.Namespace) -> int:
    cfg = config_from(ns, InterveneConfig)
    with loading(ns):
        from ..circuits.api import run_intervene

    print(run_intervene(cfg, zero=ns.zero, clamp=ns.clamp, scale=ns.scale, patch=ns.patch))
    return 0


def add_connections(sub: argparse._SubParsersAction) -> None:
    c = add_command(
        sub, "connections", func=_connections,
        help="weights-only analysis of a feature: de-embeddings, logit effects, pullbacks; or the strongest weights "
        "between two layers",
        description="Input-invariant tables read from the weights alone (no prompt): which tokens excite a feature directly "
        "(de-embedding) or through an attention head's OV circuit, which next tokens it promotes and suppresses, which "
        "earlier features feed it most strongly (pullback), or the strongest feature-to-feature weights between two layers.",
        examples=["transcoders connections --set runs/set --feature 8:123 --head 5.3",
                  "transcoders connections --set runs/set --layers 0,8 --top 20"],
    )
    add_dataclass_args(c, ConnectionsConfig)


def add_intervene(sub: argparse._SubParsersAction) -> None:
    i = add_command(
        sub, "intervene", func=_intervene,
        help="zero, clamp, scale or patch features in the real model (or ablate a found circuit) and watch a logit or feature",
        description="Run the real model with the set's transcoders editing their own features: each edited layer's MLP output "
        "moves by (z' - z) W_dec, so with no edits the model is unchanged, and edits propagate through everything "
        "downstream. Reports the target before and after, the top predictions, and (with --random N) the same number of "
        "random active features zeroed as a baseline. Features: LAYER:FEATURE[@POS] (POS negative from the end; LAYER:* "
        "for every feature of a layer).",
        examples=[
            "transcoders intervene --set runs/set --prompt 'The capital of France is' --zero 12:345@-1",
            "transcoders intervene --set runs/set --prompt '...' --clamp 8:77@-1=5 --scale 10:3*0.5",
            "transcoders intervene --set runs/set --prompt '... 1732 to the year 17' --target logit:4-2 \\",
            "    --ablate-circuit runs/set/graphs/x-paths.json --circuit-top 20 --random 20",
        ],
    )
    add_dataclass_args(i, InterveneConfig)
    i.add_argument("--zero", action="append", default=[], metavar="L:F[@P]", help="set a feature to 0 (repeatable)")
    i.add_argument("--clamp", action="append", default=[], metavar="L:F[@P]=V", help="set a feature to V (repeatable)")
    i.add_argument("--scale", action="append", default=[], metavar="L:F[@P]*X", help="multiply a feature by X (repeatable)")
    i.add_argument("--patch", action="append", default=[], metavar="L:F[@P]",
                   help="take a feature's activation from --patch-from (repeatable; L:* for the whole layer)")
