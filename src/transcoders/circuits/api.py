"""The circuit tasks as plain functions with config dataclasses (their fields are the CLI flags)."""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..dictionary.runs import graph_path
from ..errors import CircuitError
from ..models import load_model
from . import weights as W
from .config import CircuitConfig, ConnectionsConfig, InterveneConfig
from .graph import attribution_graph, prune, scores
from .graph_json import (
    attribution_graph_json,
    feature_node_id,
    feature_nodes,
    graph_mode,
    merged_graph_json,
    read_json,
    write_json,
)
from .interventions import Edit, Measure, intervene, parse_edit, random_ablations
from .paths import find_paths, format_paths, merge_paths, strongest_nodes
from .replacement import FrozenPrompt, Replacement
from .specs import feature_label, parse_feature
from .targets import Target, logit_target, parse_target, token_probabilities
from .transcoder_set import TranscoderSet


def load_replacement(set_dir: str, model: str = "", device: str = "cpu", dtype: str = "float32") -> Replacement:
    """A model with its transcoder set (the model named in the set's configs unless ``model`` is given)."""
    tset = TranscoderSet.load(set_dir, device=device)
    lm = load_model(model or tset.model, dtype=getattr(torch, dtype), device=device)
    return Replacement(lm, tset)


def default_target(fp: FrozenPrompt, demean: bool = True) -> Target:
    """The top predicted token's logit (demeaned unless told otherwise)."""
    return logit_target(fp, int(fp.logits().argmax()), demean=demean)


def slugify(text: str, n: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:n].lower() or "graph"


# settings that do not change a graph's content (where it goes, how it is computed or printed)
_NAME_IGNORES = frozenset({"set", "out", "top", "device", "batch_size"})


