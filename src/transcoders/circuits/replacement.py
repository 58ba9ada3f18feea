"""The frozen-linear replacement of a prompt: everything circuits read comes from one traced forward.

:meth:`Replacement.trace` runs the real model once per batch of prompts (eager attention, so patterns are
returned) and records, per layer: the residual stream before the block and before the MLP, the attention
pattern, the MLP's input and output, and every norm's per-position scale. The transcoders then encode each MLP
input; what they miss (``mlp_out - transcoder_out``) is kept as an *error*, so the traced values are the real
model's.

Freezing the attention patterns and the norms' denominators at the prompt's own values makes the map from the
residual stream to any later feature's pre-activation (or a logit) linear, with the features, errors and biases
as fixed inputs. Three views of that one linear model live on :class:`FrozenPrompt`:

- :meth:`FrozenPrompt.forward` runs it forwards from the embeddings (optionally with edited feature activations or
  residual perturbations): with nothing edited it reproduces the traced values, which is how the tests check that
  every adapter part (norm gains, OV weights, biases, patterns) is read correctly;
- :meth:`FrozenPrompt.contributions` splits one node's value (``vector · residual + const``) into what each
  earlier component wrote at that token: embeddings, attention heads from each source token, transcoder features,
  skip paths, errors and biases (the paper's one-hop attributions, used by the path search);
- :meth:`FrozenPrompt.backward` pulls many target vectors down through every layer at once (attention chains and
  skip paths included, features frozen) and returns each target's direct edges from every feature, error and token
  node (the attribution-graph adjacency).

Residual stream *stages*: stage ``2L`` is the input of block ``L`` (``2 n_layers`` is the final residual),
stage ``2L+1`` is after block L's attention. Transcoder ``L`` reads stage ``2L+1`` (``2L`` with parallel
attention and MLP, GPT-NeoX style). Attention of layer L writes into stages ``> 2L``, its MLP into stages ``> 2L+1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor, nn

from ..data.packing import bos_token_id, text_ids
from ..errors import CircuitError
from ..models import LoadedModel
from ..models.adapters import Adapter, NormParams
from ..models.hooks import first_input, first_output
from .transcoder_set import TranscoderSet


# --------------------------------------------------------------------------------------------------- norms
@dataclass
class FrozenNorm:
    """A norm with its denominator frozen per position: ``y = gain * P(x) * inv[pos] + bias`` (linear in x)."""

    gain: Tensor  # [d]
    bias: Tensor | None  # [d]
    centered: bool
    inv: Tensor  # [T] 1 / sqrt(mean(P(x)^2) + eps) at the prompt's own input

    @classmethod
    def freeze(cls, p: NormParams, x: Tensor) -> FrozenNorm:
        """Freeze at the norm's real input ``x [T, d]``."""
        xc = x - x.mean(-1, keepdim=True) if p.centered else x
        inv = torch.rsqrt(xc.pow(2).mean(-1) + p.eps)
        return cls(p.gain.to(x), None if p.bias is None else p.bias.to(x), p.centered, inv)

    def _inv(self, pos) -> Tensor:
        return (self.inv if pos is None else self.inv[pos]).unsqueeze(-1)

    def __call__(self, x: Tensor, pos=None) -> Tensor:
        """``x [..., T, d]`` (all positions) or ``x [..., d]`` at position(s) ``pos``."""
        if self.centered:
            x = x - x.mean(-1, keepdim=True)
        y = x * self._inv(pos) * self.gain
        return y if self.bias is None else y + self.bias

    def back(self, u: Tensor, pos=None) -> Tensor:
        """The transpose of the linear part: the input-space vector ``v`` with ``v · x == u · (y(x) - bias)``."""
        v = u * self.gain * self._inv(pos)
        return v - v.mean(-1, keepdim=True) if self.centered else v

    def const(self, u: Tensor) -> Tensor:
        """``u · bias`` (zero for RMSNorm)."""
        return torch.zeros(u.shape[:-1], dtype=u.dtype) if self.bias is None else u @ self.bias

    def sliced(self, n: int) -> FrozenNorm:
        return FrozenNorm(self.gain, self.bias, self.centered, self.inv[:n])


