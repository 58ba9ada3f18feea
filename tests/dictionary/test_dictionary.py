import json

import pytest
import torch

from transcoders.dictionary import Dictionary, DictionaryConfig, load_dictionary, save_dictionary
from transcoders.errors import CheckpointError


def make(kind="transcoder", activation="topk", k=4, width=64, d=16, seed=0):
    cfg = DictionaryConfig(d_in=d, d_out=d, width=width, kind=kind, activation=activation, k=k, model="tiny", layer=1)
    dic = Dictionary(cfg)
    dic.reset_parameters(torch.Generator().manual_seed(seed))
    with torch.no_grad():  # non-trivial biases and skip weights, so save/load must carry them
        dic.b_enc.normal_(0, 0.1)
        dic.b_dec.normal_(0, 0.1)
        if dic.W_skip is not None:
            dic.W_skip.normal_(0, 0.1)
    return dic


@pytest.mark.parametrize("kind,activation", [("transcoder", "topk"), ("transcoder", "relu"), ("skip-transcoder", "topk"),
                                             ("sae", "relu")])
def test_save_load_reproduces_outputs_exactly(tmp_path, kind, activation):
    dic = make(kind, activation)
    x = torch.randn(50, 16)
    save_dictionary(dic, tmp_path / "run")
    back = load_dictionary(tmp_path / "run")
    assert back.cfg == dic.cfg
    assert torch.equal(back(x), dic(x))
    assert torch.equal(back.encode(x), dic.encode(x))


def test_topk_codes_have_at_most_k_active_and_sparse_decode_matches_dense():
    dic = make(k=5)
    x = torch.randn(40, 16)
    z = dic.encode(x)
    assert ((z > 0).sum(-1) <= 5).all()
    assert ((z > 0).sum(-1) >= 1).any()
    torch.testing.assert_close(dic(x), dic.decode(z, x), rtol=1e-5, atol=1e-5)
    # the k kept are the k largest pre-activations
    pre = dic.pre_acts(x)
    kth = pre.topk(5, dim=-1).values[:, -1:]
    assert ((z > 0) <= (pre >= kth)).all()


def test_relu_codes_are_relu_of_preacts():
    dic = make(activation="relu")
    x = torch.randn(10, 16)
    torch.testing.assert_close(dic.encode(x), torch.relu(dic.pre_acts(x)))


def test_fold_scales_keeps_codes_and_rescales_output():
    dic = make("skip-transcoder", "topk")
    x = torch.randn(30, 16)
    s_in, s_out = 0.25, 4.0
    z_norm = dic.encode(x * s_in)
    y_norm = dic(x * s_in)
    dic.fold_scales(s_in, s_out)
    torch.testing.assert_close(dic.encode(x), z_norm)
    torch.testing.assert_close(dic(x), y_norm / s_out)


def test_corrupt_weights_file_is_a_one_line_error(tmp_path):
    save_dictionary(make(), tmp_path / "run")
    (tmp_path / "run" / "weights.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_dictionary(tmp_path / "run")


def test_config_weights_mismatch_is_detected(tmp_path):
    save_dictionary(make(width=64), tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    cfg["width"] = 128
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match"):
        load_dictionary(tmp_path / "run")


def test_wrong_model_layer_or_width_is_refused(tmp_path):
    save_dictionary(make(), tmp_path / "run")
    with pytest.raises(CheckpointError, match="model"):
        load_dictionary(tmp_path / "run", expect_model="other")
    with pytest.raises(CheckpointError, match="layer"):
        load_dictionary(tmp_path / "run", expect_layer=3)
    with pytest.raises(CheckpointError, match="width"):
        load_dictionary(tmp_path / "run", expect_width=8)


def test_missing_or_unfinished_run_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_dictionary(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_dictionary(tmp_path / "half")
    (tmp_path / "half" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_dictionary(tmp_path / "half")


def test_bad_config_values_are_rejected():
    with pytest.raises(ValueError, match="k"):
        DictionaryConfig(d_in=4, d_out=4, width=8, activation="topk", k=9)
    with pytest.raises(ValueError, match="kind"):
        DictionaryConfig(d_in=4, d_out=4, width=8, kind="nope")
