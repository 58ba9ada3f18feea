"""Greedy path search (the paper's Algorithm 1) and merging paths into a graph (Algorithm 2).

A path runs from the target down to its causes: ``target <- tc20[5]@7 <- attn12.h3@7<-4 <- tc0[88]@4 <- embed@4``.
Each node carries the *path attribution*: how much the target's value moves through this exact chain (the
root's vector pulled back along the path and read from the residual stream). Unlike the paper's code:

- contributions are ranked by magnitude with their sign kept, so inhibitory paths are found too;
- everything a node needs comes from one traced forward (:class:`~transcoders.circuits.FrozenPrompt`), nothing
  is re-run per candidate, and each node's contributions are computed once;
- every merged node gets error, bias and pruning-residual children, so its children add up to its value exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .replacement import Contributions, FrozenPrompt
from .specs import feature_label
from .targets import Target


@dataclass(frozen=True)
class Component:
    """A node's identity: ``kind`` is target | feature | attn | skip | embed | error | bias | pruned."""

    kind: str
    layer: int = -1
    index: int = -1  # feature index, head, or the token id for embed
    pos: int = -1  # token position (for attn: the source token)
    dest: int = -1  # attn: the destination token
    parent: str = ""  # pruned: the node whose unexplained rest this is

    def __str__(self) -> str:
        k = self.kind
        if k == "feature":
            return feature_label(self.layer, self.index, self.pos)
        if k == "attn":
            return f"attn{self.layer}.h{self.index}@{self.dest}<-{self.pos}"
        if k == "skip":
            return f"skip{self.layer}@{self.pos}"
        if k == "embed":
            return f"embed@{self.pos}"
        if k == "error":
            return f"error{self.layer}@{self.pos}"
        if k == "pruned":
            return f"pruned({self.parent})"
        return k if self.pos < 0 else f"{k}@{self.pos}"


@dataclass
class PathNode:
    comp: Component
    value: float  # path attribution to the root
    stage: int = -1
    pos: int = -1
    vector: Tensor | None = None
    const: float = 0.0
    label: str = ""

    @property
    def leaf(self) -> bool:
        return self.vector is None

    def __str__(self) -> str:
        return self.label or str(self.comp)


Path = tuple[PathNode, ...]


@dataclass
class PathSearch:
    """The result of :func:`find_paths`: every path kept at every depth, and each expanded node's contributions."""

    target: Target
    root: PathNode
    paths: list[Path]
    contributions: dict[tuple[Component, ...], Contributions] = field(default_factory=dict)


