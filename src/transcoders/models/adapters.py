"""One adapter per architecture family: where a model keeps its MLPs, norms, attention weights and embeddings.

Everything above this module speaks in hook-point names (``blocks.6.mlp.in``) and adapter methods, never in
Hugging Face module paths, so adding an architecture is one new ``Adapter`` subclass here. The family is chosen
by ``config.model_type`` (never by the model's name): a fine-tuned or renamed checkpoint keeps its model_type.

Hook points (``L`` is a layer index, 0-based):

==================  ===========================================================================================
``blocks.L.resid.pre``   input of block L: the residual stream before the block ``[batch, seq, d_model]``
``blocks.L.attn.in``     normalised attention input (output of the pre-attention norm)
``blocks.L.attn.out``    attention module output, o-projection included (before gemma2/3's post-attention norm)
``blocks.L.resid.mid``   input of the pre-MLP norm: the residual stream the MLP reads (after attention; equal to
                         ``resid.pre`` when attention and MLP run in parallel, as in most Pythia models)
``blocks.L.mlp.in``      normalised MLP input (output of the pre-MLP norm): what a transcoder reads
``blocks.L.mlp.out``     MLP module output (before gemma2/3's post-feedforward norm): what a transcoder imitates
``blocks.L.resid.post``  output of block L (= ``resid.pre`` of block L+1)
==================  ===========================================================================================
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from transcoders.errors import ModelError

# what each hook-point suffix means, in the order a block computes them
HOOK_POINTS: dict[str, str] = {
    "resid.pre": "input of the block (residual stream before it)",
    "attn.in": "normalised attention input",
    "attn.out": "attention output (before any post-attention norm)",
    "resid.mid": "input of the pre-MLP norm (the residual stream the MLP reads)",
    "mlp.in": "normalised MLP input (what a transcoder reads)",
    "mlp.out": "MLP output (what a transcoder imitates; before any post-MLP norm)",
    "resid.post": "output of the block",
}

_HOOK_RE = re.compile(r"blocks\.(-?\d+)\.(" + "|".join(re.escape(k) for k in HOOK_POINTS) + r")")


@dataclass
class NormParams:
    """What a norm computes, ``y = gain * P(x) / sqrt(mean(P(x)^2) + eps) + bias``, with ``P`` the centring
    ``x - mean(x)`` for LayerNorm and the identity for RMSNorm. Circuits freeze the denominator per position
    (the prompt's own value), which makes the norm linear."""

    gain: Tensor  # [d]
    bias: Tensor | None  # [d]
    centered: bool
    eps: float


class Adapter:
    """Names the parts of one loaded causal LM. Subclasses fill in the module paths of one family.

    Dimensions are read from the config (the text config for multimodal wrappers); ``vocab_size`` is the number
    of rows of the unembedding, which may be larger than the tokenizer's vocabulary (padded vocabularies).
    """

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]

    #: attention and MLP both read the block input (GPT-NeoX ``use_parallel_residual``)
    parallel_residual: bool = False
    #: the residual stream starts as ``embed().weight[ids] * embed_scale`` (+ ``pos_embed()`` rows where present)
    embed_scale: float = 1.0
    #: logits are ``c * tanh(logits / c)`` with this ``c`` (Gemma 2/3), or plain when None
    logit_softcap: float | None = None
    #: RMSNorms multiply by ``offset + weight`` (Gemma stores the weight as an offset from 1)
    rms_gain_offset: float = 0.0

    def __init__(self, model: nn.Module):
        # Any: each family reaches into its own Hugging Face attributes (model.model.layers, transformer.h, ...)
        self.model: Any = cast(Any, model)
        cfg = self.model.config.get_text_config()
        self.config = cfg
        self.n_layers: int = len(self._layers())
        self.d_model: int = cfg.hidden_size
        self.n_heads: int = cfg.num_attention_heads
        self.n_kv_heads: int = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.d_head: int = getattr(cfg, "head_dim", None) or self.d_model // self.n_heads
        self.d_mlp: int = self._d_mlp()
        self.vocab_size: int = self._lm_head().weight.shape[0]

    # ---- family-specific module paths (override) -------------------------------------------------------------
    def _layers(self) -> nn.ModuleList:
        raise NotImplementedError

    def _d_mlp(self) -> int:
        return self.config.intermediate_size

    def mlp_in_norm(self, L: int) -> nn.Module:
        """The norm whose output feeds the MLP (its input is ``resid.mid``)."""
        raise NotImplementedError

    def attn(self, L: int) -> nn.Module:
        """The attention module; its forward returns ``(output, pattern)``, output already o-projected."""
        raise NotImplementedError

    def attn_in_norm(self, L: int) -> nn.Module:
        raise NotImplementedError

    def embed(self) -> nn.Embedding:
        raise NotImplementedError

    def final_norm(self) -> nn.Module:
        raise NotImplementedError

    def _lm_head(self) -> Any:
        return self.model.get_output_embeddings()  # lm_head (Pythia: `embed_out` before transformers 5)

    def ov_weights(self, L: int) -> tuple[Tensor, Tensor]:
        """``W_V [n_heads, d_model, d_head]``, ``W_O [n_heads, d_head, d_model]``, key/value heads expanded to the
        query heads that share them (GQA), so that head ``h`` adds ``(x @ W_V[h] + b_V[h]) @ W_O[h]`` weighted by
        its attention pattern, for ``x`` the normalised attention input. Sum over heads, add ``b_O``: the
        attention output. Fresh tensors (no autograd history); they may share storage with the parameters.
        """
        raise NotImplementedError

    def ov_biases(self, L: int) -> tuple[Tensor | None, Tensor | None]:
        """``b_V [n_heads, d_head]`` or None, ``b_O [d_model]`` or None."""
        raise NotImplementedError

    # ---- shared by every family -------------------------------------------------------------------------------
    def check_layer(self, L: int) -> None:
        try:
            ok = 0 <= operator.index(L) < self.n_layers
        except TypeError:
            ok = False
        if not ok:
            raise ModelError(f"layer {L} is out of range: this model has layers 0-{self.n_layers - 1}")

    def layer(self, L: int) -> nn.Module:
        return self._block(L)

    def _block(self, L: int) -> Any:
        """Block ``L`` with its family's attributes (what the subclasses read)."""
        self.check_layer(L)
        return self._layers()[L]

    def mlp(self, L: int) -> nn.Module:
        """The MLP module: its forward input (``args[0]``) is the normalised MLP input, its output the MLP output."""
        return self._block(L).mlp

    def mlp_out_norm(self, L: int) -> nn.Module | None:
        """A norm applied to the MLP output before it joins the residual stream (Gemma 2/3), else None."""
        self.check_layer(L)
        return None

    def attn_out_norm(self, L: int) -> nn.Module | None:
        """A norm applied to the attention output before it joins the residual stream (Gemma 2/3), else None."""
        self.check_layer(L)
        return None

    def pos_embed(self) -> nn.Embedding | None:
        """Learned absolute position embeddings added to the token embeddings (GPT-2), else None (rotary)."""
        return None

    def unembed(self) -> Tensor:
        """``W_U [d_model, vocab_size]`` (a transposed view of the output projection)."""
        return self._lm_head().weight.detach().T

    def unembed_bias(self) -> Tensor | None:
        """``b_U [vocab_size]`` or None."""
        bias = getattr(self._lm_head(), "bias", None)
        return None if bias is None else bias.detach()

    def logits(self, resid: Tensor, *, softcap: bool = True, dtype: torch.dtype | None = None) -> Tensor:
        """Logits from the final residual stream ``resid [..., d_model]`` (``resid.post`` of the last block):
        final norm, unembedding, bias, then softcapping where the family has it (``softcap=False``: the logits
        before it, which are linear in the normalised residual, what circuits attribute). The norm runs in the
        model's dtype, the unembedding in ``dtype`` (default: the model's). Equals the model's own logits."""
        normed = self.final_norm()(resid.to(self.unembed().dtype))
        W_U = self.unembed() if dtype is None else self.unembed().to(dtype)
        logits = normed.to(W_U.dtype) @ W_U
        if (b_U := self.unembed_bias()) is not None:
            logits = logits + b_U.to(W_U.dtype)
        return self.softcap(logits) if softcap else logits

    def softcap(self, logits: Tensor) -> Tensor:
        """``c * tanh(logits / c)`` where the family softcaps its logits (Gemma 2/3), else the logits unchanged."""
        if self.logit_softcap is None:
            return logits
        return torch.tanh(logits / self.logit_softcap) * self.logit_softcap

    def probabilities(self, logits: Tensor) -> Tensor:
        """Next-token probabilities from logits before softcapping (softcap, then softmax over the last dim)."""
        return self.softcap(logits).softmax(-1)

    def norm_params(self, norm: nn.Module) -> NormParams:
        """The parameters of one of this model's norms (LayerNorm or the family's RMSNorm), read structurally."""
        if isinstance(norm, nn.LayerNorm):
            d = norm.normalized_shape[-1]
            gain = norm.weight.detach() if norm.weight is not None else torch.ones(d)
            bias = norm.bias.detach() if norm.bias is not None else None
            return NormParams(gain, bias, True, float(norm.eps))
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
        weight = getattr(norm, "weight", None)
        if eps is None or not isinstance(weight, Tensor):
            raise ModelError(f"cannot read the parameters of norm {type(norm).__name__}: it has no weight/eps")
        return NormParams(weight.detach() + self.rms_gain_offset, None, False, float(eps))

    def hook_point(self, name: str) -> tuple[nn.Module, str]:
        """``"blocks.6.mlp.in"`` -> ``(module, "input")``; see the module docstring for the names.

        ``"input"`` means the first positional (or ``hidden_states``) argument of the module's forward,
        ``"output"`` its output (the first element when the forward returns a tuple).
        """
        m = _HOOK_RE.fullmatch(name)
        if m is None:
            known = ", ".join(f"blocks.{{L}}.{k}" for k in HOOK_POINTS)
            raise ModelError(f"unknown hook point {name!r}: expected one of {known}")
        L, point = int(m.group(1)), m.group(2)
        self.check_layer(L)
        return {
            "resid.pre": (self.layer(L), "input"),
            "attn.in": (self.attn(L), "input"),
            "attn.out": (self.attn(L), "output"),
            "resid.mid": (self.mlp_in_norm(L), "input"),
            "mlp.in": (self.mlp(L), "input"),
            "mlp.out": (self.mlp(L), "output"),
            "resid.post": (self.layer(L), "output"),
        }[point]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model_type={self.config.model_type!r}, n_layers={self.n_layers}, "
            f"d_model={self.d_model}, d_mlp={self.d_mlp}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads})"
        )


