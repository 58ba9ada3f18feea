"""``transcoders interp``: every interpretability score of a run or set, into ``RUN/interp.json``.

``llm`` (:mod:`.autointerp`: explanations, detection, fuzzing), ``probing`` (:mod:`.probing` on :mod:`.tasks`),
``absorption`` (:mod:`.absorption`), ``weights`` (:mod:`.weights`). The quick ones run first; the file is rewritten
(atomically) after each, keeping what earlier runs of the command wrote for other scores or LLMs.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from pathlib import Path

from ..dictionary.runs import interp_path, open_runs, run_dirs
from ..errors import InterpError
from ..models import LoadedModel, load_model
from ..paths import atomic_write_json
from .absorption import first_letter_absorption
from .autointerp import feature_order, interp, open_store
from .config import SCORES, InterpConfig
from .llm import LLM
from .pooled import pooled_codes
from .probing import sparse_probing
from .tasks import default_tasks, labelled_task
from .weights import weights_prediction

__all__ = ["parse_scores", "read_results", "run_interp"]


def parse_scores(text: str) -> list[str]:
    got = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in got if s not in SCORES]
    if bad or not got:
        raise InterpError(f"unknown score {bad[0] if bad else text!r} in --scores: use some of {', '.join(SCORES)}")
    return got


def read_results(run: Path) -> dict:
    path = interp_path(run)
    return json.loads(path.read_text()) if path.is_file() else {}


def _merge(run: Path, key: str, name: str | None, value: dict) -> None:
    res = read_results(run)
    if name is None:
        res[key] = value
    else:
        res.setdefault(key, {})[name] = value
    atomic_write_json(interp_path(run), res)


def run_interp(runs: Sequence[str | Path], cfg: InterpConfig, *, llm: LLM | None = None, lm: LoadedModel | None = None,
               progress: bool = True) -> dict[Path, dict]:
    """The scores ``cfg.scores`` for every run; returns each run's ``interp.json`` content."""
    scores = parse_scores(cfg.scores)
    dirs = run_dirs(runs)
    if not dirs:
        raise InterpError("no runs given")
    if "llm" in scores or "weights" in scores:
        for r in dirs:
            open_store(r).close()  # a missing store is reported before any model loads
    if {"probing", "absorption", "weights"} & set(scores):
        opened = open_runs(dirs, what="score", clt=True)
        model = lm or load_model(opened.model, n_layers=max(opened.layers) + 1)
        dicts = opened.load(expect_model=model.name)
        if "weights" in scores:
            for r, d in zip(opened.dirs, dicts):
                con = open_store(r)
                try:
                    _merge(r, "weights", None, weights_prediction(con, model.adapter, d,
                                                                  feature_order(con, cfg.seed)[: cfg.features]))
                finally:
                    con.close()
        if "probing" in scores:
            tasks = ({Path(cfg.labelled).stem: labelled_task(cfg.labelled, cfg.text_column, cfg.label_column,
                                                              cfg.probe_texts, cfg.seed)}
                     if cfg.labelled else default_tasks(cfg.probe_texts, cfg.seed))
            for name, rows in tasks.items():
                pooled = pooled_codes(model, dicts, [t for t, _ in rows], ctx_len=opened.ctx_len or 128,
                                      progress=progress, desc=f"probing {name}")
                for r, p in zip(opened.dirs, pooled):
                    _merge(r, "probing", name, sparse_probing(p, [lab for _, lab in rows], seed=cfg.seed))
        if "absorption" in scores:
            try:  # a vocabulary without enough whole words skips this score, not the others
                found: list[dict] = first_letter_absorption(model, dicts, seed=cfg.seed)
            except InterpError as e:
                found = [{"skipped": str(e)} for _ in dicts]
            for r, res in zip(opened.dirs, found):
                _merge(r, "absorption", None, res)
        del model, dicts
        gc.collect()
    if "llm" in scores:
        for r, summary in interp(dirs, cfg, llm=llm, progress=progress).items():
            _merge(r, "llm", summary["llm"], summary)
    return {r: read_results(r) for r in dirs}
