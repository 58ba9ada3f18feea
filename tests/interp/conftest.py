"""A tiny trained run with a filled feature store, and the tiny random model standing in as explainer and scorer."""

from __future__ import annotations

import pytest

from transcoders.features import FeaturesConfig, collect
from transcoders.interp import LocalLLM
from transcoders.training import TrainConfig, train

CTX = 32


@pytest.fixture(scope="session")
def store_run(tiny_model_dir, tiny_corpus, tiny_lm, tmp_path_factory):
    """A 1-layer run (layer 1, width 64, TopK k=4) whose store read 64 held-out contexts."""
    out = tmp_path_factory.mktemp("interp") / "run"
    cfg = TrainConfig(model=tiny_model_dir, corpus=tiny_corpus, layers="1", out=str(out), width=64, k=4,
                      tokens=4096, batch_size=256, ctx_len=CTX, chunk_tokens=4096, forward_batch=16)
    (run,) = train(cfg, progress=False)
    collect([run], FeaturesConfig(tokens=64 * CTX, corpus=tiny_corpus, batch=16, top=8, samples=12, commit_every=0),
            lm=tiny_lm, progress=False)
    return run


@pytest.fixture(scope="session")
def tiny_llm(tiny_lm):
    return LocalLLM(tiny_lm, name="local:tiny", batch=4)
