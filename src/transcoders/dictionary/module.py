"""The sparse dictionary: one module for transcoders, skip transcoders and SAEs.

    pre = x @ W_enc.T + b_enc            [..., width]
    z   = act(pre)                        ReLU, or TopK (ReLU then keep the k largest)
    ŷ   = z @ W_dec + b_dec (+ x @ W_skip.T for a skip transcoder)

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

KINDS = ("transcoder", "skip-transcoder", "sae")
ACTIVATIONS = ("relu", "topk")


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
        if self.activation == "topk" and (self.k is None or not 0 < self.k <= self.width):
            raise ValueError(f"TopK needs 0 < k <= width, got k={self.k}, width={self.width}")
        if self.activation != "topk":
            self.k = None

    def to_dict(self) -> dict:
        return asdict(self)

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

    # ------------------------------------------------------------- forward
    @property
    def width(self) -> int:
        return self.cfg.width

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.W_enc, self.b_enc)

    def encode_sparse(self, x: torch.Tensor) -> Encoded:
        """Codes for ``x: [N, d_in]``. TopK returns only the k active (value, index) pairs."""
        pre = self.pre_acts(x)
        if self.cfg.activation == "topk":
            vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
            return Encoded(None, F.relu(vals), idx, pre)
        return Encoded(F.relu(pre), None, None, pre)

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
        return F.embedding_bag(enc.indices, self.W_dec, per_sample_weights=enc.values, mode="sum") + self.b_dec

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """ŷ from dense codes ``z: [..., width]`` (and ``x`` for the skip term)."""
        y = z @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise ValueError("a skip transcoder needs x to decode")
            y = y + F.linear(x, self.W_skip)
        return y

    def forward_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, Encoded]:
        """``(ŷ, codes)`` for ``x: [N, d_in]``; the training path."""
        enc = self.encode_sparse(x)
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
