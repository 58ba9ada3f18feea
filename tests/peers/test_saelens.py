"""Our SAELens exports in SAELens's own hands (the released sae-lens, in its own environment): every architecture
loads without a warning as the class it should, keeps its metadata, and computes our codes and outputs."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_dictionaries import D, make

from transcoders.dictionary import runs as R
from transcoders.dictionary import save_dictionary
from transcoders.dictionary.interop import export_runs
from transcoders.training import TrainConfig, train

CASES = [  # (kind, activation, SAELens class)
    ("sae", "relu", "StandardSAE"), ("sae", "topk", "TopKSAE"), ("sae", "jumprelu", "JumpReLUSAE"),
    ("sae", "batchtopk", "JumpReLUSAE"), ("transcoder", "relu", "Transcoder"),
    ("transcoder", "jumprelu", "JumpReLUTranscoder"), ("transcoder", "batchtopk", "JumpReLUTranscoder"),
    ("skip-transcoder", "relu", "SkipTranscoder"), ("skip-transcoder", "jumprelu", "JumpReLUSkipTranscoder"),
]  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir, tiny_corpus):
    """Every case as a run with training settings beside it, exported for SAELens; and SAELens's reading of them."""
    root = tmp_path_factory.mktemp("saelens")
    settings = {"ctx_len": 64, "corpus": "wikitext:wikitext-2-raw-v1"}
    folders, dicts = [], []
    for i, (kind, activation, _) in enumerate(CASES):
        d = make(kind, activation, seed=i)
        run = root / f"run{i}"
        save_dictionary(d, run)
        (run / R.TRAIN_CONFIG_FILE).write_text(json.dumps(settings))
        (out,) = export_runs([run], "saelens", root / f"sl{i}")
        folders.append(str(out))
        dicts.append(d)
    # and one really trained on the tiny model, with its settings as training wrote them
    (run,) = train(TrainConfig(model=tiny_model_dir, corpus=tiny_corpus, layers="1", out=str(root / "trained"),
                               kind="transcoder", activation="jumprelu", width=48, tokens=2048, batch_size=256,
                               ctx_len=32, chunk_tokens=2048, forward_batch=16), progress=False)
    (out,) = export_runs([run], "saelens", root / "sl-trained")
    folders.append(str(out))
    x = torch.randn(64, D)
    save_file({"x": x}, str(root / "x.safetensors"))
    return root, dicts, x


def test_saelens_loads_every_architecture_faithfully(peers, exported):
    root, dicts, x = exported
    folders = [str(root / f"sl{i}") for i in range(len(CASES))]
    reply = peers.run("saelens", "saelens_check.py", {"folders": folders, "inputs": str(root / "x.safetensors"),
                                                       "outputs": str(root / "out.safetensors")})
    got = load_file(str(root / "out.safetensors"))
    for i, ((kind, activation, cls), d, case) in enumerate(zip(CASES, dicts, reply["cases"])):
        where = f"{kind}/{activation}"
        assert case["class"] == cls, where
        assert case["warnings"] == [], where
        meta = case["metadata"]
        assert meta["model_name"] == "tiny-model" and meta["context_size"] == 64, where
        assert meta["dataset_path"] == "wikitext:wikitext-2-raw-v1" and meta["prepend_bos"] is True, where
        site = "hook_mlp_out" if kind == "sae" else "ln2.hook_normalized"
        assert meta["hook_name"] == f"blocks.3.{site}", where
        if kind != "sae":
            assert meta["hook_name_out"] == "blocks.3.hook_mlp_out", where
        with torch.no_grad():
            torch.testing.assert_close(got[f"{i}.codes"], d.encode(x), rtol=1e-5, atol=1e-6, msg=where)
            torch.testing.assert_close(got[f"{i}.out"], d(x), rtol=1e-5, atol=1e-5, msg=where)


def test_a_trained_run_keeps_its_training_settings_in_saelens(peers, exported, tiny_corpus):
    root, _, _ = exported
    x = torch.randn(8, 32)
    save_file({"x": x}, str(root / "x32.safetensors"))
    reply = peers.run("saelens", "saelens_check.py", {"folders": [str(root / "sl-trained")],
                                                       "inputs": str(root / "x32.safetensors"),
                                                       "outputs": str(root / "out32.safetensors")})
    (case,) = reply["cases"]
    assert case["class"] == "JumpReLUTranscoder" and case["warnings"] == []
    assert case["metadata"]["context_size"] == 32 and case["metadata"]["dataset_path"] == tiny_corpus
    assert case["metadata"]["hook_name"] == "blocks.1.ln2.hook_normalized"
