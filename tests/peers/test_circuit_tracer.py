"""Our sets and model folders in circuit-tracer's own hands (the released circuit-tracer 0.5.0 with its pinned
transformers 4.57.3 and nnsight, in their own environment): the folders load as written, the transcoders compute our
codes, and its attribution graph on the same set and prompt is ours: the same nodes, edges within 1e-4, the same
pruning and the same replacement and completeness scores. Its graph JSON opens in our viewer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_llama import save_tiny_llama

from transcoders.circuits import Replacement, TranscoderSet
from transcoders.circuits.graph import attribution_graph, prune, scores
from transcoders.dictionary import runs as R
from transcoders.dictionary.interop import export_runs
from transcoders.models import load_model
from transcoders.models.named import default_model_dir, for_older_transformers
from transcoders.training import TrainConfig, train
from transcoders.viewer import data as viewer

TINY = dict(width=48, tokens=4096, batch_size=256, ctx_len=32, chunk_tokens=4096, forward_batch=16)


def compare_graphs(ours, t: dict, theirs_scores: tuple[float, float]) -> None:
    """Our attribution graph against circuit-tracer's tensors (``t``), node by node."""
    theirs_feats = [tuple(x) for x in t["active_features"][t["selected_features"]].tolist()]
    ours_feats = [tuple(x) for x in ours.features.tolist()]
    assert theirs_feats and sorted(theirs_feats) == sorted(ours_feats)  # the same feature nodes
    assert t["logit_ids"].tolist() == [o.tokens[0] for o in ours.outputs]  # the same output nodes, in order
    index = {f: i for i, f in enumerate(ours_feats)}
    perm = [index[f] for f in theirs_feats]
    order = torch.tensor(perm + list(range(len(perm), ours.adjacency.shape[0])))  # errors, tokens, logits: same order
    A, B = ours.adjacency[order][:, order], t["adjacency"]
    assert A.shape == B.shape
    assert float((A - B).abs().max()) <= 1e-4 * float(B.abs().max())  # every edge
    torch.testing.assert_close(ours.activations[torch.tensor(perm)], t["activations"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.output_weights, t["logit_probabilities"], rtol=1e-4, atol=1e-6)
    p = prune(ours)
    assert torch.equal(p.node_mask[order], t["node_mask"]) and torch.equal(p.edge_mask[order][:, order], t["edge_mask"])
    for a, b in zip(scores(ours), theirs_scores):
        assert a == pytest.approx(b, rel=1e-4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_texts, tiny_corpus):
    """A tiny model folder (4.x-readable, as our model folders are) and sets of each activation circuit-tracer has."""
    root = tmp_path_factory.mktemp("ct")
    model = save_tiny_llama(root / "model", tiny_texts)
    for_older_transformers(root / "model")
    sets = {}
    for name, kw in {"jumprelu": dict(activation="jumprelu"), "batchtopk": dict(activation="batchtopk", k=4),
                     "relu-skip": dict(activation="relu", kind="skip-transcoder")}.items():
        train(TrainConfig(model=model, corpus=tiny_corpus, layers="all", out=str(root / name), **kw, **TINY),
              progress=False)
        (sets[name],) = export_runs(R.run_dirs([root / name]), "circuit-tracer", root / f"ct-{name}")
    return root, model, sets


def test_exported_sets_load_in_circuit_tracer_and_compute_our_codes(peers, tiny):
    root, _, sets = tiny
    x = torch.randn(16, 32)
    save_file({"x": x}, str(root / "x.safetensors"))
    for name, folder in sets.items():
        reply = peers.run("circuit-tracer", "circuit_tracer_check.py", {"load": {
            "set": str(folder), "inputs": str(root / "x.safetensors"), "out": str(root / "codes.safetensors")}})
        got, load = load_file(str(root / "codes.safetensors")), reply["load"]
        assert load["warnings"] == [] and load["class"] == "TranscoderSet" and load["scan"] == folder.name
        assert (load["input_hook"], load["output_hook"]) == ("mlp.hook_in", "mlp.hook_out")
        want = "relu" if name.startswith("relu") else "JumpReLU"
        assert set(load["activations"].values()) == {want}, name
        tset = TranscoderSet.load(root / name)
        for layer in tset.layers:
            with torch.no_grad():
                torch.testing.assert_close(got[f"{layer}.codes"], tset[layer].encode(x), rtol=1e-5, atol=1e-6)
                torch.testing.assert_close(got[f"{layer}.out"], tset[layer](x), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def clts(tiny, tiny_corpus):
    """A cross-layer transcoder of each activation, trained on the tiny model, and its circuit-tracer export."""
    root, model, _ = tiny
    out = {}
    for activation in ("batchtopk", "relu"):
        runs = train(TrainConfig(model=model, corpus=tiny_corpus, layers="all", kind="clt", activation=activation, k=4,
                                 l1=1e-3 if activation == "relu" else 0, out=str(root / f"clt-{activation}"), **TINY),
                     progress=False)
        (folder,) = export_runs(runs, "circuit-tracer", root / f"ct-clt-{activation}")
        out[activation] = (runs, folder)
    return out


@pytest.mark.parametrize("activation", ["batchtopk", "relu"])
def test_an_exported_clt_loads_in_circuit_tracer_computes_ours_and_imports_back(peers, tiny, clts, activation):
    """Our cross-layer transcoder in circuit-tracer's CLT layout: it loads as a CrossLayerTranscoder with the
    activation we trained (BatchTopK as its exact JumpReLU), and its codes and every layer's reconstruction, from
    all the layers' inputs at once, are ours; imported back, it is the same CLT."""
    from transcoders.dictionary.clt import reconstruct
    from transcoders.dictionary.interop import import_folder

    root, model, _ = tiny
    runs, folder = clts[activation]
    x = torch.randn(len(runs), 12, 32)
    save_file({"x": x}, str(root / "clt-x.safetensors"))
    reply = peers.run("circuit-tracer", "circuit_tracer_check.py", {"load_clt": {
        "set": str(folder.resolve()), "inputs": str(root / "clt-x.safetensors"), "out": str(root / "clt-out.safetensors")}})
    got, load = load_file(str(root / "clt-out.safetensors")), reply["load_clt"]
    assert load["warnings"] == [] and load["class"] == "CrossLayerTranscoder" and load["model_kind"] == "cross_layer_transcoder"
    assert load["n_layers"] == len(runs) and load["activation"] == ("JumpReLU" if activation == "batchtopk" else "relu")
    assert (load["input_hook"], load["output_hook"]) == ("mlp.hook_in", "mlp.hook_out")
    from transcoders.dictionary import load_dictionary

    dicts = [load_dictionary(r) for r in runs]
    with torch.no_grad():
        ours = reconstruct(dicts, {i: x[i] for i in range(len(runs))})
        for i, d in enumerate(dicts):
            torch.testing.assert_close(got["codes"][i], d.encode(x[i]), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(got["out"][i], ours[i], rtol=1e-5, atol=1e-5)
        back = [load_dictionary(r) for r in import_folder(folder, root / f"back-{activation}")]
        assert [d.cfg.kind for d in back] == ["clt"] * len(runs)
        again = reconstruct(back, {i: x[i] for i in range(len(runs))})
        for i, d in enumerate(back):
            torch.testing.assert_close(d.encode(x[i]), dicts[i].encode(x[i]), rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(again[i], ours[i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["jumprelu", "relu-skip"])
def test_circuit_tracers_attribution_graph_is_ours(peers, tiny, name):
    root, model, sets = tiny
    ids = [1, 20, 30, 40, 50, 60, 70]  # starting with a special token, as both tools want
    reply = peers.run("circuit-tracer", "circuit_tracer_check.py", {"attribute": {
        "model": model, "set": str(sets[name]), "ids": ids, "out": str(root / "graph.safetensors"),
        "json_dir": str(root / name / "graphs"), "slug": "theirs", "node_threshold": 1.0, "edge_threshold": 1.0}})
    assert reply["attribute"]["warnings"] == []
    rep = Replacement(load_model(model), TranscoderSet.load(root / name))
    ours = attribution_graph(rep.trace(torch.tensor(ids))[0])
    compare_graphs(ours, load_file(str(root / "graph.safetensors")),
                   (reply["attribute"]["replacement"], reply["attribute"]["completeness"]))
    # with BOS kept as nodes (our old default) the graphs differ: the switch is what makes them agree
    kept = attribution_graph(rep.trace(torch.tensor(ids), keep_bos=True)[0])
    assert kept.n_features > ours.n_features


def test_circuit_tracers_attribution_graph_of_our_clt_is_ours(peers, tiny, clts):
    """A cross-layer transcoder traced by both tools: circuit-tracer's graph of our exported CLT (every layer's
    features writing into every later MLP) has our nodes, edges, pruning and scores."""
    root, model, _ = tiny
    runs, folder = clts["batchtopk"]
    ids = [1, 20, 30, 40, 50, 60, 70]
    reply = peers.run("circuit-tracer", "circuit_tracer_check.py", {"attribute": {
        "model": model, "set": str(folder.resolve()), "ids": ids, "out": str(root / "clt-graph.safetensors")}})
    assert reply["attribute"]["warnings"] == []
    rep = Replacement(load_model(model), TranscoderSet.load(root / "clt-batchtopk"))
    assert rep.tset.is_clt
    ours = attribution_graph(rep.trace(torch.tensor(ids))[0])
    compare_graphs(ours, load_file(str(root / "clt-graph.safetensors")),
                   (reply["attribute"]["replacement"], reply["attribute"]["completeness"]))


def test_our_viewer_opens_circuit_tracers_graph_json(peers, tiny):
    root, _, _ = tiny
    doc = json.loads((root / "jumprelu" / "graphs" / "theirs.json").read_text())
    assert any(n["feature_type"] == "cross layer transcoder" for n in doc["nodes"])
    listed = viewer.list_graphs(root)
    assert {"jumprelu/graphs/theirs.json"} <= {g["path"] for g in listed}
    assert not [g for g in listed if g["name"] == "graph-metadata"]  # circuit-tracer's index of a graph folder
    g = viewer.graph(root, "jumprelu/graphs/theirs.json")
    feats = [n for n in g["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert feats and all(n["run"] == f"jumprelu/layer_{int(n['layer']):02d}" for n in feats)
    assert all(n["node_id"] == f"{n['layer']}_{n['feature_index']}_{n['ctx_idx']}" for n in feats)


@pytest.mark.slow
def test_the_default_model_folder_reads_the_same_in_circuit_tracers_transformers(peers, tmp_path):
    """transformers 4.57.3 (circuit-tracer's pin) reads our converted default model as we do: same tokens, same
    logits (it once fell back to rope_theta 10,000 and could not load the tokenizer)."""
    folder = default_model_dir()
    lm = load_model("default")
    texts = ["The capital of France is", "The war lasted from the year 1732 to the year 17"]
    ids = [[lm.tokenizer.bos_token_id] + lm.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    reply = peers.run("circuit-tracer", "circuit_tracer_check.py", {"model": {
        "folder": str(folder), "texts": texts, "ids": ids, "out": str(tmp_path / "logits.safetensors")}})
    m = reply["model"]
    assert m["warnings"] == [] and m["rope_theta"] == lm.model.config.rope_parameters["rope_theta"]
    assert m["ids"] == [i[1:] for i in ids] and m["bos"] == lm.tokenizer.bos_token_id
    assert m["special"] == sorted(lm.tokenizer.all_special_ids)
    got = load_file(str(tmp_path / "logits.safetensors"))
    for i, seq in enumerate(ids):
        with torch.no_grad():
            want = lm.model(input_ids=torch.tensor([seq])).logits[0]
        assert float((got[f"{i}.logits"] - want).abs().max()) <= 1e-4 * float(want.abs().max())


@pytest.mark.slow
def test_a_default_model_set_gives_circuit_tracers_graph(peers, tmp_path):
    """A small set on all 30 layers of the real default model, traced by both tools on the same prompt."""
    train(TrainConfig(model="default", corpus="default", layers="all", out=str(tmp_path / "set"), activation="batchtopk",
                      width=64, k=4, tokens=4096, batch_size=512, ctx_len=64, chunk_tokens=4096, forward_batch=16),
          progress=False)
    (ct,) = export_runs(R.run_dirs([tmp_path / "set"]), "circuit-tracer", tmp_path / "ct")
    lm = load_model("default")
    rep = Replacement(lm, TranscoderSet.load(tmp_path / "set"))
    ids = rep.tokenize("The capital of France is")[0]
    reply = peers.run("circuit-tracer", "circuit_tracer_check.py", {"attribute": {
        "model": str(default_model_dir()), "set": str(ct), "ids": ids.tolist(), "out": str(tmp_path / "g.safetensors")}})
    assert reply["attribute"]["warnings"] == [] and reply["attribute"]["n_layers"] == 30
    ours = attribution_graph(rep.trace(ids)[0])
    compare_graphs(ours, load_file(str(tmp_path / "g.safetensors")),
                   (reply["attribute"]["replacement"], reply["attribute"]["completeness"]))