def _norm_params(a: Adapter, norm: nn.Module | None) -> NormParams | None:
    return None if norm is None else a.norm_params(norm)


def _const(norm: FrozenNorm | None, u: Tensor) -> float:
    return 0.0 if norm is None else float(norm.const(u))


def _maybe_back(norm: FrozenNorm | None, u: Tensor, pos=None) -> Tensor:
    return u if norm is None else norm.back(u, pos)


# ----------------------------------------------------------------------------------------- traced prompt
@dataclass
class LayerTrace:
    """One layer of one traced prompt (``T`` tokens). ``acts_*`` list the active transcoder features."""

    resid_pre: Tensor  # [T, d] input of the block
    resid_mid: Tensor  # [T, d] what the MLP's norm reads
    pattern: Tensor  # [H, T, T] attention pattern (destination, source)
    attn_out: Tensor  # [T, d] attention output (before any post-attention norm)
    mlp_in: Tensor  # [T, d] normalised MLP input
    mlp_out: Tensor  # [T, d] MLP output (before any post-MLP norm)
    attn_norm: FrozenNorm
    mlp_norm: FrozenNorm
    attn_out_norm: FrozenNorm | None
    mlp_out_norm: FrozenNorm | None
    attn_x: Tensor  # [T, d] normalised attention input (attn_norm(resid_pre))
    acts_pos: Tensor  # [n] token position of each active feature
    acts_idx: Tensor  # [n] feature index
    acts_val: Tensor  # [n] activation (= pre-activation for the supported activations)
    error: Tensor  # [T, d] mlp_out - transcoder output (the whole MLP output for a layer without a transcoder)

    def active_at(self, pos: int) -> tuple[Tensor, Tensor]:
        keep = self.acts_pos == pos
        return self.acts_idx[keep], self.acts_val[keep]

    def dense_acts(self, width: int) -> Tensor:
        z = torch.zeros(self.resid_pre.shape[0], width, dtype=self.acts_val.dtype)
        z[self.acts_pos, self.acts_idx] = self.acts_val
        return z


@dataclass
class LayerWeights:
    """The parts of one layer that circuits need, read once per model."""

    W_V: Tensor  # [H, d, dh]
    W_O: Tensor  # [H, dh, d]
    b_V: Tensor | None  # [H, dh]
    b_O: Tensor | None  # [d]
    attn_norm: NormParams
    mlp_norm: NormParams
    attn_out_norm: NormParams | None
    mlp_out_norm: NormParams | None


@dataclass
class Contributions:
    """Everything that one node's value (``vector · resid[stage][pos] + const``) is made of.

    ``attn[L]`` is ``[H, pos + 1]``: head h of layer L moving source token s into ``pos``. ``features[L]`` holds
    the active features at ``pos`` and their contributions. The parts sum to the node's value exactly.
    """

    value: float
    const: float
    embed: float
    attn: dict[int, Tensor] = field(default_factory=dict)
    attn_bias: dict[int, float] = field(default_factory=dict)
    features: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    skip: dict[int, float] = field(default_factory=dict)
    error: dict[int, float] = field(default_factory=dict)
    mlp_bias: dict[int, float] = field(default_factory=dict)

    def total(self) -> float:
        parts = [self.const, self.embed, *self.attn_bias.values(), *self.skip.values(), *self.error.values(),
                 *self.mlp_bias.values()]
        parts += [float(a.sum()) for a in self.attn.values()] + [float(c.sum()) for _, c in self.features.values()]
        return float(sum(parts))

    @property
    def bias(self) -> float:
        return self.const + sum(self.attn_bias.values()) + sum(self.mlp_bias.values())

    @property
    def error_total(self) -> float:
        return sum(self.error.values())


@dataclass
class Edges:
    """Direct effects from :meth:`FrozenPrompt.backward`, one row per target.

    ``features[L]`` is ``[N, n_active_L]`` (columns in the order of ``LayerTrace.acts_*``), ``errors``
    ``[N, n_layers, T]``, ``tokens`` ``[N, T]``, ``bias`` ``[N]`` (every bias and norm offset met on the way,
    the targets' own constants included). Per row, everything sums to the target's value.
    """

    features: list[Tensor]
    errors: Tensor
    tokens: Tensor
    bias: Tensor

    def total(self) -> Tensor:
        return (sum(f.sum(-1) for f in self.features) + self.errors.sum((1, 2)) + self.tokens.sum(-1) + self.bias)


