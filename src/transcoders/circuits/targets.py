"""What a circuit explains: a *target* (the root of a path search, the output node of an attribution graph).

Spellings (``--target`` on the command line):

==========================  ==============================================================================
``L:F`` or ``L:F@P``        transcoder feature F of layer L at token position P (default: the last token);
                            its value is the feature's pre-activation (also ``tcL[F]@P``; see :mod:`.specs`)
``logit:TOK``               the logit of a token at the last position (before any softcapping); TOK is the
                            token's text (``3``, ``' Paris'`` with quotes for leading spaces) or ``#ID``
``logit:A-B``               a logit difference, e.g. ``logit:3-2`` = logit("3") - logit("2")
``logit:A,B,C-D,E``         groups of tokens: the mean logit of one group minus the mean of the other, e.g.
                            ``logit:4,5,6,7,8,9-0,1,2`` (a linear stand-in for "probability on larger digits")
``resid:L:FILE[@P]``        any direction (a .npy/.pt/.safetensors vector of d_model numbers) read from the
                            residual stream before block L (``L = n_layers``: the final residual, before the
                            final norm)
==========================  ==============================================================================

Negative positions count from the end (``@-1`` is the last token).

Logits are attributed *demeaned* by default, as circuit-tracer does: a token's logit minus the mean logit over the
vocabulary (the unembedding column minus the mean column). Differences and group differences are the same either
way; ``demean=False`` (``--raw-logits``) attributes a single token's logit as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from ..errors import CircuitError
from .replacement import FrozenPrompt
from .specs import SYNTAX, feature_label, parse_feature


@dataclass
class Target:
    """A node to explain: its value is ``vector · resid[stage][pos] + const`` in the frozen model."""

    label: str  # e.g. "tc8[123]@5", 'logit("3")-logit("2")'
    kind: str  # "feature" | "logit" | "direction"
    stage: int
    pos: int
    vector: Tensor
    const: float
    layer: int = -1  # feature targets
    feature: int = -1
    tokens: tuple[int, ...] = ()  # logit targets: value = sum(coef * logit(token)) + ...
    coefs: tuple[float, ...] = ()  # one per token: 1 for a single logit, (1, -1) for A-B, ±1/group size for groups
    demeaned: bool = False  # logit targets: minus sum(coefs) times the mean logit over the vocabulary

    def value(self, fp: FrozenPrompt) -> float:
        return float(self.vector @ fp.resid(self.stage)[self.pos]) + self.const


def _pos(fp: FrozenPrompt, p: int | str | None) -> int:
    if p is None:
        return fp.n_tokens - 1
    p = int(p)
    if not -fp.n_tokens <= p < fp.n_tokens:
        raise CircuitError(f"position {p} is outside the prompt (it has {fp.n_tokens} tokens: 0-{fp.n_tokens - 1})")
    return p % fp.n_tokens


def feature_target(fp: FrozenPrompt, layer: int, feature: int, pos: int) -> Target:
    rep = fp.rep
    if layer not in rep.tset:
        raise CircuitError(f"the transcoder set has no layer {layer} (it has {rep.tset.layers[0]}-{rep.tset.layers[-1]})")
    width = rep.tset[layer].width
    if not 0 <= feature < width:
        raise CircuitError(f"feature {feature} does not exist: layer {layer}'s transcoder has features 0-{width - 1}")
    v, c = fp.feature_vector(layer, feature, pos)
    return Target(feature_label(layer, feature, pos), "feature", rep.mid_stage(layer), pos, v, c, layer, feature)


def token_id(fp: FrozenPrompt, text: str) -> int:
    """``#ID`` or the text of exactly one token (quotes allowed, to keep a leading space)."""
    vocab = fp.rep.W_U.shape[1]
    if text.startswith("#") and text[1:].isdigit():
        tid = int(text[1:])
        if tid >= vocab:
            raise CircuitError(f"token id {tid} is outside the vocabulary (0-{vocab - 1})")
        return tid
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    tok = fp.rep.lm.tokenizer
    if tok is None:
        raise CircuitError("the model has no tokenizer: name tokens by id, e.g. logit:#42")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise CircuitError(f"{text!r} is {len(ids)} tokens ({ids}), not one: pick a single token or give its id as #ID")
    return ids[0]


def logit_target(fp: FrozenPrompt, plus: int | Sequence[int], minus: int | Sequence[int] | None = None,
                 pos: int | None = None, label: str | None = None, demean: bool = True) -> Target:
    """A token's logit, or the mean logit of the ``plus`` tokens minus the mean logit of the ``minus`` tokens;
    ``demean``: minus the vocabulary's mean logit (as circuit-tracer attributes logits; a difference is unchanged)."""
    rep = fp.rep
    pos = fp.n_tokens - 1 if pos is None else pos
    groups = [[plus] if isinstance(plus, int) else list(plus)]
    if minus is not None:
        groups.append([minus] if isinstance(minus, int) else list(minus))
    tokens = tuple(t for g in groups for t in g)
    coefs = tuple(sign / len(g) for sign, g in zip((1.0, -1.0), groups) for _ in g)
    if len(set(tokens)) != len(tokens):
        raise CircuitError(f"a token appears twice in the logit target ({', '.join(_show(fp, t) for t in tokens)})")
    idx, w = torch.tensor(tokens), torch.tensor(coefs, dtype=rep.W_U.dtype)
    direction = rep.W_U[:, idx] @ w
    bias = 0.0 if rep.b_U is None else float(rep.b_U[idx] @ w)
    demeaned = demean and abs(float(w.sum())) > 1e-12  # a difference's mean terms cancel
    if demeaned:
        direction = direction - rep.W_U.mean(1) * w.sum()
        bias -= 0.0 if rep.b_U is None else float(rep.b_U.mean() * w.sum())
    v, c = fp.logit_vector(direction, pos, bias)
    if label is None:
        parts = [f"logit({_show(fp, g[0])})" if len(g) == 1 else f"mean logit({','.join(_show(fp, t) for t in g)})"
                 for g in groups]
        label = "-".join(parts) + ("-mean" if demeaned else "")
    return Target(label, "logit", rep.final_stage, pos, v, c, tokens=tokens, coefs=coefs, demeaned=demeaned)