def graph_name(cfg: CircuitConfig) -> str:
    """A graph's default file name: the prompt's start, the mode and the target, then a digest of the whole prompt
    and every setting that changes the graph. Another target or setting never replaces an earlier graph; the same
    command run again rewrites its own."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in _NAME_IGNORES}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return f"{slugify(cfg.prompt)}-{cfg.mode}-{slugify(cfg.target, 24) if cfg.target else 'top'}-{digest}"


def run_circuit(cfg: CircuitConfig, rep: Replacement | None = None, progress: bool = False) -> tuple[str, Path, dict]:
    """``(report, json_path, json_doc)``."""
    rep = rep or load_replacement(cfg.set, cfg.model, cfg.device, cfg.dtype)
    t0 = time.perf_counter()
    fp = rep.trace(cfg.prompt, keep_bos=cfg.keep_bos)[0]
    t_trace = time.perf_counter() - t0
    target = parse_target(fp, cfg.target, demean=not cfg.raw_logits) if cfg.target else None
    slug = f"{slugify(cfg.prompt)}-{cfg.mode}"
    lines = [f"prompt: {len(fp.ids)} tokens  " + " | ".join(_tokens(rep, fp))]
    if target is not None and target.kind == "logit":
        lines.append(token_probabilities(fp, target))
    if cfg.mode == "paths":
        doc = _paths(fp, target or default_target(fp, demean=not cfg.raw_logits), cfg, slug, t_trace, lines)
    else:
        doc = _graph(fp, target, cfg, slug, t_trace, lines, progress)
    out = Path(cfg.out) if cfg.out else graph_path(cfg.set, graph_name(cfg))
    write_json(doc, out)
    lines.append(f"\nwrote {out} ({len(doc['nodes'])} nodes, {len(doc['links'])} links)")
    return "\n".join(lines), out, doc


def _paths(fp: FrozenPrompt, target: Target, cfg: CircuitConfig, slug: str, t_trace: float, lines: list[str]) -> dict:
    """The path search: its report lines (appended to ``lines``) and its graph JSON."""
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
    return merged_graph_json(fp, merged, slug, {"depth": cfg.depth, "branches": cfg.branches, **_semantics(cfg)})


def _graph(fp: FrozenPrompt, target: Target | None, cfg: CircuitConfig, slug: str, t_trace: float, lines: list[str],
           progress: bool) -> dict:
    """The attribution graph, pruned and scored once: its report lines (appended to ``lines``) and its graph JSON."""
    bar = tqdm(total=0, desc="attribution rows", unit="row", leave=False, disable=not progress)

    def report(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    g = attribution_graph(fp, target, max_logits=cfg.max_logits, logit_prob=cfg.logit_prob,
                          max_feature_nodes=cfg.max_feature_nodes or None, batch_size=cfg.batch_size, progress=report,
                          demean=not cfg.raw_logits)
    bar.close()
    pruned = prune(g, cfg.node_threshold, cfg.edge_threshold)
    replacement, completeness = scores(g)
    doc = attribution_graph_json(g, slug, pruned, (replacement, completeness))
    doc["metadata"]["info"].update(_semantics(cfg), max_feature_nodes=cfg.max_feature_nodes)
    lines.append(f"outputs: {', '.join(f'{t.label} (p={float(w):.3f})' for t, w in zip(g.outputs, g.output_weights))}")
    lines.append(f"active features {g.n_active}, rows computed {g.n_features}; kept after pruning: "
                 f"{int(pruned.node_mask.sum())} nodes, {int(pruned.edge_mask.sum())} edges  (trace {t_trace:.2f}s, "
                 f"attribution {g.timings['attribution_s']:.2f}s)")
    lines.append(f"replacement score {replacement:.3f}, completeness score {completeness:.3f}")
    lines.append("\nmost influential features:")
    feats = sorted(feature_nodes(doc), key=lambda f: f.influence if f.influence is not None else 1.0)
    lines += [f"  {feature_label(f.layer, f.feature, f.pos)}  activation {f.activation:.3f}" for f in feats[: cfg.top]] \
        or ["  (none survived pruning: errors carry most of the influence; lower --node-threshold or use a set with "
            "more layers)"]
    return doc


def _semantics(cfg: CircuitConfig) -> dict:
    """What the graph's numbers mean, for its metadata: circuit-tracer's conventions unless asked otherwise."""
    return {"bos": "nodes" if cfg.keep_bos else "constant", "logits": "raw" if cfg.raw_logits else "demeaned"}


def _tokens(rep: Replacement, fp: FrozenPrompt) -> list[str]:
    tok = rep.lm.tokenizer
    return [f"{i}:{tok.decode([t])!r}" if tok is not None else f"{i}:#{t}" for i, t in enumerate(fp.ids.tolist())]


def check_prompt(text: str) -> str:
    if not text.strip():
        raise CircuitError("--prompt is empty: give the text to explain")
    return text


# ------------------------------------------------------------------------------------------ connections
def run_connections(cfg: ConnectionsConfig, rep: Replacement | None = None) -> str:
    if not cfg.feature and not cfg.layers:
        raise CircuitError("give --feature LAYER:FEATURE (one feature's tables) or --layers SRC,DST (strongest weights)")
    rep = rep or load_replacement(cfg.set, cfg.model)
    tok = rep.lm.tokenizer

    def name(t: int) -> str:
        return repr(tok.decode([t])) if tok is not None else f"#{t}"

    def table(title: str, r: W.Ranked, show) -> list[str]:
        return [f"{title}", "  top:    " + ", ".join(f"{show(i)} {v:+.3f}" for i, v in r.top),
                "  bottom: " + ", ".join(f"{show(i)} {v:+.3f}" for i, v in r.bottom)]

    if cfg.layers:
        try:
            src, dst = (int(x) for x in cfg.layers.split(","))
        except ValueError:
            raise CircuitError(f"cannot read --layers {cfg.layers!r}: use SRC,DST, e.g. 3,8") from None
        rows = W.top_connections(rep, src, dst, cfg.top)
        return "\n".join([f"strongest direct weights from layer {src} features to layer {dst} features "
                          "(decoder · encoder, norm gains folded in):"] +
                         [f"  {feature_label(src, i)} -> {feature_label(dst, j)}  {v:+.4f}" for i, j, v in rows])
    spec = parse_feature(cfg.feature, position=False)
    layer, feature = spec.layer, spec.feature
    assert feature is not None
    lines = [f"{spec} (weights only: norm gains folded in, denominators left out; read the rankings)"]
    lines += table("de-embedding: tokens that excite it directly", W.deembedding(rep, layer, feature, k=cfg.top), name)
    if cfg.head:
        try:
            hl, hh = (int(x) for x in cfg.head.split("."))
        except ValueError:
            raise CircuitError(f"cannot read --head {cfg.head!r}: use LAYER.HEAD, e.g. 5.3") from None
        lines += table(f"de-embedding through head {hl}.{hh}'s OV circuit: tokens that excite it from elsewhere in the context",
                       W.deembedding(rep, layer, feature, head=(hl, hh), k=cfg.top), name)
    lines += table("logit effects: next tokens it promotes / suppresses", W.logit_effects(rep, layer, feature, cfg.top), name)
    onto = cfg.onto if cfg.onto >= 0 else max((L for L in rep.tset.layers if L < layer), default=-1)
    if onto >= 0:
        lines += table(f"pullback onto layer {onto}: earlier features that feed it directly",
                       W.pullback(rep, layer, feature, onto, cfg.top), lambda i: feature_label(onto, i))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ interventions
def circuit_edits(path: str, top: int = 0, exclude: str = "", sign: str = "both") -> list[Edit]:
    """Zero-edits for the feature nodes of a graph JSON (the strongest ``top`` if given; not the node ``exclude``).
    A paths graph's nodes carry signed attributions: ``sign`` keeps those that push the target up (positive), down
    (negative), or both. An attribution graph's influence is unsigned, so ``sign`` does not apply there."""
    doc = read_json(path)
    nodes = [f for f in feature_nodes(doc) if f.node_id != exclude]
    if graph_mode(doc) == "paths":
        if sign != "both":
            nodes = [f for f in nodes if f.influence and (f.influence > 0) == (sign == "positive")]
        nodes.sort(key=lambda f: -abs(f.influence or 0.0))
    else:  # cumulative influence: the strongest nodes have the smallest share before them
        nodes.sort(key=lambda f: f.influence if f.influence is not None else 1.0)
    nodes = nodes[:top] if top else nodes
    return [Edit(f.layer, f.feature, f.pos, "zero") for f in nodes]


