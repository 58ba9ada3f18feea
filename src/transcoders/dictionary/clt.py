"""Reading a cross-layer transcoder (CLT): its layers' dictionaries together.

Layer i of a CLT is a dictionary of kind ``clt`` whose decoder writes one d_model block to each of its target
layers (``cfg.targets``: i and every later layer of the CLT). Layer m's MLP output is reconstructed from every
layer at or below it: ŷ_m = Σ_{i ≤ m} (block m of layer i's output on x_i).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import CheckpointError
from .module import Dictionary, DictionaryConfig


def check_whole_clt(configs: Sequence[DictionaryConfig], what: str) -> None:
    """CLT runs must come as one whole CLT (every layer its layers write to), and alone: a one-line error
    otherwise."""
    kinds = {c.kind == "clt" for c in configs}
    if kinds == {True, False}:
        raise CheckpointError(f"a cross-layer transcoder's layers cannot be mixed with other runs: {what} them "
                              "separately")
    if kinds == {True}:
        have = {c.layer for c in configs}
        need = {m for c in configs for m in c.extra.get("clt_layers", c.targets)} | have
        if have != need or len(have) != len(configs):
            raise CheckpointError(f"give the whole cross-layer transcoder (its set folder): it has layers "
                                  f"{sorted(need)}, these runs are layers {sorted(c.layer for c in configs)}")


def blocks(d: Dictionary, flat: torch.Tensor) -> dict[int, torch.Tensor]:
    """A CLT layer's output ``[..., len(targets) · d_model]`` split into ``{target layer: [..., d_model]}``."""
    return dict(zip(d.cfg.targets, flat.chunk(len(d.cfg.targets), dim=-1)))


def reconstruct(dicts: Sequence[Dictionary], xs: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Every target layer's reconstruction from the CLT layers' inputs ``xs`` ({layer: MLP input})."""
    out: dict[int, torch.Tensor] = {}
    for d in dicts:
        for m, y in blocks(d, d(xs[d.cfg.layer])).items():
            out[m] = y if m not in out else out[m] + y
    return out