# ---------------------------------------------------------------------------------------------- the model
class Replacement:
    """A model with a transcoder set: traces prompts into :class:`FrozenPrompt` objects."""

    def __init__(self, lm: LoadedModel, tset: TranscoderSet):
        a = lm.adapter
        tset.check_model(a.n_layers, a.d_model)
        self.lm, self.adapter, self.tset = lm, a, tset
        self.n_layers, self.d_model, self.n_heads = a.n_layers, a.d_model, a.n_heads
        self.parallel = a.parallel_residual
        self.layers: list[LayerWeights] = []
        for L in range(a.n_layers):
            W_V, W_O = a.ov_weights(L)
            b_V, b_O = a.ov_biases(L)
            self.layers.append(LayerWeights(
                W_V.float(), W_O.float(), None if b_V is None else b_V.float(), None if b_O is None else b_O.float(),
                a.norm_params(a.attn_in_norm(L)), a.norm_params(a.mlp_in_norm(L)),
                _norm_params(a, a.attn_out_norm(L)), _norm_params(a, a.mlp_out_norm(L)),
            ))  # fmt: skip
        self.final_norm = a.norm_params(a.final_norm())
        self.W_U = a.unembed().float()  # [d, V]
        b_U = a.unembed_bias()
        self.b_U = None if b_U is None else b_U.float()

    # ---- stages
    def mid_stage(self, layer: int) -> int:
        """The residual stage transcoder ``layer`` reads."""
        return 2 * layer + (0 if self.parallel else 1)

    @property
    def final_stage(self) -> int:
        return 2 * self.n_layers

    def unembed(self, normed: Tensor) -> Tensor:
        """Logits before softcapping from the final-normed residual ``[..., d]``; the frozen final norm, which makes
        this linear in the residual stream, is the prompt's (:class:`FrozenPrompt`)."""
        y = normed @ self.W_U
        return y if self.b_U is None else y + self.b_U

    def attn_writes_into(self, layer: int, stage: int) -> bool:
        return stage >= 2 * layer + 1

    def mlp_writes_into(self, layer: int, stage: int) -> bool:
        return stage >= 2 * layer + 2

    # ---- tracing
    def tokenize(self, prompts: str | Sequence[str]) -> list[Tensor]:
        """Token ids as the transcoders saw them in training (see :func:`prompt_ids`)."""
        return [prompt_ids(self.lm, p) for p in ([prompts] if isinstance(prompts, str) else prompts)]

    @torch.no_grad()
    def trace(self, prompts: str | Sequence[str] | Sequence[Tensor] | Tensor, *, keep_bos: bool = False
              ) -> list[FrozenPrompt]:
        """One forward for a batch of prompts (text, or 1-D token-id tensors of any lengths).

        Position 0 (the BOS token the prompts start with) is a constant: causal attention lets it see only itself, so
        its residual stream is the same for every prompt. As circuit-tracer does, its transcoder features and MLP
        errors are then no nodes: what they write is reported with the biases (sums stay exact). ``keep_bos`` keeps
        them as nodes (features and errors like at any other position)."""
        if isinstance(prompts, Tensor):
            ids_list = [prompts] if prompts.ndim == 1 else list(prompts)
        elif isinstance(prompts, str) or (prompts and isinstance(prompts[0], str)):
            ids_list = self.tokenize(cast(Sequence[str], prompts))
        else:
            ids_list = list(cast(Sequence[Tensor], prompts))
        lens = [int(x.numel()) for x in ids_list]
        T = max(lens)
        ids = torch.zeros(len(ids_list), T, dtype=torch.long)
        mask = torch.zeros(len(ids_list), T, dtype=torch.long)
        for b, x in enumerate(ids_list):
            ids[b, : lens[b]] = x
            mask[b, : lens[b]] = 1
        rec = self._record(ids.to(self.lm.device), mask.to(self.lm.device))
        return [self._frozen(rec, b, ids[b, : lens[b]], keep_bos) for b in range(len(ids_list))]

    def _record(self, ids: Tensor, mask: Tensor) -> dict:
        a, rec, handles = self.adapter, {}, []

        def pre(key):
            def hook(module, args, kwargs):
                rec[key] = first_input(args, kwargs).detach().float()
            return hook

        def post(key):
            def hook(module, args, kwargs, output):
                rec[key] = first_output(output).detach().float()
            return hook

        def attn_hook(L):
            def hook(module, args, kwargs, output):
                if not isinstance(output, tuple) or len(output) < 2 or output[1] is None:
                    raise CircuitError("the attention module returned no pattern: load the model with eager attention")
                rec[("attn_out", L)] = output[0].detach().float()
                rec[("pattern", L)] = output[1].detach().float()
            return hook

        try:
            for L in range(self.n_layers):
                handles.append(a.layer(L).register_forward_pre_hook(pre(("resid_pre", L)), with_kwargs=True))
                handles.append(a.attn(L).register_forward_hook(attn_hook(L), with_kwargs=True))
                handles.append(a.mlp_in_norm(L).register_forward_pre_hook(pre(("resid_mid", L)), with_kwargs=True))
                handles.append(a.mlp(L).register_forward_pre_hook(pre(("mlp_in", L)), with_kwargs=True))
                handles.append(a.mlp(L).register_forward_hook(post(("mlp_out", L)), with_kwargs=True))
            handles.append(a.final_norm().register_forward_pre_hook(pre("final"), with_kwargs=True))
            with eager_attention(self.lm.model):
                self.lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        return rec

    def _frozen(self, rec: dict, b: int, ids: Tensor, keep_bos: bool) -> FrozenPrompt:
        T = ids.numel()
        codes = {}
        for L, tc in self.tset.transcoders.items():
            codes[L] = tc.encode(rec[("mlp_in", L)][b, :T].to(tc.W_enc.dtype))
            if not keep_bos:
                codes[L][:1] = 0  # no feature nodes at position 0: what they write stays in its (constant) error term
        layers = []
        for L, w in enumerate(self.layers):
            g = {k: rec[(k, L)][b, :T] for k in ("resid_pre", "resid_mid", "attn_out", "mlp_in", "mlp_out")}
            pattern = rec[("pattern", L)][b, :, :T, :T]
            attn_norm = FrozenNorm.freeze(w.attn_norm, g["resid_pre"])
            z = codes.get(L)
            if z is None:
                empty = torch.zeros(0, dtype=torch.long)
                acts = (empty, empty, torch.zeros(0))
            else:
                pos, idx = z.nonzero(as_tuple=True)
                acts = (pos, idx, z[pos, idx].float())
            y = self.tset.decode(L, codes, g["mlp_in"])
            error = g["mlp_out"] if y is None else g["mlp_out"] - y.float()
            layers.append(LayerTrace(
                g["resid_pre"], g["resid_mid"], pattern, g["attn_out"], g["mlp_in"], g["mlp_out"],
                attn_norm, FrozenNorm.freeze(w.mlp_norm, g["resid_mid"]),
                None if w.attn_out_norm is None else FrozenNorm.freeze(w.attn_out_norm, g["attn_out"]),
                None if w.mlp_out_norm is None else FrozenNorm.freeze(w.mlp_out_norm, g["mlp_out"]),
                attn_norm(g["resid_pre"]), *acts, error,
            ))  # fmt: skip
        final = rec["final"][b, :T]
        return FrozenPrompt(self, ids.cpu(), layers, final, FrozenNorm.freeze(self.final_norm, final),
                            constant_pos=None if keep_bos else 0)


