"""The run-folder layout, in one place: which folder is a run, a set or a sweep, which runs are finished, where
each file goes, and opening runs for the commands that read them.

    RUN/                          one trained dictionary (any command that takes a dictionary takes this)
      config.json                 the dictionary's config; written after the weights, so its presence means a
      weights.safetensors         complete dictionary
      train_config.json           every training setting (a set keeps one for all its layers)
      train_log.jsonl             loss, FVU, L0 and dead fraction every 50 steps
      checkpoint.safetensors      only while training (a set keeps one for all its layers)
      metrics.json                from `transcoders eval`
      features.sqlite             from `transcoders features` (and the explanations of `transcoders interp`)
      interp.json                 interpretability scores (`transcoders interp`)
    SET/                          several layers trained together (`--layers 8,20`, `--layers all`)
      train_config.json, train_log.jsonl, checkpoint.safetensors
      layer_08/, layer_20/, ...   run folders, one per layer (complete or partial: any subset of the layers)
      graphs/*.json               circuit graphs (`transcoders circuit`)
    SWEEP/                        `transcoders sweep`
      sweep.json                  its settings (checked on resume)
      activations/                the shared float16 harvest
      <grid point>/               a run or a set per grid point
      results.csv, results.md, pareto_ce.png, pareto_fvu.png
      results.json                the rows with the weights they measured (a rerun evaluates nothing again)

Nothing else in the package spells these names or re-derives these rules.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from .io import CONFIG_FILE, WEIGHTS_FILE, load_dictionary, read_config
from .module import Dictionary, DictionaryConfig

TRAIN_CONFIG_FILE = "train_config.json"
TRAIN_LOG_FILE = "train_log.jsonl"
CHECKPOINT_FILE = "checkpoint.safetensors"
METRICS_FILE = "metrics.json"
STORE_FILE = "features.sqlite"
INTERP_FILE = "interp.json"
GRAPHS_DIR = "graphs"
CT_GRAPH_INDEX = "graph-metadata.json"  # circuit-tracer writes this index beside its graph files
SWEEP_FILE = "sweep.json"
ACTIVATIONS_DIR = "activations"
RESULTS_CSV, RESULTS_MD, RESULTS_JSON = "results.csv", "results.md", "results.json"
PLOT_CE, PLOT_FVU = "pareto_ce.png", "pareto_fvu.png"

_LAYER_DIR = re.compile(r"layer_(\d+)")
# folders that never hold runs (a walk does not descend into them)
_NOT_RUNS = (ACTIVATIONS_DIR, GRAPHS_DIR)


# ------------------------------------------------------------------------------------------------ names
def layer_dir(set_dir: str | os.PathLike, layer: int) -> Path:
    """The run folder of ``layer`` inside a set folder: ``SET/layer_08``."""
    return Path(set_dir) / f"layer_{layer:02d}"


def layer_of_dir(path: str | os.PathLike) -> int | None:
    """The layer a ``layer_NN`` folder name stands for, else None."""
    m = _LAYER_DIR.fullmatch(Path(path).name)
    return int(m.group(1)) if m else None


def run_dir(out: str | os.PathLike, layer: int, n_layers: int) -> Path:
    """Where training writes ``layer``'s run: ``out`` itself for one layer, ``out/layer_NN`` for several."""
    return Path(out) if n_layers == 1 else layer_dir(out, layer)


def store_path(run: str | os.PathLike) -> Path:
    """A run's feature store."""
    return Path(run) / STORE_FILE


def interp_path(run: str | os.PathLike) -> Path:
    return Path(run) / INTERP_FILE


def graphs_dir(set_dir: str | os.PathLike) -> Path:
    return Path(set_dir) / GRAPHS_DIR


def graph_path(set_dir: str | os.PathLike, name: str) -> Path:
    """Where `transcoders circuit` writes a graph by default: ``SET/graphs/NAME.json``."""
    return graphs_dir(set_dir) / f"{name}.json"


def graph_files(folder: str | os.PathLike) -> list[Path]:
    """The graph JSON files in ``folder/graphs`` (ours, or circuit-tracer's: its folder index is not a graph)."""
    return sorted(p for p in graphs_dir(folder).glob("*.json") if p.name != CT_GRAPH_INDEX)


def set_of_graph(graph: str | os.PathLike) -> Path:
    """The set (or run) folder a graph under ``SET/graphs/`` belongs to."""
    return Path(graph).parent.parent


# ------------------------------------------------------------------------------------------------ what a folder is
def is_run(path: str | os.PathLike) -> bool:
    """A folder holding one complete dictionary."""
    p = Path(path)
    return (p / CONFIG_FILE).is_file() and (p / WEIGHTS_FILE).is_file()


def layer_runs(set_dir: str | os.PathLike) -> list[Path]:
    """The complete ``layer_NN`` runs inside a set folder, by layer (any subset of the model's layers)."""
    p = Path(set_dir)
    if not p.is_dir():
        return []
    found = [(layer, q) for q in p.iterdir() if (layer := layer_of_dir(q)) is not None and q.is_dir() and is_run(q)]
    return [q for _, q in sorted(found, key=lambda lq: lq[0])]


def is_set(path: str | os.PathLike) -> bool:
    """A folder of ``layer_NN`` runs (one layer or many, complete or partial)."""
    return not is_run(path) and bool(layer_runs(path))