def _split_heads_in(weight_out_in: Tensor, n: int, d_head: int) -> Tensor:
    """nn.Linear weight ``[n * d_head, d_model]`` -> ``[n, d_model, d_head]``."""
    return weight_out_in.detach().reshape(n, d_head, -1).transpose(1, 2)


def _split_heads_out(weight_out_in: Tensor, n: int, d_head: int) -> Tensor:
    """nn.Linear weight ``[d_model, n * d_head]`` -> ``[n, d_head, d_model]``."""
    return weight_out_in.detach().T.reshape(n, d_head, -1)


class LlamaAdapter(Adapter):
    """Llama-style blocks: RMSNorm -> attention -> add; RMSNorm (``post_attention_layernorm``, the pre-MLP norm)
    -> gated MLP -> add. Separate q/k/v/o projections, grouped-query attention. Qwen3's q/k norms act on
    queries and keys only, so they leave the OV circuit alone."""

    family = "llama"
    model_types = ("llama", "mistral", "qwen2", "qwen3")

    def _base(self) -> Any:
        return self.model.model

    def _layers(self) -> nn.ModuleList:
        return self._base().layers

    def mlp_in_norm(self, L: int) -> nn.Module:
        return self._block(L).post_attention_layernorm

    def attn(self, L: int) -> nn.Module:
        return self._block(L).self_attn

    def attn_in_norm(self, L: int) -> nn.Module:
        return self._block(L).input_layernorm

    def embed(self) -> nn.Embedding:
        return self._base().embed_tokens

    def final_norm(self) -> nn.Module:
        return self._base().norm

    def ov_weights(self, L: int) -> tuple[Tensor, Tensor]:
        attn: Any = self.attn(L)
        rep = self.n_heads // self.n_kv_heads  # query head h reads key/value head h // rep (transformers' repeat_kv)
        W_V = _split_heads_in(attn.v_proj.weight, self.n_kv_heads, self.d_head).repeat_interleave(rep, dim=0)
        W_O = _split_heads_out(attn.o_proj.weight, self.n_heads, self.d_head)
        return W_V, W_O

    def ov_biases(self, L: int) -> tuple[Tensor | None, Tensor | None]:
        attn: Any = self.attn(L)
        rep = self.n_heads // self.n_kv_heads
        b_V = attn.v_proj.bias
        if b_V is not None:
            b_V = b_V.detach().reshape(self.n_kv_heads, self.d_head).repeat_interleave(rep, dim=0)
        b_O = attn.o_proj.bias
        return b_V, None if b_O is None else b_O.detach()


