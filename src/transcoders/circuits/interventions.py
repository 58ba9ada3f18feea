"""Interventions: change transcoder features inside the real model and measure what moves.

Attributions are not causes; these are the causal checks. The model runs for real (no frozen patterns or norms),
with each edited layer's MLP output shifted by ``(z' - z) W_dec``: the transcoder's own change, applied on top of
the real MLP output, so that with no edits the model is exactly the original (as circuit-tracer does). Edits
propagate through everything downstream: attention, later MLPs, norms.

Feature specs (:mod:`.specs`): ``L:F`` (every token), ``L:F@P`` (one token; negative counts from the end), ``L:*``
(every feature of layer L). Ops: zero, clamp to a value (``L:F@P=v``), scale (``L:F@P*x``), or patch from another
prompt (the activation that feature has there, at the same position counted from the end).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import CircuitError
from ..models.hooks import first_input, patch_mlp
from .replacement import FrozenPrompt, Replacement
from .specs import parse_edit_spec


@dataclass
class Edit:
    layer: int
    feature: int | None  # None: every feature of the layer
    pos: int | None  # None: every token
    op: str  # zero | clamp | scale | patch
    value: float = 0.0


def parse_edit(spec: str, op: str) -> Edit:
    """``--zero/--clamp/--scale/--patch SPEC`` as an :class:`Edit` (the grammar is :mod:`.specs`'s)."""
    f, value = parse_edit_spec(spec, op)
    return Edit(f.layer, f.feature, f.pos, op, 0.0 if value is None else value)


def _positions(pos: int | None, T: int) -> slice | int:
    if pos is None:
        return slice(None)
    if not -T <= pos < T:
        raise CircuitError(f"position {pos} is outside the prompt (it has {T} tokens)")
    return pos % T


@dataclass
class Run:
    logits: Tensor  # [V] at the last position, before softcapping
    mlp_in: dict[int, Tensor]  # [T, d] at each layer that was read


def run_model(rep: Replacement, ids: Tensor, edits: Sequence[Edit] = (), patch_acts: dict[int, Tensor] | None = None,
              read_layers: tuple[int, ...] = (), splice: tuple[int, ...] = ()) -> Run:
    """Forward ``ids [T]`` with the edits applied; returns the last position's logits and the MLP inputs of
    ``read_layers`` (after the edits upstream of them). Layers in ``splice`` have their MLP replaced by the
    transcoder outright (its error dropped): the replacement model, rather than the real one."""
    lm, T = rep.lm, ids.numel()
    by_layer: dict[int, list[Edit]] = {}
    for e in edits:
        if e.layer not in rep.tset:
            raise CircuitError(f"the transcoder set has no layer {e.layer}")
        if e.feature is not None and not 0 <= e.feature < rep.tset[e.layer].width:
            raise CircuitError(f"feature {e.feature} does not exist in layer {e.layer}")
        by_layer.setdefault(e.layer, []).append(e)
    for L in splice:
        if not rep.tset.writers(L):
            raise CircuitError(f"the transcoder set has no layer {L} to splice in")
    read: dict[int, Tensor] = {}
    tset = rep.tset
    # layers whose codes are needed: the edited ones, and every writer of a spliced MLP; hooked: those, the MLPs
    # their edits reach (a CLT feature writes into later MLPs too) and the spliced ones
    encode = set(by_layer) | {w.source for L in splice for w in tset.writers(L)}
    hooked = encode | {m for L in by_layer for m in tset.targets(L)} | set(splice)
    codes: dict[int, Tensor] = {}  # edited codes (the real ones where nothing is edited)
    change: dict[int, Tensor] = {}  # edited minus real codes, of the edited layers

    def editor(L: int):
        def fn(x: Tensor, y: Tensor) -> Tensor:
            xf = x[0]
            if L in encode:
                tc = tset[L]
                z = tc.encode(xf.to(tc.W_enc.dtype))
                z2 = z.clone()
                for e in by_layer.get(L, ()):
                    p, f = _positions(e.pos, T), slice(None) if e.feature is None else e.feature
                    if e.op == "zero":
                        z2[p, f] = 0
                    elif e.op == "clamp":
                        z2[p, f] = e.value
                    elif e.op == "scale":
                        z2[p, f] = z[p, f] * e.value
                    else:  # patch
                        assert patch_acts is not None, "patch edits need the activations to patch in"
                        z2[p, f] = patch_acts[L][p, f]
                codes[L] = z2
                if L in by_layer:
                    change[L] = z2 - z
            if L in splice:
                out = tset.decode(L, codes, xf)
                assert out is not None, "a spliced layer has writers"
                return out.to(y.dtype)[None]
            for w in tset.writers(L):
                if w.source in change:
                    y = y + (change[w.source].to(w.W.dtype) @ w.W).to(y.dtype)[None]
            return y

        return fn

    handles = []
    with ExitStack() as stack, torch.no_grad():
        for L in sorted(hooked):
            stack.enter_context(patch_mlp(lm, L, editor(L)))
        for L in read_layers:
            handles.append(rep.adapter.mlp(L).register_forward_pre_hook(
                lambda m, a, k, L=L: read.__setitem__(L, first_input(a, k)[0].detach().float()), with_kwargs=True))
        final: list[Tensor] = []
        handles.append(rep.adapter.final_norm().register_forward_pre_hook(
            lambda m, a, k: final.append(first_input(a, k)[0, -1].detach().float()), with_kwargs=True))
        try:
            lm.model(input_ids=ids[None].to(lm.device), use_cache=False)
        finally:
            for h in handles:
                h.remove()
        logits = rep.adapter.logits(final[0], softcap=False, dtype=torch.float32)
    return Run(logits, read)


def feature_acts(rep: Replacement, ids: Tensor, layers) -> dict[int, Tensor]:
    """Each layer's transcoder activations ``[T, width]`` on a prompt (real model, nothing edited)."""
    run = run_model(rep, ids, read_layers=tuple(layers))
    return {L: rep.tset[L].encode(run.mlp_in[L].to(rep.tset[L].W_enc.dtype)).float() for L in layers}


@dataclass
class Measure:
    """What to watch: a logit, a logit difference (``tokens = (plus, minus)``), any weighted sum of logits
    (``coefs``, as a group target has) or a feature's pre-activation."""

    label: str
    tokens: tuple[int, ...] = ()
    coefs: tuple[float, ...] = ()  # default: 1 for one token, (1, -1) for two
    layer: int = -1
    feature: int = -1
    pos: int = -1
    demeaned: bool = False  # logits minus the vocabulary's mean logit (as the circuit was attributed)

    def layers(self) -> tuple[int, ...]:
        return (self.layer,) if self.layer >= 0 else ()

    def value(self, rep: Replacement, run: Run) -> float:
        if self.layer >= 0:
            tc = rep.tset[self.layer]
            return float(tc.pre_acts(run.mlp_in[self.layer][self.pos].to(tc.W_enc.dtype))[self.feature])
        coefs = self.coefs or (1.0, -1.0)[: len(self.tokens)]
        mean = float(run.logits.mean()) if self.demeaned else 0.0
        return sum(c * (float(run.logits[t]) - mean) for t, c in zip(self.tokens, coefs))


def top_predictions(rep: Replacement, logits: Tensor, k: int = 5) -> list[tuple[str, float]]:
    p, i = rep.adapter.probabilities(logits).topk(k)
    tok = rep.lm.tokenizer
    return [(str(tok.decode([t])) if tok is not None else f"#{t}", float(q)) for t, q in zip(i.tolist(), p.tolist())]


@dataclass
class Outcome:
    clean: float
    edited: float
    clean_top: list[tuple[str, float]]
    edited_top: list[tuple[str, float]]

    @property
    def change(self) -> float:
        return self.edited - self.clean

    @property
    def share_removed(self) -> float:
        """How much of the target's value the edit removed (1 = all of it, 0 = none, negative = it grew)."""
        return (self.clean - self.edited) / self.clean if self.clean else float("nan")


def intervene(rep: Replacement, ids: Tensor, measure: Measure, edits: list[Edit],
              patch_ids: Tensor | None = None) -> Outcome:
    patch_acts = None
    if any(e.op == "patch" for e in edits):
        if patch_ids is None:
            raise CircuitError("patch edits need --patch-from TEXT (the prompt to take activations from)")
        other = feature_acts(rep, patch_ids, sorted({e.layer for e in edits if e.op == "patch"}))
        T, To = ids.numel(), patch_ids.numel()
        patch_acts = {}
        for L, z in other.items():  # align the two prompts at their ends
            aligned = torch.zeros(T, z.shape[1])
            n = min(T, To)
            aligned[T - n:] = z[To - n:]
            patch_acts[L] = aligned
    clean = run_model(rep, ids, read_layers=measure.layers())
    edited = run_model(rep, ids, edits, patch_acts, read_layers=measure.layers())
    return Outcome(measure.value(rep, clean), measure.value(rep, edited), top_predictions(rep, clean.logits),
                   top_predictions(rep, edited.logits))


def random_edits(fp: FrozenPrompt, edits: list[Edit], rng: random.Random) -> list[Edit]:
    """As many zero-edits as ``edits``, each on a randomly drawn feature active at the same layer and token (one not
    in ``edits`` where there is one): the control a circuit ablation is compared with. ``fp``: the prompt's trace."""
    T = fp.n_tokens
    circuit = {(e.layer, e.feature, None if e.pos is None else e.pos % T) for e in edits}
    drawn = []
    for e in edits:
        t = fp.layers[e.layer]
        p = None if e.pos is None else e.pos % T
        keep = t.acts_pos == p if p is not None else torch.ones_like(t.acts_pos, dtype=torch.bool)
        pool = [f for f in t.acts_idx[keep].tolist() if (e.layer, f, p) not in circuit] or t.acts_idx[keep].tolist()
        drawn.append(Edit(e.layer, rng.choice(pool) if pool else 0, e.pos, "zero"))
    return drawn


def random_ablations(rep: Replacement, ids: Tensor, measure: Measure, edits: list[Edit], n: int, seed: int = 0) -> list[float]:
    """Zero as many randomly drawn active features (same layers and tokens as ``edits``) ``n`` times; the target's
    value each time. The baseline a circuit ablation is compared with."""
    fp = rep.trace([ids])[0]
    rng = random.Random(seed)
    return [measure.value(rep, run_model(rep, ids, random_edits(fp, edits, rng), read_layers=measure.layers()))
            for _ in range(n)]
