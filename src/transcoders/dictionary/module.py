"""The sparse dictionary: one module for transcoders, skip transcoders and SAEs.

    pre = x @ W_enc.T + b_enc            [..., width]
    z   = act(pre)
    ŷ   = z @ W_dec + b_dec (+ x @ W_skip.T for a skip transcoder)

Activations:
    relu       z = max(pre, 0)                       (the paper; trained with an L1 penalty)
    topk       ReLU of the k largest pre-activations of each token, the rest 0
    batchtopk  training: the k·N largest over a batch of N tokens (so L0 averages k);
               inference: pre · (pre > θ) with one learned threshold θ (a buffer)
    jumprelu   pre · (pre > θ_i) with a learned threshold per feature (``threshold``),
               trained through straight-through estimators (Rajamanoharan et al. 2024)

Rows of ``W_enc`` and ``W_dec`` are the features' encoder and decoder vectors
(``W_enc: [width, d_in]``, ``W_dec: [width, d_out]``), so ``W_enc[i]`` reads feature i
and ``W_dec[i]`` is what it writes. A transcoder reads the MLP input and writes the
MLP output; an SAE is the same module with target = input.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .sparse import selected_preacts

KINDS = ("transcoder", "skip-transcoder", "sae")
ACTIVATIONS = ("relu", "topk", "batchtopk", "jumprelu")
USES_K = ("topk", "batchtopk")  # sparsity set by k
USES_PENALTY = ("relu", "jumprelu")  # sparsity set by a penalty coefficient λ


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
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}: use one of {', '.join(ACTIVATIONS)}")
        if self.activation in USES_K and (self.k is None or not 0 < self.k <= self.width):
            raise ValueError(f"{self.activation} needs 0 < k <= width, got k={self.k}, width={self.width}")
        if self.activation not in USES_K:
            self.k = None

    def to_dict(self) -> dict:
        return asdict(self)

    def pick(self, mlp_in, mlp_out):
        """``(x, y)``: what this dictionary reads and what it reconstructs, from a layer's MLP input and output."""
        def at(hook):
            return mlp_out if hook.endswith(".out") else mlp_in

        return at(self.hook_in), at(self.hook_out)

    @classmethod
    def from_dict(cls, d: dict) -> "DictionaryConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        return cls(**d)


class Encoded(NamedTuple):
    """Sparse codes. For TopK ``values``/``indices`` hold the k active entries per row;
    for ReLU they are ``None`` and ``dense`` is the full code. ``pre`` are the
    pre-activations (the trainer's auxiliary loss reads them)."""

    dense: torch.Tensor | None  # [N, width] (None on the sparse TopK training path)
    values: torch.Tensor | None  # [N, k]
    indices: torch.Tensor | None  # [N, k]
    pre: torch.Tensor  # [N, width]

    def l0(self) -> torch.Tensor:
        """Active features per row, ``[N]``."""
        if self.dense is not None:
            return (self.dense > 0).sum(-1)
        return (self.values > 0).sum(-1)

    def fired(self, width: int) -> torch.Tensor:
        """Bool ``[width]``: which features fired on any row."""
        if self.dense is not None:
            return (self.dense > 0).any(0)
        out = torch.zeros(width, dtype=torch.bool, device=self.values.device)
        out[self.indices[self.values > 0]] = True
        return out