class GemmaAdapter(LlamaAdapter):
    """Gemma 1/2/3: Llama-style modules, embeddings scaled by ``sqrt(d_model)``, RMSNorm weights used as ``1 + w``.

    Gemma 2 and 3 add "sandwich" norms: ``post_attention_layernorm`` normalises the attention *output*
    (``attn_out_norm``), ``pre_feedforward_layernorm`` feeds the MLP (``mlp_in_norm``) and
    ``post_feedforward_layernorm`` normalises the MLP output before it is added to the residual stream
    (``mlp_out_norm``). Gemma 1 has none of these and reads like Llama.

    DECISION: the transcoder target (``blocks.L.mlp.out``) is the MLP module's own output, i.e. *before* the
    post-feedforward norm, and that norm stays in the model when a transcoder is spliced in. Why: the norm
    divides by the RMS of the whole MLP output, so imitating its output would make a transcoder's features
    interact through the norm (not a sum of independent feature contributions); imitating the linear-ish MLP
    output keeps each feature's write a fixed direction up to the shared per-token norm scale, which the
    spliced model applies exactly as the original does. The same holds for ``blocks.L.attn.out`` and the
    OV weights: they describe the attention output before the post-attention norm.

    Gemma 2/3 also softcap the final logits (``logit_softcap``) and the attention scores (which only changes the
    pattern, not the OV circuit). Multimodal Gemma 3 checkpoints are reached through their text model.
    """

    family = "gemma"
    model_types = ("gemma", "gemma2", "gemma3_text", "gemma3")

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.embed_scale = float(self.d_model) ** 0.5
        self.rms_gain_offset = 1.0
        self.logit_softcap = getattr(self.config, "final_logit_softcapping", None)
        # structural, not by name: a Gemma 2/3 block carries the extra norms
        self.sandwich_norms = hasattr(self._layers()[0], "pre_feedforward_layernorm")

    def _base(self) -> Any:
        base = self.model.model
        return getattr(base, "language_model", base)  # Gemma3ForConditionalGeneration wraps the text model

    def mlp_in_norm(self, L: int) -> nn.Module:
        layer = self._block(L)
        return layer.pre_feedforward_layernorm if self.sandwich_norms else layer.post_attention_layernorm

    def mlp_out_norm(self, L: int) -> nn.Module | None:
        return self._block(L).post_feedforward_layernorm if self.sandwich_norms else None

    def attn_out_norm(self, L: int) -> nn.Module | None:
        return self._block(L).post_attention_layernorm if self.sandwich_norms else None


