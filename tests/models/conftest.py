"""Fixtures for the models tests: every supported family as a tiny random model (see tiny_models.py)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in these tests may reach the hub

import pytest
import torch
from tiny_models import KINDS, VOCAB, make_tiny_lm

from transcoders.models import LoadedModel


@pytest.fixture(params=KINDS)
def lm(request) -> LoadedModel:
    return make_tiny_lm(request.param)


@pytest.fixture
def input_ids() -> torch.Tensor:
    # [batch 2, seq 9], avoiding the special/image tokens at the top of the vocabulary
    return torch.randint(3, VOCAB - 3, (2, 9), generator=torch.Generator().manual_seed(1))
