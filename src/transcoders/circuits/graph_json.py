"""Graph JSON in the schema circuit-tracer writes and Neuronpedia reads: ``{metadata, qParams, nodes, links}``.
This module writes it and reads it back; nothing else spells or splits its node ids.

Node ids follow circuit-tracer: features ``"{layer}_{feature}_{pos}"``, errors ``"{layer}_-1_{pos}"``, tokens
``"E_{token}_{pos}"``, outputs ``"{n_layers + 1}_{token}_{pos}"`` (targets that are not one vocabulary logit get a
virtual id past the vocabulary, as circuit-tracer does for custom targets). Path graphs add node types those
viewers do not draw by themselves: attention heads ``"A{layer}_{head}_{src}_{dest}"``, skip paths, biases and
pruning residuals (``feature_type`` says which). Our own extras live under ``metadata.info``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import CircuitError
from ..paths import atomic_write_bytes
from .graph import AttributionGraph, Pruned
from .paths import Component, MergedGraph
from .replacement import FrozenPrompt
from .targets import Target

FEATURE_TYPE = "cross layer transcoder"  # circuit-tracer's feature_type of a transcoder feature node


def _tok(fp: FrozenPrompt, tid: int) -> str:
    tok = fp.rep.lm.tokenizer
    return str(tok.decode([tid])) if tok is not None else f"#{tid}"


def _node(node_id: str, *, feature: int, layer, pos: int, ftype: str, js: str | None = None, clerp: str = "",
          influence: float | None = None, activation: float | None = None, **extra) -> dict:
    return {"node_id": node_id, "feature": feature, "layer": str(layer), "ctx_idx": pos, "feature_type": ftype,
            "token_prob": extra.pop("token_prob", 0.0), "is_target_logit": extra.pop("is_target_logit", False),
            "run_idx": 0, "reverse_ctx_idx": 0, "jsNodeId": js or node_id, "clerp": clerp,
            "influence": influence, "activation": activation, **extra}


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def feature_node_id(layer: int, feature: int, pos: int) -> str:
    return f"{layer}_{feature}_{pos}"


def feature_node(layer: int, feature: int, pos: int, **kw) -> dict:
    return _node(feature_node_id(layer, feature, pos), feature=_cantor(layer, feature), layer=layer, pos=pos,
                 ftype=FEATURE_TYPE, js=f"{layer}_{feature}-0", **kw)


def error_node(layer: int, pos: int, **kw) -> dict:
    return _node(f"{layer}_-1_{pos}", feature=-1, layer=layer, pos=pos, ftype="mlp reconstruction error",
                 js=f"{layer}_-1-{pos}", **kw)


def token_node(fp: FrozenPrompt, pos: int, **kw) -> dict:
    tid = int(fp.ids[pos])
    return _node(f"E_{tid}_{pos}", feature=pos, layer="E", pos=pos, ftype="embedding", js=f"E_{tid}-{pos}",
                 clerp=_tok(fp, tid), **kw)


def output_node(fp: FrozenPrompt, target: Target, k: int, is_target: bool) -> dict:
    """A logit target's node: a single token's carries the model's probability of it (``token_prob``); a
    difference or other target's carries its label and probability 0."""
    n = fp.rep.n_layers
    vocab = fp.rep.W_U.shape[1]
    if target.kind == "logit" and len(target.tokens) == 1:
        tid = target.tokens[0]
        prob = float(fp.probabilities(target.pos)[tid])
        clerp = f"Output {_tok(fp, tid)!r} (p={prob:.3f})"
    else:
        tid, clerp, prob = vocab + k, target.label, 0.0
    return _node(f"{n + 1}_{tid}_{target.pos}", feature=tid, layer=n + 1, pos=target.pos, ftype="logit",
                 js=f"L_{tid}-{target.pos}", clerp=clerp, token_prob=prob, is_target_logit=is_target)


def _metadata(fp: FrozenPrompt, slug: str, node_threshold: float | None, info: dict) -> dict:
    rep = fp.rep
    scan = Path(rep.tset.path).name if rep.tset.path is not None else rep.tset.model
    return {
        "slug": slug,
        "scan": scan,
        "transcoder_list": [],
        "prompt_tokens": [_tok(fp, int(t)) for t in fp.ids],
        "prompt": "".join(_tok(fp, int(t)) for t in fp.ids),
        "node_threshold": node_threshold,
        "schema_version": 1,
        "info": {"generator": "transcoders", "model": rep.tset.model, **info},
    }


def _wrap(metadata: dict, nodes: list[dict], links: list[dict]) -> dict:
    q = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": metadata, "qParams": q, "nodes": nodes, "links": links}