class GPT2Adapter(Adapter):
    """GPT-2: LayerNorm ``ln_1`` -> attention -> add; ``ln_2`` -> MLP -> add; learned position embeddings.

    Projections are ``Conv1D`` layers whose weights are stored ``[in, out]`` (the transpose of nn.Linear);
    ``c_attn`` holds q, k and v side by side along the output dimension, each ``[d_model]`` wide.
    """

    family = "gpt2"
    model_types = ("gpt2",)

    def _layers(self) -> nn.ModuleList:
        return self.model.transformer.h

    def _d_mlp(self) -> int:
        return self.config.n_inner or 4 * self.config.hidden_size

    def mlp_in_norm(self, L: int) -> nn.Module:
        return self._block(L).ln_2

    def attn(self, L: int) -> nn.Module:
        return self._block(L).attn

    def attn_in_norm(self, L: int) -> nn.Module:
        return self._block(L).ln_1

    def embed(self) -> nn.Embedding:
        return self.model.transformer.wte

    def pos_embed(self) -> nn.Embedding | None:
        return self.model.transformer.wpe

    def final_norm(self) -> nn.Module:
        return self.model.transformer.ln_f

    def ov_weights(self, L: int) -> tuple[Tensor, Tensor]:
        attn: Any = self.attn(L)
        d = self.d_model
        W_V = attn.c_attn.weight.detach()[:, 2 * d : 3 * d]  # [d_model, n_heads * d_head]
        W_V = W_V.reshape(d, self.n_heads, self.d_head).transpose(0, 1)  # [n_heads, d_model, d_head]
        W_O = attn.c_proj.weight.detach().reshape(self.n_heads, self.d_head, d)  # [in, out] already
        return W_V, W_O

    def ov_biases(self, L: int) -> tuple[Tensor | None, Tensor | None]:
        attn: Any = self.attn(L)
        d = self.d_model
        b_V = attn.c_attn.bias.detach()[2 * d : 3 * d].reshape(self.n_heads, self.d_head)
        return b_V, attn.c_proj.bias.detach()


