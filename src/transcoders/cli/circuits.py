"""``transcoders circuit``, ``connections`` and ``intervene``: thin wrappers over :mod:`transcoders.circuits`."""

from __future__ import annotations

import argparse
from dataclasses import fields


def _circuit(ns: argparse.Namespace) -> int:
    from ..circuits.api import CircuitConfig, check_prompt, run_circuit

    cfg = CircuitConfig(**{f.name: getattr(ns, f.name) for f in fields(CircuitConfig)})
    check_prompt(cfg.prompt)
    report, _, _ = run_circuit(cfg, progress=not ns.quiet)
    print(report)
    return 0


def add_circuit_parsers(sub) -> None:
    from ..circuits.api import CircuitConfig
    from . import add_dataclass_args

    c = sub.add_parser(
        "circuit",
        help="explain a feature or logit on a prompt: top paths or a full attribution graph, written as graph JSON",
        description="Trace the prompt once with the transcoder set spliced in (errors kept, so the forward is the real "
        "model's), freeze attention patterns and norm scales, and attribute the target exactly: every contribution is an "
        "activation times a weight product, inhibitory ones included, and a node's contributions plus its error and bias "
        "terms add up to its real value. --mode paths runs the paper's greedy path search; --mode graph builds a "
        "circuit-tracer-style attribution graph. Either way a graph JSON (circuit-tracer / Neuronpedia schema) is written.",
        epilog="examples:\n"
        "  transcoders circuit --set runs/set --prompt 'The war lasted from the year 1732 to the year 17' --target logit:4-2\n"
        "  transcoders circuit --set runs/set --prompt 'The capital of France is' --mode graph\n"
        "  transcoders circuit --set runs/set --prompt 'I like cats and dogs' --target 12:345@-1 --depth 4",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_args(c, CircuitConfig)
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_circuit)