def _group(fp: FrozenPrompt, text: str) -> list[int]:
    """One token, or several separated by commas."""
    try:
        return [token_id(fp, text)]
    except CircuitError:
        if "," not in text:
            raise
        return [token_id(fp, t) for t in text.split(",")]


UNLIKELY = 0.01  # below this next-token probability, a logit target's tokens are called unlikely


def token_probabilities(fp: FrozenPrompt, target: Target) -> str:
    """For a logit target, one line: each of its tokens with the model's next-token probability and rank at the
    target's position, and a warning when all of them are unlikely there (the circuit would explain logits the
    model hardly uses). Empty for other targets."""
    if target.kind != "logit":
        return ""
    probs = fp.probabilities(target.pos)
    shown = []
    for t in target.tokens:
        rank = int((probs > probs[t]).sum()) + 1
        shown.append(f"{_show(fp, t)} p={float(probs[t]):.3g} (rank {rank:,})")
    line = f"next-token probabilities at position {target.pos}: " + ", ".join(shown)
    if all(float(probs[t]) < UNLIKELY for t in target.tokens):
        top = int(probs.argmax())
        line += (f"; all below {UNLIKELY:g}: the model hardly predicts these here (its top token is {_show(fp, top)},"
                 f" p={float(probs[top]):.3g})")
    return line


def _show(fp: FrozenPrompt, tid: int) -> str:
    tok = fp.rep.lm.tokenizer
    return repr(tok.decode([tid])) if tok is not None else f"#{tid}"


def load_vector(path: str, d_model: int) -> Tensor:
    p = Path(path)
    if not p.is_file():
        raise CircuitError(f"direction file {path} does not exist")
    try:
        if p.suffix == ".npy":
            v = torch.from_numpy(np.load(p))
        elif p.suffix == ".safetensors":
            tensors = load_file(str(p))
            if len(tensors) != 1:
                raise CircuitError(f"{path} holds {len(tensors)} tensors; a direction file must hold exactly one")
            v = next(iter(tensors.values()))
        else:
            v = torch.load(p, weights_only=True)
    except CircuitError:
        raise
    except Exception as err:
        raise CircuitError(f"cannot read direction file {path}: {err}") from None
    v = torch.as_tensor(v).float().flatten()
    if v.numel() != d_model:
        raise CircuitError(f"{path} holds {v.numel()} numbers; a direction needs d_model = {d_model}")
    return v


def parse_target(fp: FrozenPrompt, spec: str, demean: bool = True) -> Target:
    """A :class:`Target` from its spelling (see the module docstring); ``demean`` applies to logit targets."""
    spec = spec.strip()
    if spec.startswith("logit:"):
        body, pos = spec[len("logit:"):], None
        if "@" in body and body.rsplit("@", 1)[1].lstrip("-").isdigit():
            body, p = body.rsplit("@", 1)
            pos = _pos(fp, p)
        if not body:
            raise CircuitError("logit: needs a token, e.g. logit:3, logit:3-2 or logit:4,5,6-0,1,2")
        if body.endswith("-") and len(body) > 1:  # a half-typed difference, not the token "4-"
            raise CircuitError(f"logit:{body} ends with '-': the token after it is missing (e.g. logit:{body}2); "
                               "to name a token that ends with '-', give its id as #ID")
        try:
            return logit_target(fp, _group(fp, body), pos=pos, demean=demean)
        except CircuitError as single_err:
            for i in range(1, len(body)):  # try every split at a '-' into two tokens (or groups)
                if body[i] == "-":
                    try:
                        return logit_target(fp, _group(fp, body[:i]), _group(fp, body[i + 1:]), pos=pos,
                                            demean=demean)
                    except CircuitError:
                        continue
            raise single_err
    if spec.startswith("resid:"):
        m = re.fullmatch(r"resid:(\d+):(.+?)(?:@(-?\d+))?", spec)
        if m is None:
            raise CircuitError(f"cannot read target {spec!r}: use resid:LAYER:FILE[@POS]")
        layer, path, p = int(m.group(1)), m.group(2), m.group(3)
        rep = fp.rep
        if not 0 <= layer <= rep.n_layers:
            raise CircuitError(f"resid:{layer}: the residual stream has stages before blocks 0-{rep.n_layers - 1} and "
                               f"{rep.n_layers} (final)")
        pos = _pos(fp, p)
        return Target(f"resid{layer}[{Path(path).stem}]@{pos}", "direction", 2 * layer, pos,
                      load_vector(path, rep.d_model), 0.0)
    try:
        f = parse_feature(spec, flag="--target")
    except CircuitError:
        raise CircuitError(f"cannot read target {spec!r}: use {SYNTAX}, logit:TOKEN, logit:A-B, logit:A,B-C,D "
                           "or resid:LAYER:FILE[@POS]") from None
    assert f.feature is not None
    return feature_target(fp, f.layer, f.feature, _pos(fp, f.pos))