def is_sweep(path: str | os.PathLike) -> bool:
    return (Path(path) / SWEEP_FILE).is_file()


def has_sweep_results(path: str | os.PathLike) -> bool:
    return (Path(path) / RESULTS_CSV).is_file()


def in_training(out: str | os.PathLike) -> bool:
    """Training wrote a checkpoint here and has not finished (a killed run: resume it)."""
    return (Path(out) / CHECKPOINT_FILE).is_file()


def finished_runs(out: str | os.PathLike) -> list[Path]:
    """The runs a finished training job left in ``out`` (``[out]`` for one layer, its ``layer_NN`` runs for a set);
    empty while a checkpoint says the job is still under way."""
    if in_training(out):
        return []
    return [Path(out)] if is_run(out) else layer_runs(out)


def run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run folders; a set folder stands for all its runs. A path that is neither gets the one-line error that says
    what is wrong with it (missing, unfinished, corrupt)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / CONFIG_FILE).is_file():
            out.append(p)
        elif layer_runs(p):
            out.extend(layer_runs(p))
        else:
            read_config(p)  # no config.json here: raises the one-line error that says why (missing, unfinished)
    return out


def walk(root: str | os.PathLike, max_depth: int = 4) -> Iterator[Path]:
    """Every folder under ``root`` (itself included, ``max_depth`` levels down) that could hold runs, sets, sweeps or
    graphs, in sorted order; hidden folders and activation caches are skipped."""
    root = Path(root)
    for dirpath, dirnames, _ in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = [] if depth >= max_depth else sorted(d for d in dirnames if not d.startswith(".") and d not in _NOT_RUNS)
        yield Path(dirpath)


def train_settings(run: str | os.PathLike) -> dict | None:
    """The training settings a run was made with (its own ``train_config.json``, or its set's), or None."""
    run = Path(run)
    for p in (run / TRAIN_CONFIG_FILE, run.parent / TRAIN_CONFIG_FILE):
        if p.is_file():
            try:
                doc = json.loads(p.read_text())
            except (OSError, ValueError):
                return None
            return doc if isinstance(doc, dict) else None
    return None


def train_ctx_len(run: str | os.PathLike) -> int | None:
    """The context length a run was trained on (None when unknown, e.g. an imported dictionary)."""
    try:
        return int((train_settings(run) or {})["ctx_len"])
    except (KeyError, TypeError, ValueError):
        return None


def run_for_layer(set_dir: str | os.PathLike, layer: int) -> Path | None:
    """The run holding ``layer``'s dictionary: ``SET/layer_NN``, or the folder itself when it is one run of that
    layer (a one-layer "set"); None when there is none."""
    if is_run(layer_dir(set_dir, layer)):
        return layer_dir(set_dir, layer)
    if is_run(set_dir) and read_config(Path(set_dir)).layer == layer:
        return Path(set_dir)
    return None


# ------------------------------------------------------------------------------------------------ opening runs
@dataclass
class Runs:
    """Run folders opened for a command: their configs read and checked to belong to one model."""

    dirs: list[Path]
    configs: list[DictionaryConfig]

    @property
    def model(self) -> str:
        return self.configs[0].model

    @property
    def layers(self) -> list[int]:
        return [c.layer for c in self.configs]

    @property
    def ctx_len(self) -> int | None:
        """The training context length of the first run (what evaluation and feature collection read)."""
        return train_ctx_len(self.dirs[0])

    def load(self, *, expect_model: str | None = None, device: str = "cpu") -> list[Dictionary]:
        return [load_dictionary(r, expect_model=expect_model, device=device) for r in self.dirs]


def refuse_clt(dirs: list[Path], configs: list[DictionaryConfig], what: str) -> None:
    """Cross-layer transcoders are trained and evaluated, but other commands do not read them yet: say so rather
    than misread one."""
    clt = [d for d, c in zip(dirs, configs) if c.kind == "clt"]
    if clt:
        raise CheckpointError(f"{clt[0]} is one layer of a cross-layer transcoder, which can be trained and evaluated "
                              f"but not yet read by other commands: to {what} runs, give per-layer transcoders or SAEs")


def open_runs(paths: Iterable[str | os.PathLike], *, one_per_layer: bool = False, what: str = "use",
              clt: bool = False) -> Runs:
    """Open run folders (a set stands for its runs) for one command. Every run must belong to one model; with
    ``one_per_layer`` no two may replace the same layer. ``what`` names the command in the errors. A command that
    reads cross-layer transcoders says so (``clt``); the others refuse them."""
    dirs = run_dirs(paths)
    if not dirs:
        raise CheckpointError("no runs given")
    configs = [read_config(r) for r in dirs]
    if not clt:
        refuse_clt(dirs, configs, what)
    models = sorted({c.model for c in configs})
    if len(models) != 1:
        raise CheckpointError(f"runs were trained on different models {models}: {what} them separately")
    layers = [c.layer for c in configs]
    if one_per_layer and len(set(layers)) != len(layers):
        raise CheckpointError(f"two runs replace the same layer ({layers}): splice one dictionary per layer, "
                              "or evaluate each alone (--each-only)")
    return Runs(dirs, configs)
