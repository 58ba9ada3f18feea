"""Fixtures for the circuits tests (helpers in circuit_helpers.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))

import pytest
import torch
from circuit_helpers import replacement_for
from tiny_models import KINDS, VOCAB

from transcoders.circuits import Replacement

# a cross-layer transcoder on a sequential family with biases, one with post-MLP norms, and a parallel one
CLT_KINDS = ["llama+clt", "gemma2+clt", "gpt_neox-parallel+clt"]


@pytest.fixture(params=KINDS + CLT_KINDS)
def rep(request) -> Replacement:
    return replacement_for(request.param)


@pytest.fixture
def prompts() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randint(3, VOCAB - 3, (9,), generator=g), torch.randint(3, VOCAB - 3, (6,), generator=g)]
