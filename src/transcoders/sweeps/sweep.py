"""Sweeps: train a grid of dictionaries from one cached harvest, evaluate them on the same held-out
tokens, and write a results table (CSV + Markdown) and Pareto plots (:mod:`.report`).

The grid is kinds × sparsity × widths. Sparsity is k for TopK/BatchTopK, else target L0 (the λ
controller) or λ itself. Every run reads the same on-disk activation cache, so the model runs once
for the whole sweep; a killed sweep resumes: finished runs are kept, an interrupted one continues
from its checkpoint. The evaluation is kept too (``results.json``, keyed by each run's weights file):
rerunning a finished sweep, as ``tune`` does with its proxy runs, evaluates nothing again.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..dictionary import KINDS, activation
from ..dictionary import runs as R
from ..errors import TranscodersError
from ..evaluation import EvalConfig, evaluate
from ..models import LoadedModel, load_model
from ..paths import atomic_write_json
from ..training import TrainConfig, train
from .config import SweepGrid
from .report import results_rows, write_report

SAE_SITES = {"sae-mlp-in": "mlp-in", "sae-mlp-out": "mlp-out"}  # kinds that pin an SAE's site


def _floats(s: str) -> list[float]:
    return [float(v) for v in str(s).split(",") if v.strip()]


def grid_configs(base: TrainConfig, grid: SweepGrid) -> list[tuple[str, TrainConfig]]:
    """``(name, config)`` for every point of the grid; names are the run folders' names."""
    kinds = [k.strip() for k in grid.kinds.split(",") if k.strip()]
    for k in kinds:
        if k == "clt":
            raise TranscodersError("sweeps and tune do not take cross-layer transcoders yet: train one with "
                                   "`transcoders train --kind clt` and evaluate it with `transcoders eval`")
        if k not in KINDS and k not in SAE_SITES:
            raise TranscodersError(f"unknown kind {k!r} in --kinds: use {', '.join(KINDS + tuple(SAE_SITES))}")
    axis: list[tuple[str, float]]
    if activation(base.activation).uses_k:
        axis = [("k", int(v)) for v in _floats(grid.ks)]
    elif grid.target_l0s:
        axis = [("target_l0", v) for v in _floats(grid.target_l0s)]
    elif grid.l1s:
        axis = [("l1", v) for v in _floats(grid.l1s)]
    else:
        raise TranscodersError(f"--activation {base.activation} needs --target-l0s (e.g. 16,32,64) or --l1s to sweep over")
    widths = [int(w) for w in _floats(grid.widths)] or [base.width]
    if not axis:
        raise TranscodersError("the sparsity axis of the sweep is empty: give --ks, --target-l0s or --l1s")
    out = []
    for kind in kinds:
        for name, value in axis:
            for width in widths:
                tag = {"k": f"k{value}", "target_l0": f"l0-{value:g}", "l1": f"l1-{value:g}"}[name]
                run = f"{kind}-{base.activation}-{tag}" + (f"-w{width}" if width else "")
                sparsity: dict[str, Any] = {name: value}
                pinned = kind in SAE_SITES
                cfg = replace(base, kind="sae" if pinned else kind, width=width, out=str(Path(base.out) / run),
                              sae_site=SAE_SITES[kind] if pinned else base.sae_site, **sparsity)
                out.append((run, cfg))
    return out


def run_sweep(base: TrainConfig, grid: SweepGrid, *, progress: bool = True, lm: LoadedModel | None = None) -> dict:
    """Train (or resume, or skip) every run of the grid, evaluate all of them (unless the same weights were
    evaluated by an earlier call), write the report. Returns ``{"rows": [...]}``, one row per run."""
    out = Path(base.out)
    if not base.cache_activations:
        base = replace(base, cache_activations=str(out / R.ACTIVATIONS_DIR))
    configs = grid_configs(base, grid)  # a bad grid is said before anything is written
    out.mkdir(parents=True, exist_ok=True)
    sweep_file = out / R.SWEEP_FILE
    record = {"train": asdict(base), "grid": asdict(grid), "runs": [name for name, _ in configs]}
    if sweep_file.exists():
        old = json.loads(sweep_file.read_text())
        if old.get("train") != record["train"] or old.get("grid") != record["grid"]:
            raise TranscodersError(f"{out} holds a sweep with other settings ({R.SWEEP_FILE}): use another --out, or delete it")
    atomic_write_json(sweep_file, record)
    lm = lm or load_model(base.model)
    n = len(configs)
    for i, (name, cfg) in enumerate(configs, 1):
        run = Path(cfg.out)
        if R.finished_runs(run):
            _say(progress, f"[{i}/{n}] {name}: already trained")
            continue
        resume = R.in_training(run)
        _say(progress, f"[{i}/{n}] {name}: {'resuming' if resume else 'training'}")
        train(cfg, resume=resume, overwrite=not resume, progress=progress, lm=lm)
    runs = [d for _, cfg in configs for d in R.finished_runs(cfg.out)]
    stamps = {str(r): _stamp(r) for r in runs}
    kept = out / R.RESULTS_JSON
    if kept.is_file() and (old := json.loads(kept.read_text())).get("weights") == stamps:
        _say(progress, f"the {len(runs)} runs were evaluated before ({R.RESULTS_JSON}): kept")
        return {"rows": old["rows"]}
    _say(progress, f"evaluating {len(runs)} runs on the same {grid.eval_tokens:,} held-out tokens")
    res = evaluate(runs, EvalConfig(corpus=base.corpus, text_column=base.text_column, tokens=grid.eval_tokens,
                                    each_only=True), lm=lm, ctx_len=base.ctx_len, progress=progress)
    rows = results_rows(res, configs)
    write_report(out, rows)
    atomic_write_json(kept, {"weights": stamps, "rows": rows})  # last: the report above is complete
    return {"rows": rows}


def _stamp(run: Path) -> list[int]:
    """What says a run's weights are the ones evaluated: the weights file's size and modification time."""
    st = (run / R.WEIGHTS_FILE).stat()
    return [st.st_size, st.st_mtime_ns]


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)