class _JumpReLU(torch.autograd.Function):
    """pre · (pre > θ); θ gets the pseudo-derivative −θ/ε · rect((pre − θ)/ε) (Rajamanoharan et al. 2024)."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth: float):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        near = ((pre - threshold).abs() < eps / 2).to(grad.dtype)
        g_pre = grad * (pre > threshold)
        g_thr = (-(threshold / eps) * near * grad).sum(0)
        return g_pre, g_thr, None


class _Step(torch.autograd.Function):
    """1[pre > θ] (the L0 of a JumpReLU); θ gets the pseudo-derivative −1/ε · rect((pre − θ)/ε)."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth: float):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        near = ((pre - threshold).abs() < eps / 2).to(grad.dtype)
        return None, (-(1.0 / eps) * near * grad).sum(0), None


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
        # JumpReLU: a learned threshold per feature (kept >= 0 by the trainer). BatchTopK: one inference
        # threshold, a running estimate the trainer updates (a buffer, not trained by Adam). Stored as is,
        # not in log space, so that exporting to other tools' formats and back is exact.
        if cfg.activation == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(cfg.width, **kw))
        elif cfg.activation == "batchtopk":
            self.register_buffer("threshold", torch.zeros((), **kw))
        else:
            self.threshold = None
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
        if self.cfg.activation == "jumprelu":
            self.threshold.fill_(1e-3)
        elif self.cfg.activation == "batchtopk":
            self.threshold.zero_()

    # ------------------------------------------------------------- forward
    @property
    def width(self) -> int:
        return self.cfg.width

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.W_enc, self.b_enc)

    @torch.no_grad()
    def _pre_acts_reused(self, x: torch.Tensor) -> torch.Tensor:
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

        ``training`` selects BatchTopK's batch-level selection (inference uses its threshold).
        """
        act = self.cfg.activation
        if act == "topk" and training and self.sparse_grads and torch.is_grad_enabled():
            # under autocast (GPU bf16) the matmul must be autocast's own, not one into a float32 buffer
            with torch.no_grad():
                pre = self.pre_acts(x) if torch.is_autocast_enabled(x.device.type) else self._pre_acts_reused(x)
            idx = pre.topk(self.cfg.k, dim=-1, sorted=False).indices
            return Encoded(None, F.relu(self.preacts_at(x, pre, idx)), idx, pre)
        pre = self.pre_acts(x)
        if act == "topk":
            vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
            return Encoded(None, F.relu(vals), idx, pre)
        if act == "batchtopk":
            if training:
                flat = F.relu(pre).flatten()
                vals, idx = flat.topk(min(self.cfg.k * pre.shape[0], flat.numel()), sorted=False)
                z = torch.zeros_like(flat).scatter(0, idx, vals).view_as(pre)
                return Encoded(z, None, None, pre)
            return Encoded(pre * (pre > self.threshold.clamp_min(0)), None, None, pre)
        if act == "jumprelu":
            # the straight-through window (~1e-3) is finer than bfloat16's grid: compare in float32 under autocast
            return Encoded(_JumpReLU.apply(pre.float(), self.threshold, self.bandwidth), None, None, pre)
        return Encoded(F.relu(pre), None, None, pre)

    def l0_penalty(self, enc: Encoded) -> torch.Tensor:
        """JumpReLU's differentiable L0: mean over rows of the number of active features."""
        return _Step.apply(enc.pre.float(), self.threshold, self.bandwidth).sum(-1).mean()

    @torch.no_grad()
    def update_batchtopk_threshold(self, enc: Encoded, momentum: float = 0.95, reduce_min=None) -> None:
        """Running mean of the smallest activation BatchTopK kept: the threshold used at inference.
        ``reduce_min`` makes the batch's minimum a global one (data parallel: the minimum over ranks)."""
        active = enc.dense[enc.dense > 0]
        m = active.min() if active.numel() else torch.tensor(float("inf"), device=enc.dense.device)
        if reduce_min is not None:
            m = reduce_min(m)
        if torch.isfinite(m):
            self.threshold.copy_(m if self.threshold <= 0 else momentum * self.threshold + (1 - momentum) * m)

    def thresholds(self) -> torch.Tensor | None:
        """Per-feature inference thresholds ``[width]`` (JumpReLU, BatchTopK), else None."""
        if self.cfg.activation == "jumprelu":
            return self.threshold.detach().clone()
        if self.cfg.activation == "batchtopk":
            return self.threshold.clamp_min(0).expand(self.width).clone()
        return None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense feature activations ``z: [..., width]``."""
        shape = x.shape[:-1]
        enc = self.encode_sparse(x.reshape(-1, x.shape[-1]))
        if enc.dense is not None:
            z = enc.dense
        else:
            z = torch.zeros(enc.values.shape[0], self.width, dtype=enc.values.dtype, device=enc.values.device)
            z.scatter_(1, enc.indices, enc.values)
        return z.reshape(*shape, self.width)

    def decode_sparse(self, enc: Encoded) -> torch.Tensor:
        """Decoder output without skip term, ``[N, d_out]``. TopK touches only k decoder rows."""
        if enc.dense is not None:
            return enc.dense @ self.W_dec + self.b_dec
        # (values are bfloat16 under autocast; the embedding bag wants the decoder's dtype)
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
    @torch.no_grad()
    def fold_scales(self, in_scale: float, out_scale: float) -> None:
        """Make a dictionary trained on ``x·in_scale → y·out_scale`` work on raw activations.

        Codes are unchanged (the encoder absorbs ``in_scale``), so L0 and feature
        identities are the same before and after folding.
        """
        self.W_enc.mul_(in_scale)
        self.W_dec.div_(out_scale)
        self.b_dec.div_(out_scale)
        if self.W_skip is not None:
            self.W_skip.mul_(in_scale / out_scale)
