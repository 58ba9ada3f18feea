"""The sparse dictionary: one module for transcoders, skip transcoders and SAEs.

    pre = x @ W_enc.T + b_enc            [..., width]
    z   = act(pre)
    ŷ   = z @ W_dec + b_dec (+ x @ W_skip.T for a skip transcoder)

The activation (relu, topk, batchtopk, jumprelu) is an object from :mod:`.activations`: the dictionary asks it for
codes, its sparsity penalty, its after-step update, its parameter groups and its inference form, so that an
activation is described in one place.

Rows of ``W_enc`` and ``W_dec`` are the features' encoder and decoder vectors
(``W_enc: [width, d_in]``, ``W_dec: [width, d_out]``), so ``W_enc[i]`` reads feature i
and ``W_dec[i]`` is what it writes. A transcoder reads the MLP input and writes the
MLP output; an SAE is the same module with target = input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .activations import ACTIVATIONS, Encoded, InferenceForm, activation
from .names import KINDS
from .sparse import selected_preacts


@dataclass
class DictionaryConfig:
    """Everything needed to rebuild a dictionary and to check it fits a model.

    Architecture fields come first; provenance fields say which model and hook
    points it was made for, so loading it against the wrong model fails loudly.
    """

    d_in: int
    d_out: int
    width: int
    kind: str = "transcoder"
    activation: str = "topk"
    k: int | None = 32
    # provenance
    model: str = ""
    model_type: str = ""
    layer: int = -1
    hook_in: str = ""
    hook_out: str = ""
    format_version: int = 1
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown dictionary kind {self.kind!r}: use one of {', '.join(KINDS)}")
        if self.kind == "clt" and self.d_out != len(self.targets) * self.d_in:
            raise ValueError(f"a cross-layer transcoder's decoder writes d_model = {self.d_in} to each of its target "
                             f"layers {self.targets}: d_out must be {len(self.targets) * self.d_in}, not {self.d_out}")
        uses_k = activation(self.activation).uses_k  # ValueError for an unknown activation
        if uses_k and (self.k is None or not 0 < self.k <= self.width):
            raise ValueError(f"{self.activation} needs 0 < k <= width, got k={self.k}, width={self.width}")
        if not uses_k:
            self.k = None

    @property
    def targets(self) -> list[int]:
        """The layers whose MLP output this dictionary writes: its own, and for one layer of a cross-layer
        transcoder (kind ``clt``) every later layer of the CLT as well, its decoder ``[width, len(targets) *
        d_model]`` being one block per target layer, in this order."""
        return list(self.extra.get("targets", [self.layer]))

    def to_dict(self) -> dict:
        return asdict(self)

    def pick(self, mlp_in, mlp_out):
        """``(x, y)``: what this dictionary reads and what it reconstructs, from a layer's MLP input and output."""
        def at(hook):
            return mlp_out if hook.endswith(".out") else mlp_in

        return at(self.hook_in), at(self.hook_out)

    @classmethod
    def from_dict(cls, d: dict) -> DictionaryConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        return cls(**d)