def _children(fp: FrozenPrompt, node: PathNode, con: Contributions, per_layer: int, branches: int,
              skip_special: set[int]) -> list[PathNode]:
    """The node's strongest contributors: the top ``per_layer`` features and (head, source) pairs of each layer,
    skip paths and the embedding, then the overall top ``branches`` by magnitude (sign kept)."""
    pos, vec = node.pos, node.vector
    assert vec is not None, "a leaf has no contributors"
    cands: list[tuple[float, str, int, int, int]] = []  # (value, kind, layer, index, source)
    for L, (idx, contrib) in con.features.items():
        if contrib.numel():
            top = contrib.abs().topk(min(per_layer, contrib.numel())).indices
            cands += [(float(contrib[j]), "feature", L, int(idx[j]), pos) for j in top]
    for L, grid in con.attn.items():
        grid = grid.clone()
        for s in skip_special:
            if s < grid.shape[1] and s != pos:
                grid[:, s] = 0  # attention sinks on special tokens: their share stays in the pruning residual
        flat = grid.flatten()
        top = flat.abs().topk(min(per_layer, flat.numel())).indices
        cands += [(float(flat[j]), "attn", L, int(j) // grid.shape[1], int(j) % grid.shape[1]) for j in top]
    cands += [(v, "skip", L, -1, pos) for L, v in con.skip.items()]
    cands.append((con.embed, "embed", -1, int(fp.ids[pos]), pos))
    cands.sort(key=lambda c: -abs(c[0]))
    out = []
    for value, kind, L, index, src in cands[:branches]:
        if value == 0.0:
            continue
        if kind == "feature":
            v, c = fp.feature_child(L, index, vec, node.stage, pos)
            out.append(PathNode(Component("feature", L, index, pos), value, fp.rep.mid_stage(L), pos, v, c))
        elif kind == "attn":
            v, c = fp.attn_child(L, index, src, vec, pos)
            out.append(PathNode(Component("attn", L, index, src, pos), value, 2 * L, src, v, c))
        elif kind == "skip":
            v, c = fp.skip_child(L, vec, pos)
            out.append(PathNode(Component("skip", L, -1, pos), value, fp.rep.mid_stage(L), pos, v, c))
        else:
            out.append(PathNode(Component("embed", -1, index, pos), value))
    return out


def find_paths(fp: FrozenPrompt, target: Target, *, depth: int = 3, branches: int = 15, per_layer: int | None = None,
               include_special: bool = False) -> PathSearch:
    """Beam search from ``target``: extend every kept path by its node's top ``branches`` contributors, keep the
    global top ``branches`` extensions by |path attribution|, repeat ``depth`` times (paper Algorithm 1).

    ``per_layer`` caps candidates per layer before the global cut (default: ``branches``). Attention from special
    tokens (BOS attention sinks) is not followed unless ``include_special``.
    """
    per_layer = branches if per_layer is None else per_layer
    tok = fp.rep.lm.tokenizer
    special = set(getattr(tok, "all_special_ids", []) or []) if tok is not None else set()
    skip_special = set() if include_special else {p for p, t in enumerate(fp.ids.tolist()) if t in special}
    root = PathNode(Component("target"), target.value(fp), target.stage, target.pos, target.vector, target.const,
                    label=target.label)
    result = PathSearch(target, root, [])
    beam: list[Path] = [(root,)]
    for _ in range(depth):
        extended: list[Path] = []
        for path in beam:
            node = path[-1]
            if node.vector is None:  # a leaf
                continue
            key = tuple(n.comp for n in path)
            con = result.contributions.get(key)
            if con is None:
                con = result.contributions[key] = fp.contributions(node.vector, node.stage, node.pos, node.const)
            extended += [path + (child,) for child in _children(fp, node, con, per_layer, branches, skip_special)]
        extended.sort(key=lambda p: -abs(p[-1].value))
        beam = extended[:branches]
        result.paths += beam
        if not beam:
            break
    return result


@dataclass
class MergedGraph:
    """Paths merged by component (Algorithm 2): ``nodes[comp]`` is the summed path attribution over the distinct
    path prefixes ending there; ``edges[(child, parent)]`` sums the child prefixes' attributions. Every parent's
    incoming edges, including its error, bias and pruned children, add up to its value."""

    target: Target
    nodes: dict[Component, float]
    edges: dict[tuple[Component, Component], float]


def merge_paths(search: PathSearch) -> MergedGraph:
    prefixes: dict[tuple[Component, ...], PathNode] = {(search.root.comp,): search.root}
    for path in search.paths:
        for i in range(2, len(path) + 1):
            prefixes[tuple(n.comp for n in path[:i])] = path[i - 1]
    nodes: dict[Component, float] = {}
    edges: dict[tuple[Component, Component], float] = {}

    def add_edge(child: Component, parent: Component, value: float) -> None:
        edges[(child, parent)] = edges.get((child, parent), 0.0) + value
        nodes[child] = nodes.get(child, 0.0) + value

    nodes[search.root.comp] = search.root.value
    kept_sum: dict[tuple[Component, ...], float] = {}
    for key, node in prefixes.items():
        if len(key) >= 2:
            add_edge(key[-1], key[-2], node.value)
            kept_sum[key[:-1]] = kept_sum.get(key[:-1], 0.0) + node.value
    for key, pnode in prefixes.items():  # every non-leaf node's children add up to its value
        if pnode.leaf:
            continue
        parent = key[-1]
        con = search.contributions.get(key)
        rest = pnode.value - kept_sum.get(key, 0.0)
        if con is not None:  # expanded: its error and bias terms are known
            for L, v in con.error.items():
                if v:
                    add_edge(Component("error", L, -1, pnode.pos), parent, v)
            add_edge(Component("bias", -1, -1, pnode.pos), parent, con.bias)
            rest -= con.error_total + con.bias
        name = str(parent) if parent.kind != "target" else pnode.label
        add_edge(Component("pruned", parent.layer, -1, pnode.pos, parent=name), parent, rest)
    return MergedGraph(search.target, nodes, edges)


def format_paths(search: PathSearch, top: int = 20) -> str:
    """The strongest complete-or-deepest paths, one per line, strongest first."""
    final = sorted(search.paths, key=lambda p: -abs(p[-1].value))
    seen, lines = set(), []
    for path in final:
        key = tuple(n.comp for n in path)
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"{path[-1].value:+9.4f}  " + " <- ".join(str(n) for n in path))
        if len(lines) >= top:
            break
    return "\n".join(lines)


def strongest_nodes(graph: MergedGraph, kinds: tuple[str, ...] = ("feature", "attn", "skip", "embed"),
                    top: int = 15) -> list[tuple[Component, float]]:
    items = [(c, v) for c, v in graph.nodes.items() if c.kind in kinds]
    return sorted(items, key=lambda cv: -abs(cv[1]))[:top]


def path_value_check(fp: FrozenPrompt, path: Path) -> Tensor:
    """Each node's vector read from the residual stream (+ const): equals its ``value`` (a test helper)."""
    return torch.tensor([float(n.vector @ fp.resid(n.stage)[n.pos]) + n.const for n in path if n.vector is not None])
