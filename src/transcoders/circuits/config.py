"""The settings of ``transcoders circuit``, ``connections`` and ``intervene``: a module that imports nothing heavy,
so the command line can build its parsers without torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..flags import opt


@dataclass
class CircuitConfig:
    set: str = opt("", "transcoder set folder (from `transcoders train --layers all`), or one run folder", required=True)
    prompt: str = opt("", "the text to explain", required=True)
    target: str = opt("", "what to explain: LAYER:FEATURE[@POS], logit:TOKEN, logit:A-B, logit:A,B-C,D (mean logits of "
                          "token groups) or resid:LAYER:FILE[@POS] "
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
    keep_bos: bool = opt(False, "keep features and MLP errors at the BOS position as nodes (by default, as in "
                         "circuit-tracer, they are not: the BOS position is the same for every prompt, so what they "
                         "write is counted with the biases)")
    raw_logits: bool = opt(False, "attribute a token's logit as it is (by default, as in circuit-tracer, minus the "
                           "vocabulary's mean logit; differences are the same either way)")
    out: str = opt("", "graph JSON to write (default: SET/graphs/<prompt>-<mode>-<target>-<digest of the settings>.json)")
    top: int = opt(20, "lines of paths / nodes to print")
    model: str = opt("", "model to load instead of the one the set was trained on")
    device: str = opt("cpu", "torch device")
    dtype: str = opt("float32", "model dtype", choices=("float32", "bfloat16", "float16"))


@dataclass
class ConnectionsConfig:
    set: str = opt("", "transcoder set folder", required=True)
    feature: str = opt("", "the feature to analyse, LAYER:FEATURE (e.g. 8:123)")
    head: str = opt("", "also de-embed through this attention head's OV circuit, LAYER.HEAD (e.g. 5.3)")
    onto: int = opt(-1, "pull the feature back onto this earlier layer's features (default: the layer below)")
    layers: str = opt("", "instead of --feature: the strongest weights between all features of two layers, SRC,DST")
    top: int = opt(10, "entries per table")
    model: str = opt("", "model to load instead of the one the set was trained on")


@dataclass
class InterveneConfig:
    set: str = opt("", "transcoder set folder", required=True)
    prompt: str = opt("", "the prompt to run", required=True)
    target: str = opt("", "what to watch: logit:TOKEN, logit:A-B, logit:A,B-C,D or LAYER:FEATURE[@POS] "
                          "(default: the top token's logit)")
    patch_from: str = opt("", "prompt to take --patch activations from (aligned at the last token)")
    ablate_circuit: str = opt("", "graph JSON from `transcoders circuit`: zero its feature nodes")
    circuit_top: int = opt(0, "with --ablate-circuit: only the N strongest feature nodes (0: all)")
    raw_logits: bool = opt(False, "watch a token's logit as it is (by default minus the vocabulary's mean logit, as "
                           "`transcoders circuit` attributes it)")
    circuit_sign: str = opt("positive", "with --ablate-circuit on a paths graph: zero the nodes that push the target up "
                            "(positive: how much of its value they carry), down (negative), or both",
                            choices=("positive", "negative", "both"))
    random: int = opt(0, "also zero as many random active features (same layers and tokens) this many times, as a baseline")
    model: str = opt("", "model to load instead of the one the set was trained on")