def prompt_ids(lm: LoadedModel, text: str) -> Tensor:
    """A prompt's token ids as the transcoders saw text in training: the BOS token the training contexts start with
    (``data.packing.bos_token_id``), then the text's own tokens."""
    tok = lm.tokenizer
    if tok is None:
        raise CircuitError(f"model {lm.name!r} has no tokenizer: pass token ids instead of text")
    ids = text_ids(tok, text)
    if len(ids) == (bos_token_id(tok) is not None):
        raise CircuitError("the prompt is empty: give some text")
    return torch.tensor(ids)


@contextmanager
def eager_attention(model):
    """Switch a Hugging Face model to eager attention (which returns patterns) for the duration."""
    cfg = model.config
    before = getattr(cfg, "_attn_implementation", None)
    if before == "eager":
        yield
        return
    try:
        model.set_attn_implementation("eager")
    except Exception as err:  # a model class without eager attention
        raise CircuitError(f"cannot switch {type(model).__name__} to eager attention ({err}): circuits need attention "
                           "patterns") from None
    try:
        yield
    finally:
        model.set_attn_implementation(before)


# ------------------------------------------------------------------------------------------ frozen prompt
class FrozenPrompt:
    """One traced prompt and the linear model it freezes. See the module docstring."""

    def __init__(self, rep: Replacement, ids: Tensor, layers: list[LayerTrace], final: Tensor, final_norm: FrozenNorm,
                 constant_pos: int | None = None):
        self.rep, self.ids, self.layers, self.final, self.final_norm = rep, ids, layers, final, final_norm
        self.n_tokens = ids.numel()
        #: a position whose MLP errors count as biases, not error nodes (0, the BOS token, unless traced with keep_bos)
        self.constant_pos = constant_pos
        self._probs: dict[int, Tensor] = {}

    @property
    def embeds(self) -> Tensor:
        """``[T, d]`` token (and position) embeddings: the residual stream at stage 0."""
        return self.layers[0].resid_pre

    # ---- writes into the residual stream (real values)
    def attn_write(self, L: int) -> Tensor:
        t = self.layers[L]
        return t.attn_out if t.attn_out_norm is None else t.attn_out_norm(t.attn_out)

    def mlp_write(self, L: int) -> Tensor:
        t = self.layers[L]
        return t.mlp_out if t.mlp_out_norm is None else t.mlp_out_norm(t.mlp_out)

    def resid(self, stage: int) -> Tensor:
        """The residual stream ``[T, d]`` at a stage, as the sum of what was written into it."""
        r = self.embeds.clone()
        for L in range(self.rep.n_layers):
            if self.rep.attn_writes_into(L, stage):
                r += self.attn_write(L)
            if self.rep.mlp_writes_into(L, stage):
                r += self.mlp_write(L)
        return r

    def logits(self, pos: int = -1) -> Tensor:
        """Logits ``[V]`` at a position, before any softcapping (what logit targets attribute)."""
        return self.rep.unembed(self.final_norm(self.final[pos], pos))

    def probabilities(self, pos: int = -1) -> Tensor:
        """The model's next-token probabilities ``[V]`` at a position (softcapped where the model caps), computed
        once per position."""
        pos = pos % self.n_tokens
        if pos not in self._probs:
            self._probs[pos] = self.rep.adapter.probabilities(self.logits(pos).float())
        return self._probs[pos]

    def pre_acts(self, L: int) -> Tensor:
        """Real transcoder pre-activations ``[T, width]`` at layer L."""
        tc = self.rep.tset[L]
        return tc.pre_acts(self.layers[L].mlp_in.to(tc.W_enc.dtype)).float()

    # ---- node vectors
    def feature_vector(self, L: int, feature: int, pos: int) -> tuple[Tensor, float]:
        """``(v, c)`` with ``pre_activation == v · resid[mid_stage(L)][pos] + c``."""
        tc, t = self.rep.tset[L], self.layers[L]
        f = tc.W_enc[feature].float()
        return t.mlp_norm.back(f, pos), float(t.mlp_norm.const(f) + tc.b_enc[feature].float())

    def logit_vector(self, direction: Tensor, pos: int, bias: float = 0.0) -> tuple[Tensor, float]:
        """``(v, c)`` for ``direction · final_norm(resid) + bias`` read from the final residual at ``pos``."""
        return self.final_norm.back(direction, pos), float(self.final_norm.const(direction) + bias)

    # ---- one-hop contributions
    def contributions(self, vector: Tensor, stage: int, pos: int, const: float = 0.0) -> Contributions:
        """Split ``vector · resid[stage][pos] + const`` into what each earlier component wrote at ``pos``."""
        rep = self.rep
        pos = pos % self.n_tokens
        value = float(vector @ self.resid(stage)[pos]) + const
        out = Contributions(value=value, const=const, embed=float(vector @ self.embeds[pos]))
        for L in range(rep.n_layers):
            t = self.layers[L]
            if rep.attn_writes_into(L, stage):
                wv = _maybe_back(t.attn_out_norm, vector, pos)
                u = self._ov_back(L, wv)  # [H, d]: head h's output moves u_h · x_s
                out.attn[L] = t.pattern[:, pos, : pos + 1] * (u @ t.attn_x[: pos + 1].T)
                out.attn_bias[L] = self._attn_bias(L, wv) + _const(t.attn_out_norm, vector)
            if rep.mlp_writes_into(L, stage):
                wm = _maybe_back(t.mlp_out_norm, vector, pos)
                tc = rep.tset.get(L)
                err = float(wm @ t.error[pos])
                out.error[L] = 0.0 if pos == self.constant_pos else err
                out.mlp_bias[L] = _const(t.mlp_out_norm, vector) + (err if pos == self.constant_pos else 0.0)
                for w in rep.tset.writers(L):  # every layer whose features write into MLP L (a CLT: L and below)
                    idx, val = self.layers[w.source].active_at(pos)
                    c = val * (w.W[idx].float() @ wm)
                    out.features[w.source] = (idx, c + out.features[w.source][1] if w.source in out.features else c)
                    out.mlp_bias[L] += float(wm @ w.b.float())
                if tc is not None and tc.W_skip is not None:
                    out.skip[L] = float((wm @ tc.W_skip.float()) @ t.mlp_in[pos])
        return out

    def _ov_back(self, L: int, w: Tensor) -> Tensor:
        """``u [..., H, d]``: head h's output dotted with ``w`` equals ``A · (u_h · x)`` summed over sources."""
        lw = self.rep.layers[L]
        return torch.einsum("hed,hd->he", lw.W_V, torch.einsum("hkd,d->hk", lw.W_O, w)) if w.ndim == 1 else \
            torch.einsum("hed,...hd->...he", lw.W_V, torch.einsum("hkd,...d->...hk", lw.W_O, w))

    def _attn_bias(self, L: int, w: Tensor) -> float:
        """What ``b_V`` (the pattern sums to 1 over sources) and ``b_O`` add along ``w``."""
        lw = self.rep.layers[L]
        out = 0.0
        if lw.b_V is not None:
            out += float(torch.einsum("hk,hkd,d->", lw.b_V, lw.W_O, w))
        if lw.b_O is not None:
            out += float(lw.b_O @ w)
        return out

    def attn_child(self, L: int, head: int, src: int, vector: Tensor, pos: int) -> tuple[Tensor, float]:
        """``(v, c)`` at stage ``2L``, position ``src``, whose value is head ``head``'s term ``(L, head, src)`` in
        :meth:`contributions` of ``vector`` at ``pos``."""
        t = self.layers[L]
        wv = _maybe_back(t.attn_out_norm, vector, pos)
        u = self._ov_back(L, wv)[head] * t.pattern[head, pos, src]
        return t.attn_norm.back(u, src), float(t.attn_norm.const(u))

    def feature_child(self, L: int, feature: int, vector: Tensor, stage: int, pos: int) -> tuple[Tensor, float]:
        """``(v, c)`` whose value is feature ``feature``'s term in :meth:`contributions` of ``vector`` read at
        ``stage`` (a CLT feature writes into every MLP output of its targets below that stage)."""
        rep = self.rep
        coef = 0.0
        for m in rep.tset.targets(L):
            if rep.mlp_writes_into(m, stage):
                (w,) = (w for w in rep.tset.writers(m) if w.source == L)
                coef += float(w.W[feature].float() @ _maybe_back(self.layers[m].mlp_out_norm, vector, pos))
        v, c = self.feature_vector(L, feature, pos)
        return v * coef, c * coef

    def skip_child(self, L: int, vector: Tensor, pos: int) -> tuple[Tensor, float]:
        t, tc = self.layers[L], self.rep.tset[L]
        assert tc.W_skip is not None, "only a skip transcoder has a skip path"
        u = _maybe_back(t.mlp_out_norm, vector, pos) @ tc.W_skip.float()
        return t.mlp_norm.back(u, pos), float(t.mlp_norm.const(u))

    # ---- the linear model run forwards
    def forward(
        self,
        acts: dict[int, Tensor] | None = None,
        delta: dict[int, Tensor] | None = None,
        errors: dict[int, Tensor] | None = None,
    ) -> dict:
        """Run the frozen linear model from the embeddings.

        ``acts[L]`` replaces layer L's feature activations (dense ``[T, width]``), ``errors[L]`` its error
        ``[T, d]``, ``delta[stage]`` is added to the residual stream at that stage ``[T, d]``. Patterns and norm
        scales stay the prompt's. Returns
        ``{"pre": {L: [T, width]}, "resid": {stage: [T, d]}, "logits": [T, V]}`` (logits before softcapping).
        """
        rep, acts, delta, errors = self.rep, acts or {}, delta or {}, errors or {}
        r = self.embeds + delta.get(0, 0)
        pre, resid, codes = {}, {0: r}, {}
        for L, (t, lw) in enumerate(zip(self.layers, rep.layers)):
            x = t.attn_norm(r)
            v = torch.einsum("td,hde->hte", x, lw.W_V)
            if lw.b_V is not None:
                v = v + lw.b_V[:, None, :]
            a = torch.einsum("hts,hse,hed->td", t.pattern, v, lw.W_O)
            if lw.b_O is not None:
                a = a + lw.b_O
            a = a if t.attn_out_norm is None else t.attn_out_norm(a)
            r_mid = r + a + delta.get(2 * L + 1, 0)
            reads = r if rep.parallel else r_mid
            m_in = t.mlp_norm(reads)
            tc = rep.tset.get(L)
            if tc is not None:
                pre[L] = tc.pre_acts(m_in.to(tc.W_enc.dtype)).float()
                z = acts.get(L, None)
                codes[L] = t.dense_acts(tc.width) if z is None else z
            y = rep.tset.decode(L, codes, m_in)
            out = errors.get(L, t.error) + (0 if y is None else y.float())
            m = out if t.mlp_out_norm is None else t.mlp_out_norm(out)
            r = r_mid + m + delta.get(2 * L + 2, 0)
            resid[2 * L + 1], resid[2 * L + 2] = r_mid, r
        return {"pre": pre, "resid": resid, "logits": rep.unembed(self.final_norm(r))}

    # ---- the linear model run backwards, many targets at once
    def backward(self, targets: Sequence[tuple[int, int, Tensor]], consts: Tensor | None = None) -> Edges:
        """Direct edges into each target ``(stage, pos, vector)`` from every feature, error and token node.

        The gradient of each target is pulled down through every layer below it: the residual stream, every
        attention head (frozen patterns, all source tokens, chains of heads included) and skip paths; features and
        errors are sources, not paths. ``consts [N]`` are the targets' own constants (folded into ``bias``).
        """
        rep, N = self.rep, len(targets)
        T = max(p for _, p, _ in targets) + 1  # causal: nothing after the last target position matters
        d = rep.d_model
        G = torch.zeros(N, T, d)
        by_stage: dict[int, list[int]] = {}
        for i, (s, _, _) in enumerate(targets):
            by_stage.setdefault(s, []).append(i)
        top = max(by_stage)
        bias = torch.zeros(N) if consts is None else consts.clone().float()
        feats = [torch.zeros(N, t.acts_pos.numel()) for t in self.layers]
        errors = torch.zeros(N, rep.n_layers, self.n_tokens)
        grads: dict[int, Tensor] = {}  # [N, T, d]: the gradient at each MLP output its writers read

        def inject(stage: int) -> None:
            for i in by_stage.get(stage, ()):
                _, p, v = targets[i]
                G[i, p] += v

        inject(rep.final_stage)
        for L in reversed(range(rep.n_layers)):
            if 2 * L > top:  # no target reads this layer's stages or any above: G is zero here
                continue
            t, tc = self.layers[L], rep.tset.get(L)
            # MLP L (G is the gradient at stage 2L+2)
            skip = None
            if 2 * L + 2 <= top:
                wm = G if t.mlp_out_norm is None else t.mlp_out_norm.sliced(T).back(G)
                if t.mlp_out_norm is not None:
                    bias += t.mlp_out_norm.sliced(T).const(G).sum(-1)
                errors[:, L, :T] = (wm * t.error[:T]).sum(-1)
                if self.constant_pos is not None and self.constant_pos < T:  # a constant: part of the bias
                    bias += errors[:, L, self.constant_pos]
                    errors[:, L, self.constant_pos] = 0
                for w in rep.tset.writers(L):
                    bias += wm.sum(1) @ w.b.float()
                    grads[L] = wm.clone()  # (wm may be G itself, which later targets are injected into)
                if tc is not None and tc.W_skip is not None:
                    u = wm @ tc.W_skip.float()  # [N, T, d] in normalised-input space
                    bias += t.mlp_norm.sliced(T).const(u).sum(-1)
                    skip = t.mlp_norm.sliced(T).back(u)
            if tc is not None and any(m in grads for m in rep.tset.targets(L)):
                feats[L] = self._feature_columns(L, grads, T)
            for m in [m for m in grads if min(w.source for w in rep.tset.writers(m)) >= L]:
                del grads[m]  # no layer below writes into MLP m
            if rep.parallel:
                inject(2 * L + 1)
                Gp = G + self._attn_backward(L, G, T, bias)
                if skip is not None:
                    Gp = Gp + skip
                G = Gp
                inject(2 * L)
            else:
                if skip is not None:
                    G = G + skip
                inject(2 * L + 1)
                G = G + self._attn_backward(L, G, T, bias)
                inject(2 * L)
        tokens = torch.zeros(N, self.n_tokens)
        tokens[:, :T] = (G * self.embeds[:T]).sum(-1)
        return Edges(feats, errors, tokens, bias)

    def _feature_columns(self, L: int, grads: dict[int, Tensor], T: int) -> Tensor:
        """``[N, n_active_L]``: each active feature of layer L times what its decoder blocks write, read by the
        gradients ``grads[m] [N, T, d]`` at the MLP outputs it writes into (one block, or a CLT's several)."""
        t, tset = self.layers[L], self.rep.tset
        ms = [m for m in tset.targets(L) if m in grads]
        js = [tset.targets(L).index(m) for m in ms]
        tc = tset[L]
        blocks = tc.W_dec.view(tc.width, len(tset.targets(L)), -1)[:, js]  # [width, n_m, d]
        g = torch.stack([grads[m] for m in ms], dim=2)  # [N, T, n_m, d]
        cols = torch.zeros(g.shape[0], t.acts_pos.numel())
        for p in range(T):
            sel = (t.acts_pos == p).nonzero(as_tuple=True)[0]
            if sel.numel():
                cols[:, sel] = torch.einsum("nmd,kmd->nk", g[:, p], blocks[t.acts_idx[sel]].float()) * t.acts_val[sel]
        return cols

    def _attn_backward(self, L: int, G: Tensor, T: int, bias: Tensor) -> Tensor:
        """Gradient at stage 2L from the gradient ``G [N, T, d]`` at the attention output; adds biases to ``bias``."""
        t, lw = self.layers[L], self.rep.layers[L]
        w = G
        if t.attn_out_norm is not None:
            bias += t.attn_out_norm.sliced(T).const(G).sum(-1)
            w = t.attn_out_norm.sliced(T).back(G)
        y = torch.einsum("hkd,ntd->nthk", lw.W_O, w)  # [N, T, H, dh]
        if lw.b_V is not None:
            bias += torch.einsum("nthk,hk->n", y, lw.b_V)
        if lw.b_O is not None:
            bias += w.sum(1) @ lw.b_O
        ys = torch.einsum("hts,nthk->nshk", t.pattern[:, :T, :T], y)  # moved to source positions
        u = torch.einsum("hek,nshk->nse", lw.W_V, ys)  # [N, T, d] in normalised-input space
        norm = t.attn_norm.sliced(T)
        bias += norm.const(u).sum(-1)
        return norm.back(u)
