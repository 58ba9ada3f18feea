"""The run-folder layout: what is a run, a set (complete or partial) or a sweep, what is finished, opening runs."""

import json

import pytest
import torch

from transcoders.dictionary import Dictionary, DictionaryConfig, save_dictionary
from transcoders.dictionary import runs as R
from transcoders.errors import CheckpointError

SAVED: dict = {}


def save(folder, layer, model="m"):
    cfg = DictionaryConfig(d_in=4, d_out=4, width=8, k=2, model=model, layer=layer, hook_in=f"blocks.{layer}.mlp.in",
                           hook_out=f"blocks.{layer}.mlp.out")
    SAVED[folder] = d = Dictionary(cfg)
    save_dictionary(d, folder)
    return folder


def test_runs_sets_and_sweeps(tmp_path):
    run = save(tmp_path / "one", 6)
    partial = tmp_path / "partial"  # like `--layers 8,20`: no layer_00
    save(partial / "layer_20", 20)
    save(partial / "layer_08", 8)
    (partial / "layer_09").mkdir()  # a layer folder without a dictionary is not a run
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / R.SWEEP_FILE).write_text("{}")
    assert R.is_run(run) and not R.is_set(run)
    assert R.is_set(partial) and not R.is_run(partial)
    assert R.layer_runs(partial) == [partial / "layer_08", partial / "layer_20"]  # by layer, not by name
    assert R.is_sweep(tmp_path / "sweep") and not R.is_set(tmp_path / "sweep")
    assert R.run_dirs([run, partial]) == [run, partial / "layer_08", partial / "layer_20"]
    assert R.layer_dir(partial, 8) == partial / "layer_08" and R.layer_of_dir(partial / "layer_08") == 8
    assert R.run_for_layer(partial, 20) == partial / "layer_20" and R.run_for_layer(partial, 3) is None
    assert R.run_for_layer(run, 6) == run and R.run_for_layer(run, 5) is None
    assert [p.name for p in R.walk(tmp_path)] == [tmp_path.name, "one", "partial", "layer_08", "layer_09",
                                                  "layer_20", "sweep"]


def test_finished_runs_wait_for_the_checkpoint_to_go(tmp_path):
    out = tmp_path / "set"
    save(out / "layer_01", 1)
    assert R.finished_runs(out) == [out / "layer_01"]
    (out / R.CHECKPOINT_FILE).write_bytes(b"")  # training still under way (or killed)
    assert R.in_training(out) and R.finished_runs(out) == []
    assert R.finished_runs(tmp_path / "nothing") == []


def test_train_settings_come_from_the_run_or_its_set(tmp_path):
    out = tmp_path / "set"
    save(out / "layer_01", 1)
    assert R.train_ctx_len(out / "layer_01") is None
    (out / R.TRAIN_CONFIG_FILE).write_text(json.dumps({"ctx_len": 64}))
    assert R.train_ctx_len(out / "layer_01") == 64


def test_open_runs_checks_one_model_and_one_run_per_layer(tmp_path):
    a, b = save(tmp_path / "a", 1), save(tmp_path / "b", 1)
    opened = R.open_runs([a, b])
    assert opened.layers == [1, 1] and opened.model == "m"
    assert opened.dirs == [a, b]
    for run, d in zip(opened.dirs, opened.load(expect_model="m")):
        assert torch.equal(d.W_enc, SAVED[run].W_enc) and torch.equal(d.W_dec, SAVED[run].W_dec)
    with pytest.raises(CheckpointError, match="trained on model"):
        opened.load(expect_model="another")
    with pytest.raises(CheckpointError, match="same layer"):
        R.open_runs([a, b], one_per_layer=True)
    with pytest.raises(CheckpointError, match="different models"):
        R.open_runs([a, save(tmp_path / "c", 2, model="other")], what="evaluate")
    with pytest.raises(CheckpointError, match="does not exist"):
        R.open_runs([tmp_path / "missing"])
