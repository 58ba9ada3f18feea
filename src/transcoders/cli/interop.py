"""``transcoders export`` and ``transcoders import``: other tools' formats."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..dictionary.names import FORMATS, IMPORT_FORMATS
from .common import add_command, loading


def _export(ns: argparse.Namespace) -> int:
    with loading(ns):
        from ..dictionary.interop import export_runs
        from ..dictionary.runs import run_dirs

    for path in export_runs(run_dirs([ns.run]), ns.to, Path(ns.dir)):
        print(f"wrote {path}")
    return 0


def _import(ns: argparse.Namespace) -> int:
    with loading(ns):
        from ..dictionary.interop import import_folder

    for path in import_folder(Path(ns.src), Path(ns.out), fmt=ns.format, model=ns.model, overwrite=ns.overwrite):
        print(f"wrote {path}")
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    x = add_command(
        sub, "export", func=_export,
        help="write a run (or a set of runs) in SAELens or circuit-tracer format",
        description="Export run folders for other tools. SAELens: cfg.json + sae_weights.safetensors (one folder per "
        "run). circuit-tracer: config.yaml + layer_{i}.safetensors (W_enc [F,d], W_dec [F,d], b_enc, b_dec, optional "
        "W_skip, activation_function.threshold for JumpReLU/BatchTopK). Tensors are copied exactly: `transcoders "
        "import` reads them back.",
        examples=["transcoders export runs/set --to circuit-tracer out/ct", "transcoders export runs/sae6 --to saelens out/sae6"],
    )
    x.add_argument("run", metavar="RUN", help="run folder, or a set folder holding layer_NN/ runs")
    x.add_argument("--to", required=True, choices=FORMATS, help="target format")
    x.add_argument("dir", metavar="DIR", help="folder to write")


def add_import(sub: argparse._SubParsersAction) -> None:
    m = add_command(
        sub, "import", func=_import,
        help="read SAELens, circuit-tracer or EleutherAI sparsify dictionaries into run folders",
        description="Import dictionaries made by other tools (MLP-input/-output SAEs and transcoders) as run folders "
        "that every transcoders command accepts. The format is detected from the files unless --from is given.",
        examples=["transcoders import out/ct runs/from-ct", "transcoders import sae-folder runs/sae --model default"],
    )
    m.add_argument("src", metavar="SRC", help="a SAELens folder (cfg.json), a folder of them, a circuit-tracer folder, "
                   "or a sparsify run (hookpoint folders with sae.safetensors)")
    m.add_argument("out", metavar="OUT", help="run folder to create (a set folder when SRC holds several layers)")
    m.add_argument("--from", dest="format", choices=IMPORT_FORMATS, default=None, help="source format (default: detect)")
    m.add_argument("--model", default=None, help="model the dictionaries belong to, when the files do not say (e.g. default)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing OUT folder")