def attribution_graph_json(g: AttributionGraph, slug: str, pruned: Pruned, scores: tuple[float, float]) -> dict:
    """The graph's pruned nodes and edges (``pruned``: :func:`~.graph.prune` at the thresholds it records) with
    its ``(replacement, completeness)`` scores."""
    fp = g.fp
    node_mask, edge_mask, cum = pruned.node_mask, pruned.edge_mask, pruned.cumulative
    nodes: dict[int, dict] = {}
    for i in node_mask.nonzero(as_tuple=True)[0].tolist():
        if i < g.n_features:
            L, p, f = g.features[i].tolist()
            nodes[i] = feature_node(L, f, p, influence=float(cum[i]), activation=float(g.activations[i]))
        elif i < g.error_slice.stop:
            L, p = divmod(i - g.n_features, g.n_pos)
            nodes[i] = error_node(L, p, influence=float(cum[i]))
        elif i < g.token_slice.stop:
            nodes[i] = token_node(fp, i - g.token_slice.start, influence=float(cum[i]))
        else:
            k = i - g.output_slice.start
            nodes[i] = output_node(fp, g.outputs[k], k, is_target=k == 0)
    dst, src = edge_mask.nonzero(as_tuple=True)
    links = [{"source": nodes[s]["node_id"], "target": nodes[d]["node_id"], "weight": float(g.adjacency[d, s])}
             for d, s in zip(dst.tolist(), src.tolist()) if s in nodes and d in nodes]
    used = {x["source"] for x in links} | {x["target"] for x in links}
    kept = [n for n in nodes.values() if n["node_id"] in used or n["feature_type"] in ("embedding", "logit")]
    replacement, completeness = scores
    info = {"mode": "graph", "targets": [t.label for t in g.outputs], "replacement_score": replacement,
            "completeness_score": completeness, "active_features": g.n_active, "selected_features": g.n_features,
            "edge_threshold": pruned.edge_threshold, **{k: round(v, 3) for k, v in g.timings.items()}}
    return _wrap(_metadata(fp, slug, pruned.node_threshold, info), kept, links)


def _component_node(fp: FrozenPrompt, c: Component, value: float, target: Target) -> dict:
    n = fp.rep.n_layers
    if c.kind == "target":
        if target.kind == "feature":
            return feature_node(target.layer, target.feature, target.pos, activation=value)
        return output_node(fp, target, 0, True)
    if c.kind == "feature":
        act = fp.layers[c.layer].active_at(c.pos)
        idx, val = act
        a = float(val[(idx == c.index).nonzero()[0, 0]]) if (idx == c.index).any() else None
        return feature_node(c.layer, c.index, c.pos, influence=value, activation=a)
    if c.kind == "error":
        return error_node(c.layer, c.pos, influence=value)
    if c.kind == "embed":
        return token_node(fp, c.pos, influence=value)
    if c.kind == "attn":
        return _node(f"A{c.layer}_{c.index}_{c.pos}_{c.dest}", feature=c.index, layer=c.layer, pos=c.pos,
                     ftype="attention head", clerp=f"L{c.layer}H{c.index}: token {c.pos} -> {c.dest}", influence=value)
    if c.kind == "skip":
        return _node(f"S{c.layer}_{c.pos}", feature=-2, layer=c.layer, pos=c.pos, ftype="skip connection",
                     clerp=f"transcoder {c.layer} skip path", influence=value)
    if c.kind == "bias":
        return _node(f"B_{c.pos}", feature=-3, layer="B", pos=c.pos, ftype="bias", clerp="biases", influence=value)
    return _node(f"R_{c.parent}", feature=-4, layer=max(c.layer, 0) if c.layer >= 0 else n + 1, pos=c.pos,
                 ftype="pruned", clerp=f"not followed (rest of {c.parent})", influence=value)


def merged_graph_json(fp: FrozenPrompt, g: MergedGraph, slug: str, info: dict | None = None) -> dict:
    ids: dict[Component, str] = {}
    nodes = []
    for c, v in g.nodes.items():
        node = _component_node(fp, c, v, g.target)
        ids[c] = node["node_id"]
        nodes.append(node)
    links = [{"source": ids[child], "target": ids[parent], "weight": w} for (child, parent), w in g.edges.items()]
    meta = _metadata(fp, slug, None, {"mode": "paths", "targets": [g.target.label],
                                      "target_value": g.nodes[Component("target")], **(info or {})})
    return _wrap(meta, nodes, links)


def write_json(doc: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(doc, indent=1).encode())
    return path


# ------------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class FeatureNode:
    """A transcoder feature node of a graph JSON."""

    layer: int
    feature: int
    pos: int
    influence: float | None  # paths graphs: the signed path attribution; attribution graphs: cumulative influence
    activation: float | None

    @property
    def node_id(self) -> str:
        return feature_node_id(self.layer, self.feature, self.pos)


def feature_of(node: dict) -> FeatureNode | None:
    """The feature a node dict stands for, or None for any other node type."""
    if node.get("feature_type") != FEATURE_TYPE:
        return None
    layer, feature, pos = (int(x) for x in str(node["node_id"]).split("_"))
    return FeatureNode(layer, feature, pos, node.get("influence"), node.get("activation"))


def feature_nodes(doc: dict) -> list[FeatureNode]:
    """Every feature node of a graph JSON document, in file order."""
    return [f for f in map(feature_of, doc["nodes"]) if f is not None]


def graph_mode(doc: dict) -> str:
    """``paths`` or ``graph`` (what wrote the document)."""
    return doc["metadata"].get("info", {}).get("mode", "graph")


def read_json(path: str | Path) -> dict:
    """A graph JSON file, checked to have nodes and links; a one-line error otherwise."""
    try:
        doc = json.loads(Path(path).read_text())
        if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) or "links" not in doc:
            raise ValueError("no nodes/links")
        feature_nodes(doc)
        graph_mode(doc)
    except FileNotFoundError:
        raise CircuitError(f"graph file {path} does not exist: write one with `transcoders circuit --out {path}`") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CircuitError(f"{path} is not a graph JSON ({err}): write one with `transcoders circuit`") from None
    return doc