class GPTNeoXAdapter(Adapter):
    """GPT-NeoX / Pythia: LayerNorms, rotary attention with one fused ``query_key_value`` projection laid out
    per head (``[q_h, k_h, v_h]`` for each head h in turn), ``embed_out`` unembedding.

    With ``use_parallel_residual`` (most Pythia models) attention and MLP both read the block input:
    ``out = x + attn(ln1(x)) + mlp(ln2(x))``, so ``resid.mid`` (the input of ``post_attention_layernorm``)
    equals ``resid.pre``. Otherwise ``out = h + mlp(ln2(h))`` with ``h = x + attn(ln1(x))``.
    """

    family = "gpt_neox"
    model_types = ("gpt_neox",)

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.parallel_residual = bool(self.config.use_parallel_residual)

    def _layers(self) -> nn.ModuleList:
        return self.model.gpt_neox.layers

    def mlp_in_norm(self, L: int) -> nn.Module:
        return self._block(L).post_attention_layernorm

    def attn(self, L: int) -> nn.Module:
        return self._block(L).attention

    def attn_in_norm(self, L: int) -> nn.Module:
        return self._block(L).input_layernorm

    def embed(self) -> nn.Embedding:
        return self.model.gpt_neox.embed_in

    def final_norm(self) -> nn.Module:
        return self.model.gpt_neox.final_layer_norm

    def ov_weights(self, L: int) -> tuple[Tensor, Tensor]:
        attn: Any = self.attn(L)
        qkv = attn.query_key_value.weight.detach().reshape(self.n_heads, 3, self.d_head, self.d_model)
        W_V = qkv[:, 2].transpose(1, 2)  # [n_heads, d_model, d_head]
        W_O = _split_heads_out(attn.dense.weight, self.n_heads, self.d_head)
        return W_V, W_O

    def ov_biases(self, L: int) -> tuple[Tensor | None, Tensor | None]:
        attn: Any = self.attn(L)
        b_qkv, b_O = attn.query_key_value.bias, attn.dense.bias
        b_V = None if b_qkv is None else b_qkv.detach().reshape(self.n_heads, 3, self.d_head)[:, 2]
        return b_V, None if b_O is None else b_O.detach()


_ADAPTERS: tuple[type[Adapter], ...] = (LlamaAdapter, GemmaAdapter, GPT2Adapter, GPTNeoXAdapter)

#: family name -> the ``config.model_type`` values it serves
SUPPORTED_FAMILIES: dict[str, tuple[str, ...]] = {a.family: a.model_types for a in _ADAPTERS}

_BY_MODEL_TYPE: dict[str, type[Adapter]] = {t: a for a in _ADAPTERS for t in a.model_types}


def supported_model_types() -> str:
    return "; ".join(f"{family}: {', '.join(types)}" for family, types in SUPPORTED_FAMILIES.items())


def adapter_class(model_type: str) -> type[Adapter]:
    """The adapter for a ``config.model_type``, or ModelError listing the supported ones."""
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise ModelError(
            f"model_type {model_type!r} is not supported (supported families: {supported_model_types()})"
        ) from None


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter for a loaded Hugging Face causal LM, chosen by ``model.config.model_type``."""
    config = getattr(model, "config", None)
    if config is None:
        raise ModelError(f"{type(model).__name__} is not a Hugging Face model (it has no .config)")
    return adapter_class(config.model_type)(model)
