"""Activation functions, one class each: how codes are computed from pre-activations, which sparsity penalty and
which after-step update training needs, which parameters are trained how, how the dictionary starts from data, and
what the activation is at inference (the form other tools' formats describe). Adding an activation is one new
class here, registered in ``ACTIVATIONS``, and its name in :mod:`.names` (the command line's choices); the
dictionary, the trainer, sweeps and exports ask the class, never its name.

    relu       z = max(pre, 0)                       (the paper; trained with an L1 penalty weighted by decoder norms)
    topk       ReLU of the k largest pre-activations of each token, the rest 0
    batchtopk  training: the k·N largest over a batch of N tokens (so L0 averages k);
               inference: pre · (pre > θ) with one learned threshold θ (a buffer, a running estimate)
    jumprelu   pre · (pre > θ_i) with a learned threshold per feature (``threshold``),
               trained through straight-through estimators (Rajamanoharan et al. 2024)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .names import DEFAULT_PENALTIES

if TYPE_CHECKING:
    from .module import Dictionary


class Encoded(NamedTuple):
    """Sparse codes. For TopK ``values``/``indices`` hold the k active entries per row;
    for the others they are ``None`` and ``dense`` is the full code. ``pre`` are the
    pre-activations (the trainer's auxiliary loss reads them)."""

    dense: Tensor | None  # [N, width] (None on the TopK path)
    values: Tensor | None  # [N, k]
    indices: Tensor | None  # [N, k]
    pre: Tensor  # [N, width]

    def l0(self) -> Tensor:
        """Active features per row, ``[N]``."""
        if self.dense is not None:
            return (self.dense > 0).sum(-1)
        assert self.values is not None
        return (self.values > 0).sum(-1)

    def entries(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(rows, features, values)`` of the active entries (value > 0), sorted by row."""
        if self.dense is None:
            assert self.values is not None and self.indices is not None
            rows = torch.arange(self.values.shape[0], device=self.values.device).repeat_interleave(self.indices.shape[1])
            feats, vals = self.indices.flatten(), self.values.flatten()
        else:
            rows, feats = torch.nonzero(self.dense, as_tuple=True)
            vals = self.dense[rows, feats]
        keep = vals > 0
        return rows[keep], feats[keep], vals[keep]

    def fired(self, width: int) -> Tensor:
        """Bool ``[width]``: which features fired on any row."""
        if self.dense is not None:
            return (self.dense > 0).any(0)
        assert self.values is not None and self.indices is not None
        out = torch.zeros(width, dtype=torch.bool, device=self.values.device)
        out[self.indices[self.values > 0]] = True
        return out


class InferenceForm(NamedTuple):
    """What a dictionary computes at inference, in the vocabulary other tools' formats share: ``relu``,
    ``topk`` (with ``k``) or ``jumprelu`` (with one threshold per feature, ``[width]``)."""

    name: str
    k: int | None = None
    threshold: Tensor | None = None


class Activation:
    """The behaviour of one activation function; see the module docstring."""

    name: ClassVar[str]
    #: sparsity is set by k (active features per token) and dead features are revived with the AuxK loss
    uses_k: ClassVar[bool] = False
    #: λ of the sparsity penalty when the user gives none; 0 means the activation has no penalty
    default_penalty: ClassVar[float] = 0.0
    #: Adam learning-rate multiplier of the ``threshold`` parameter, where it is one
    threshold_lr_mult: ClassVar[float] = 1.0

    @property
    def uses_penalty(self) -> bool:
        """Sparsity is set by a penalty coefficient λ (``--l1``, or ``--target-l0`` steering it)."""
        return self.default_penalty > 0

    def add_threshold(self, d: Dictionary, **kw) -> None:
        """Register ``d.threshold`` (a parameter or a buffer) where the activation has one; None otherwise."""
        d.threshold = None

    def reset(self, d: Dictionary) -> None:
        """Initial value of the threshold, if any."""

    def encode(self, d: Dictionary, x: Tensor, training: bool) -> Encoded:
        raise NotImplementedError

    def penalty(self, d: Dictionary, enc: Encoded) -> Tensor | None:
        """The sparsity penalty before λ (None: none)."""
        return None

    def after_step(self, d: Dictionary, enc: Encoded, reduce_min: Callable[[Tensor], Tensor] | None) -> None:
        """Called under ``no_grad`` after each optimiser step with that step's codes."""

    def init_from_data(self, d: Dictionary, x: Tensor, l0: float) -> None:
        """Called once, under ``no_grad``, with a sample of normalised inputs ``x`` after the biases are set; ``l0``
        is the sparsity aimed for."""

    def inference_form(self, d: Dictionary) -> InferenceForm:
        raise NotImplementedError


class ReLU(Activation):
    name = "relu"
    default_penalty = DEFAULT_PENALTIES[name]

    def encode(self, d: Dictionary, x: Tensor, training: bool) -> Encoded:
        pre = d.pre_acts(x)
        return Encoded(F.relu(pre), None, None, pre)

    def penalty(self, d: Dictionary, enc: Encoded) -> Tensor:
        """L1 of the codes weighted by the decoder rows' norms (so shrinking the codes while growing the decoder
        does not pay)."""
        assert enc.dense is not None
        return (enc.dense * d.W_dec.norm(dim=1)).sum(-1).mean()

    def inference_form(self, d: Dictionary) -> InferenceForm:
        return InferenceForm("relu")


class TopK(Activation):
    name = "topk"
    uses_k = True

    def encode(self, d: Dictionary, x: Tensor, training: bool) -> Encoded:
        k = d.cfg.k
        assert k is not None
        if training and d.sparse_grads and torch.is_grad_enabled():
            # gradients from the k selected pre-activations only (dictionary/sparse.py); under autocast (GPU bf16)
            # the matmul must be autocast's own, not one into a float32 buffer
            with torch.no_grad():
                pre = d.pre_acts(x) if torch.is_autocast_enabled(x.device.type) else d.pre_acts_reused(x)
            idx = pre.topk(k, dim=-1, sorted=False).indices
            return Encoded(None, F.relu(d.preacts_at(x, pre, idx)), idx, pre)
        pre = d.pre_acts(x)
        vals, idx = pre.topk(k, dim=-1, sorted=False)
        return Encoded(None, F.relu(vals), idx, pre)

    def inference_form(self, d: Dictionary) -> InferenceForm:
        return InferenceForm("topk", k=d.cfg.k)


class BatchTopK(Activation):
    name = "batchtopk"
    uses_k = True
    #: weight of the old value in the running mean of the inference threshold
    momentum = 0.95

    def add_threshold(self, d: Dictionary, **kw) -> None:
        d.register_buffer("threshold", torch.zeros((), **kw))  # a running estimate, not trained by Adam

    def reset(self, d: Dictionary) -> None:
        d.threshold.zero_()

    def encode(self, d: Dictionary, x: Tensor, training: bool) -> Encoded:
        pre = d.pre_acts(x)
        if training:
            assert d.cfg.k is not None
            flat = F.relu(pre).flatten()
            vals, idx = flat.topk(min(d.cfg.k * pre.shape[0], flat.numel()), sorted=False)
            z = torch.zeros_like(flat).scatter(0, idx, vals).view_as(pre)
            return Encoded(z, None, None, pre)
        return Encoded(pre * (pre > d.threshold.clamp_min(0)), None, None, pre)

    def after_step(self, d: Dictionary, enc: Encoded, reduce_min: Callable[[Tensor], Tensor] | None) -> None:
        """Running mean of the smallest activation the batch kept: the threshold used at inference. ``reduce_min``
        makes the batch's minimum a global one (data parallel: the minimum over ranks)."""
        assert enc.dense is not None
        active = enc.dense[enc.dense > 0]
        m = active.min() if active.numel() else torch.tensor(float("inf"), device=enc.dense.device)
        if reduce_min is not None:
            m = reduce_min(m)
        if torch.isfinite(m):
            t = d.threshold
            t.copy_(m if t <= 0 else self.momentum * t + (1 - self.momentum) * m)

    def inference_form(self, d: Dictionary) -> InferenceForm:
        return InferenceForm("jumprelu", threshold=d.threshold.detach().clamp_min(0).expand(d.width).clone())


class _JumpReLUFn(torch.autograd.Function):
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


class _StepFn(torch.autograd.Function):
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


class JumpReLU(Activation):
    name = "jumprelu"
    default_penalty = DEFAULT_PENALTIES[name]

    def add_threshold(self, d: Dictionary, **kw) -> None:
        # stored as is, not in log space, so that exporting to other tools' formats and back is exact
        d.threshold = nn.Parameter(torch.zeros(d.width, **kw))

    def reset(self, d: Dictionary) -> None:
        d.threshold.fill_(1e-3)

    def encode(self, d: Dictionary, x: Tensor, training: bool) -> Encoded:
        pre = d.pre_acts(x)
        # the straight-through window (~1e-3) is finer than bfloat16's grid: compare in float32 under autocast
        return Encoded(_JumpReLUFn.apply(pre.float(), d.threshold, d.bandwidth), None, None, pre)

    def penalty(self, d: Dictionary, enc: Encoded) -> Tensor:
        """The differentiable L0: mean over rows of the number of active features."""
        return _StepFn.apply(enc.pre.float(), d.threshold, d.bandwidth).sum(-1).mean()

    def after_step(self, d: Dictionary, enc: Encoded, reduce_min: Callable[[Tensor], Tensor] | None) -> None:
        d.threshold.clamp_(min=0)  # a negative threshold would let negative pre-activations through

    def init_from_data(self, d: Dictionary, x: Tensor, l0: float) -> None:
        """Thresholds start where each feature fires on about ``l0 / width`` of the tokens."""
        pre = d.pre_acts(x[:4096])
        frac = min(1.0, l0 / d.width)
        d.threshold.copy_(pre.quantile(1 - frac, dim=0).clamp_min(0))

    def inference_form(self, d: Dictionary) -> InferenceForm:
        return InferenceForm("jumprelu", threshold=d.threshold.detach().clone())


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (TopK(), BatchTopK(), ReLU(), JumpReLU())}


def activation(name: str) -> Activation:
    """The activation called ``name``; ValueError naming the known ones otherwise."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}: use one of {', '.join(ACTIVATIONS)}") from None
