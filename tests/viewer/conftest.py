"""A real (tiny) runs folder for the viewer tests: a 3-layer set with feature stores and a circuit graph, a partial
set (layers 3 and 4 of a 5-layer model, like `--layers 8,20` of a large one) and a sweep."""

from __future__ import annotations

import shutil

import pytest
from tiny_llama import save_tiny_llama

from transcoders.features import FeaturesConfig, collect
from transcoders.models import load_model
from transcoders.training import TrainConfig, train
from transcoders.viewer import make_server, serve_in_thread


@pytest.fixture(scope="session")
def runs_root(tiny_model_dir, tiny_corpus, tiny_texts, tmp_path_factory):
    root = tmp_path_factory.mktemp("viewer-runs")
    deep = save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-5"), tiny_texts, n_layers=5)
    train(TrainConfig(model=deep, corpus=tiny_corpus, layers="3,4", out=str(root / "partial"), width=48, k=4,
                      tokens=2048, batch_size=256, ctx_len=32, chunk_tokens=2048, forward_batch=16), progress=False)
    cfg = TrainConfig(model=tiny_model_dir, corpus=tiny_corpus, layers="all", out=str(root / "set"), width=48, k=4,
                      tokens=4096, batch_size=256, ctx_len=32, chunk_tokens=4096, forward_batch=16)
    runs = train(cfg, progress=False)
    lm = load_model(tiny_model_dir)
    collect(runs, FeaturesConfig(tokens=32 * 16, corpus=tiny_corpus, top=4, samples=6), lm=lm, progress=False)
    # a wide, very sparse run read on few tokens: most of its features never fire there (dead-feature pages)
    wide = train(TrainConfig(model=tiny_model_dir, corpus=tiny_corpus, layers="1", out=str(root / "wide"), width=256,
                             k=1, tokens=2048, batch_size=256, ctx_len=32, chunk_tokens=2048, forward_batch=16,
                             dead_tokens=10**9), progress=False)
    collect(wide, FeaturesConfig(tokens=32 * 2, corpus=tiny_corpus, top=2, samples=2), lm=lm, progress=False)
    from transcoders.cli import main

    assert main(["circuit", "--set", str(root / "set"), "--prompt", "the king sees a ship", "--mode", "graph",
                 "--node-threshold", "1", "--edge-threshold", "1", "--quiet",
                 "--out", str(root / "set" / "graphs" / "king.json")]) == 0
    from transcoders.sweeps import SweepGrid, run_sweep

    base = TrainConfig(model=tiny_model_dir, corpus=tiny_corpus, layers="1", out=str(root / "sweep"), width=32,
                       tokens=2048, batch_size=256, ctx_len=32, chunk_tokens=2048, forward_batch=16)
    run_sweep(base, SweepGrid(kinds="transcoder", ks="2,4", eval_tokens=32 * 4), progress=False)
    return root


@pytest.fixture(scope="session")
def bare_set(runs_root):
    """Makes ``runs_root/NAME``: a copy of the partial set's runs without their feature stores, with an unpruned
    graph (``NAME/graphs/ship.json``) whose feature nodes sit in both layers."""
    from transcoders.cli import main

    def make(name: str):
        dst = runs_root / name
        for layer in ("layer_03", "layer_04"):
            shutil.copytree(runs_root / "partial" / layer, dst / layer, ignore=shutil.ignore_patterns("features.sqlite*"))
        for f in (runs_root / "partial").glob("*.json"):
            shutil.copy(f, dst / f.name)
        assert main(["circuit", "--set", str(dst), "--prompt", "a ship and a king", "--mode", "graph", "--quiet",
                     "--node-threshold", "1", "--edge-threshold", "1", "--out", str(dst / "graphs" / "ship.json")]) == 0
        return dst

    return make


@pytest.fixture(scope="session")
def server(runs_root):
    srv = make_server(runs_root, port=0)
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


