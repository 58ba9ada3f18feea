"""The circuit tasks as plain functions with config dataclasses (their fields are the CLI flags)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CircuitError
from .graph import attribution_graph, prune, scores
from .graph_json import attribution_graph_json, merged_graph_json, write_json
from .paths import find_paths, format_paths, merge_paths, strongest_nodes
from .replacement import FrozenPrompt, Replacement
from .targets import Target, logit_target, parse_target
from .transcoder_set import TranscoderSet


def opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


def load_replacement(set_dir: str, model: str = "", device: str = "cpu", dtype: str = "float32") -> Replacement:
    """A model with its transcoder set (the model named in the set's configs unless ``model`` is given)."""
    from ..models import load_model

    tset = TranscoderSet.load(set_dir, device=device)
    lm = load_model(model or tset.model, dtype=getattr(torch, dtype), device=device)
    return Replacement(lm, tset)


def default_target(fp: FrozenPrompt) -> Target:
    return logit_target(fp, int(fp.logits().argmax()))


def slugify(text: str, n: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:n].lower() or "graph"


@dataclass
class CircuitConfig:
    set: str = opt("", "transcoder set folder (from `transcoders train --layers all`), or one run folder", required=True)
    prompt: str = opt("", "the text to explain", required=True)
    target: str = opt("", "what to explain: LAYER:FEATURE[@POS], logit:TOKEN, logit:A-B or resid:LAYER:FILE[@POS] "
                          "(default: paths: the top predicted token's logit; graph: the top logits)")
    mode: str = opt("paths", "paths: the paper's greedy path search; graph: a full attribution graph (circuit-tracer style)",
                    choices=("paths", "graph"))
    depth: int = opt(3, "paths: steps of the beam search")
    branches: int = opt(15, "paths: paths kept per step (and candidates per node)")
    include_special: bool = opt(False, "paths: also follow attention from special tokens (BOS attention sinks)")
    max_feature_nodes: int = opt(4096, "graph: feature rows computed, most influential first (0: all)")
    max_logits: int = opt(10, "graph: top logits used as outputs when no --target is given")
    logit_prob: float = opt(0.95, "graph: ...until their probabilities add up to this")
    node_threshold: float = opt(0.8, "graph: keep the nodes carrying this share of the influence on the outputs")
    edge_threshold: float = opt(0.98, "graph: keep the edges carrying this share")
    batch_size: int = opt(64, "graph: target rows per backward pass")
    out: str = opt("", "graph JSON to write (default: SET/graphs/<prompt>-<mode>.json)")
    top: int = opt(20, "lines of paths / nodes to print")
    model: str = opt("", "model to load instead of the one the set was trained on")
    device: str = opt("cpu", "torch device")
    dtype: str = opt("float32", "model dtype", choices=("float32", "bfloat16", "float16"))


def run_circuit(cfg: CircuitConfig, rep: Replacement | None = None, progress: bool = False) -> tuple[str, Path, dict]:
    """``(report, json_path, json_doc)``."""
    rep = rep or load_replacement(cfg.set, cfg.model, cfg.device, cfg.dtype)
    t0 = time.perf_counter()
    fp = rep.trace(cfg.prompt)[0]
    t_trace = time.perf_counter() - t0
    target = parse_target(fp, cfg.target) if cfg.target else None
    slug = f"{slugify(cfg.prompt)}-{cfg.mode}"
    lines = [f"prompt: {len(fp.ids)} tokens  " + " | ".join(_tokens(rep, fp))]
    if cfg.mode == "paths":
        target = target or default_target(fp)
        t1 = time.perf_counter()
        search = find_paths(fp, target, depth=cfg.depth, branches=cfg.branches, include_special=cfg.include_special)
        merged = merge_paths(search)
        t_search = time.perf_counter() - t1
        lines.append(f"target: {target.label} = {search.root.value:.4f}  (depth {cfg.depth}, {cfg.branches} branches; "
                     f"trace {t_trace:.2f}s, search {t_search:.2f}s)")
        lines.append("\nstrongest paths (path attribution to the target, sign kept):")
        lines.append(format_paths(search, cfg.top))
        lines.append("\nstrongest nodes (summed over distinct paths):")
        lines += [f"{v:+9.4f}  {c}" for c, v in strongest_nodes(merged, top=cfg.top)]
        doc = merged_graph_json(fp, merged, slug, {"depth": cfg.depth, "branches": cfg.branches})
    else:
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=0, desc="attribution rows", unit="row", leave=False)

            def report(done, total):
                bar.total = total
                bar.n = done
                bar.refresh()
        g = attribution_graph(fp, target, max_logits=cfg.max_logits, logit_prob=cfg.logit_prob,
                              max_feature_nodes=cfg.max_feature_nodes or None, batch_size=cfg.batch_size,
                              progress=report if bar is not None else None)
        if bar is not None:
            bar.close()
        doc = attribution_graph_json(g, slug, cfg.node_threshold, cfg.edge_threshold)
        replacement, completeness = scores(g)
        node_mask, edge_mask, _ = prune(g, cfg.node_threshold, cfg.edge_threshold)
        lines.append(f"outputs: {', '.join(f'{t.label} (p={float(w):.3f})' for t, w in zip(g.outputs, g.output_weights))}")
        lines.append(f"active features {g.n_active}, rows computed {g.n_features}; kept after pruning: "
                     f"{int(node_mask.sum())} nodes, {int(edge_mask.sum())} edges  (trace {t_trace:.2f}s, "
                     f"attribution {g.timings['attribution_s']:.2f}s)")
        lines.append(f"replacement score {replacement:.3f}, completeness score {completeness:.3f}")
        lines.append("\nmost influential features:")
        feats = [n for n in doc["nodes"] if n["feature_type"] == "cross layer transcoder"]
        feats.sort(key=lambda n: n["influence"])
        lines += [f"  tc{n['layer']}[{n['node_id'].split('_')[1]}]@{n['ctx_idx']}  activation {n['activation']:.3f}"
                  for n in feats[: cfg.top]]
    out = Path(cfg.out) if cfg.out else Path(cfg.set) / "graphs" / f"{slug}.json"
    write_json(doc, out)
    lines.append(f"\nwrote {out} ({len(doc['nodes'])} nodes, {len(doc['links'])} links)")
    return "\n".join(lines), out, doc


def _tokens(rep: Replacement, fp: FrozenPrompt) -> list[str]:
    tok = rep.lm.tokenizer
    return [f"{i}:{tok.decode([t])!r}" if tok is not None else f"{i}:#{t}" for i, t in enumerate(fp.ids.tolist())]


def check_prompt(text: str) -> str:
    if not text.strip():
        raise CircuitError("--prompt is empty: give the text to explain")
    return text