class Dictionary(nn.Module):
    def __init__(self, cfg: DictionaryConfig, *, dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        self.cfg = cfg
        kw = dict(dtype=dtype, device=device)
        self.W_enc = nn.Parameter(torch.empty(cfg.width, cfg.d_in, **kw))
        self.b_enc = nn.Parameter(torch.zeros(cfg.width, **kw))
        self.W_dec = nn.Parameter(torch.empty(cfg.width, cfg.d_out, **kw))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_out, **kw))
        self.W_skip = nn.Parameter(torch.zeros(cfg.d_out, cfg.d_in, **kw)) if cfg.kind == "skip-transcoder" else None
        self.act = ACTIVATIONS[cfg.activation]
        self.threshold: Any  # JumpReLU: a parameter [width]; BatchTopK: a buffer []; else None
        self.act.add_threshold(self, **kw)
        # Width of the straight-through window for JumpReLU gradients (training only; set by the trainer).
        self.bandwidth = 1e-3
        # TopK training: gradients from the k selected pre-activations only (dictionary/sparse.py); False = autograd
        # through the dense pre-activations (the plain path the tests check the fast one against).
        self.sparse_grads = True
        self._pre_buffer: torch.Tensor | None = None
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Encoder rows uniform in ±1/sqrt(d_in); decoder rows random directions of norm 0.1.

        SAEs tie the encoder to the decoder's transpose at init (Anthropic's recipe);
        transcoders read and write different spaces, so their encoder is independent.
        """
        bound = 1.0 / math.sqrt(self.cfg.d_in)
        self.W_enc.copy_(torch.rand(self.W_enc.shape, generator=generator) * 2 * bound - bound)
        dec = torch.randn(self.W_dec.shape, generator=generator)
        self.W_dec.copy_(0.1 * dec / dec.norm(dim=1, keepdim=True))
        if self.cfg.kind == "sae":
            self.W_enc.copy_(self.W_dec / 0.1 * bound)
        self.b_enc.zero_()
        self.b_dec.zero_()
        if self.W_skip is not None:
            self.W_skip.zero_()
        self.act.reset(self)

    # ------------------------------------------------------------- forward
    @property
    def width(self) -> int:
        return self.cfg.width

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.W_enc, self.b_enc)

    @torch.no_grad()
    def pre_acts_reused(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations without autograd, written into one buffer kept between training steps: a fresh
        ``[N, width]`` tensor each step costs a round of page faults as large as a tenth of the matmul. The result
        is overwritten by the next call."""
        shape = (x.shape[0], self.width)
        buf = self._pre_buffer
        if buf is None or buf.shape != shape or buf.dtype != x.dtype or buf.device != x.device:
            buf = self._pre_buffer = torch.empty(shape, dtype=x.dtype, device=x.device)
        return torch.addmm(self.b_enc, x, self.W_enc.T, out=buf)

    def preacts_at(self, x: torch.Tensor, pre: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``pre[n, idx[n, j]]``, differentiable in the encoder weights: through ``pre`` itself if it carries
        autograd, else through the selected entries only (``pre`` from the TopK training path)."""
        if pre.requires_grad or not torch.is_grad_enabled():
            return pre.gather(1, idx)
        return selected_preacts(x, self.W_enc, self.b_enc, pre, idx)

    def encode_sparse(self, x: torch.Tensor, *, training: bool = False) -> Encoded:
        """Codes for ``x: [N, d_in]``. TopK returns only the k active (value, index) pairs.

        ``training`` selects the training form where it differs (BatchTopK's batch-level selection, TopK's sparse
        gradients); inference uses the thresholds.
        """
        return self.act.encode(self, x, training)

    # ------------------------------------------------------------- training
    def sparsity_penalty(self, enc: Encoded) -> torch.Tensor | None:
        """The activation's sparsity penalty on these codes, before λ (ReLU: decoder-norm-weighted L1; JumpReLU:
        differentiable L0), or None where sparsity comes from k."""
        return self.act.penalty(self, enc)

    @torch.no_grad()
    def after_step(self, enc: Encoded, reduce_min: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """The activation's update after an optimiser step (JumpReLU keeps θ >= 0; BatchTopK moves its inference
        threshold). ``reduce_min``: data parallel, the minimum over ranks."""
        self.act.after_step(self, enc, reduce_min)

    def param_groups(self) -> list[dict]:
        """Adam parameter groups, each with an ``lr_mult`` (JumpReLU's thresholds get their own)."""
        rest = [p for n, p in self.named_parameters() if n != "threshold"]
        groups = [{"params": rest, "lr_mult": 1.0}]
        if isinstance(self.threshold, nn.Parameter):
            groups.append({"params": [self.threshold], "lr_mult": self.act.threshold_lr_mult})
        return groups

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, y: torch.Tensor, l0: float) -> None:
        """Start from data (``x``, ``y``: normalised samples): b_dec = mean target, the encoder centred on the mean
        input, and whatever the activation sets from the data (JumpReLU: thresholds for about ``l0`` active)."""
        self.b_dec.copy_(y.mean(0))
        self.b_enc.copy_(-x.mean(0) @ self.W_enc.T)
        self.act.init_from_data(self, x, l0)

    # ------------------------------------------------------------ inference
    def inference_form(self) -> InferenceForm:
        """What this dictionary computes at inference: relu, topk (k) or jumprelu (per-feature thresholds)."""
        return self.act.inference_form(self)

    def thresholds(self) -> torch.Tensor | None:
        """Per-feature inference thresholds ``[width]`` (JumpReLU, BatchTopK), else None."""
        return self.inference_form().threshold

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense feature activations ``z: [..., width]``."""
        shape = x.shape[:-1]
        enc = self.encode_sparse(x.reshape(-1, x.shape[-1]))
        if enc.dense is not None:
            z = enc.dense
        else:
            assert enc.values is not None and enc.indices is not None
            z = torch.zeros(enc.values.shape[0], self.width, dtype=enc.values.dtype, device=enc.values.device)
            z.scatter_(1, enc.indices, enc.values)
        return z.reshape(*shape, self.width)

    def decode_sparse(self, enc: Encoded) -> torch.Tensor:
        """Decoder output without skip term, ``[N, d_out]``. TopK touches only k decoder rows."""
        if enc.dense is not None:
            return enc.dense @ self.W_dec + self.b_dec
        # (values are bfloat16 under autocast; the embedding bag wants the decoder's dtype)
        assert enc.values is not None and enc.indices is not None
        vals = enc.values.to(self.W_dec.dtype)
        return F.embedding_bag(enc.indices, self.W_dec, per_sample_weights=vals, mode="sum") + self.b_dec

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """ŷ from dense codes ``z: [..., width]`` (and ``x`` for the skip term)."""
        y = z @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise ValueError("a skip transcoder needs x to decode")
            y = y + F.linear(x, self.W_skip)
        return y

    def forward_sparse(self, x: torch.Tensor, *, training: bool = False) -> tuple[torch.Tensor, Encoded]:
        """``(ŷ, codes)`` for ``x: [N, d_in]``; the training path."""
        enc = self.encode_sparse(x, training=training)
        y = self.decode_sparse(enc)
        if self.W_skip is not None:
            y = y + F.linear(x, self.W_skip)
        return y, enc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ŷ for ``x: [..., d_in]``."""
        shape = x.shape[:-1]
        y, _ = self.forward_sparse(x.reshape(-1, x.shape[-1]))
        return y.reshape(*shape, self.cfg.d_out)

    # -------------------------------------------------------- normalisation
    def decoder_blocks(self) -> torch.Tensor:
        """``W_dec`` as ``[width, len(targets), d_model]``: what each feature writes to each target layer."""
        return self.W_dec.reshape(self.width, len(self.cfg.targets), -1)

    @torch.no_grad()
    def fold_scales(self, in_scale: float, out_scale: float | torch.Tensor) -> None:
        """Make a dictionary trained on ``x·in_scale → y·out_scale`` work on raw activations (``out_scale`` a
        number, or ``[d_out]`` where each target layer of a cross-layer transcoder has its own).

        Codes are unchanged (the encoder absorbs ``in_scale``), so L0 and feature
        identities are the same before and after folding.
        """
        self.W_enc.mul_(in_scale)
        self.W_dec.div_(out_scale)
        self.b_dec.div_(out_scale)
        if self.W_skip is not None:
            self.W_skip.mul_(in_scale / out_scale)