def run_intervene(cfg: InterveneConfig, zero=(), clamp=(), scale=(), patch=(), rep: Replacement | None = None) -> str:
    check_prompt(cfg.prompt)
    rep = rep or load_replacement(cfg.set, cfg.model)
    ids = rep.tokenize(cfg.prompt)[0]
    fp = rep.trace([ids])[0]
    demean = not cfg.raw_logits
    target = parse_target(fp, cfg.target, demean=demean) if cfg.target else default_target(fp, demean=demean)
    if target.kind == "direction":
        raise CircuitError("intervene watches logits and features; a resid: direction cannot be read from the real model")
    measure = Measure(target.label, target.tokens, target.coefs, target.layer, target.feature, target.pos,
                      target.demeaned)
    edits = [parse_edit(s, "zero") for s in zero] + [parse_edit(s, "clamp") for s in clamp]
    edits += [parse_edit(s, "scale") for s in scale] + [parse_edit(s, "patch") for s in patch]
    if cfg.ablate_circuit:
        exclude = feature_node_id(target.layer, target.feature, target.pos) if target.kind == "feature" else ""
        edits += circuit_edits(cfg.ablate_circuit, cfg.circuit_top, exclude, cfg.circuit_sign)
    if not edits:
        raise CircuitError("nothing to do: give --zero, --clamp, --scale, --patch or --ablate-circuit")
    patch_ids = rep.tokenize(cfg.patch_from)[0] if cfg.patch_from else None
    out = intervene(rep, ids, measure, edits, patch_ids)
    lines = [f"{len(edits)} edit(s); target {target.label}: clean {out.clean:.4f} -> edited {out.edited:.4f} "
             f"(change {out.change:+.4f}; {100 * out.share_removed:.1f}% of its value removed)",
             "top predictions, clean:  " + ", ".join(f"{t!r} {p:.3f}" for t, p in out.clean_top),
             "top predictions, edited: " + ", ".join(f"{t!r} {p:.3f}" for t, p in out.edited_top)]
    if cfg.random:
        vals = random_ablations(rep, ids, measure, [e for e in edits if e.op == "zero"] or edits, cfg.random)
        mean = statistics.fmean(vals)
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        share = (out.clean - mean) / out.clean if out.clean else float("nan")
        lines.append(f"baseline: zeroing as many random active features ({cfg.random} draws): {mean:.4f} ± {sd:.4f} "
                     f"(change {mean - out.clean:+.4f}; {100 * share:.1f}% removed)")
    return "\n".join(lines)
